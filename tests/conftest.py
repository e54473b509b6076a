import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The tests run small graphs; one intra-op thread avoids thread hand-off overhead that
# dominates them on a 2-core machine (and keeps runs stable when the machine is shared).
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "upstream_parity"
CASE = FIXTURES / "ti512_two_objects"
TINY = ["--config", "test_tiny"]
ALL_TARGETS = ("executorch", "coreml", "onnx", "executorch-coreml")


# ---- CLI helpers shared by test_cli, test_bad_input, test_output_safety and test_faults ----

def write_clip(folder, frames=5, size=(48, 64), square=(10, 30, 20, 40), drift=1, ext="jpg"):
    """A bright square (rows square[0:2], columns square[2:4], moving `drift` pixels down a
    frame) on dark noise: a clip the tiny config tracks in a fraction of a second."""
    folder = Path(folder)
    folder.mkdir()
    rng = np.random.default_rng(0)
    top, bottom, left, right = square
    for i in range(frames):
        img = (rng.random((*size, 3)) * 60).astype(np.uint8)
        img[top + drift * i: bottom + drift * i, left:right] = 220
        Image.fromarray(img).save(folder / f"{i:05d}.{ext}")
    return folder


def write_prompts(path, prompts):
    path = Path(path)
    path.write_text(json.dumps({"prompts": prompts}))
    return path


def track_args(frames, prompts, out, *extra):
    """argv of `etam-mobile -q track` on the tiny config."""
    return ["-q", "track", *TINY, "--frames", str(frames), "--prompts", str(prompts), "--out", str(out), *extra]


def run_cli(capsys, *args):
    """`etam-mobile -q ARGS` in process -> (exit code, stderr)."""
    from etam_mobile.cli import main

    code = main(["-q", *args])
    return code, capsys.readouterr().err


def track_cli(capsys, frames, prompts, out, *extra):
    return run_cli(capsys, *track_args(frames, prompts, out, *extra)[1:])


def without_synthetic_warning(err):
    """stderr less the synthetic-weights warning every tiny-config run prints."""
    return "\n".join(ln for ln in err.splitlines() if "SYNTHETIC" not in ln)


@pytest.fixture(scope="session")
def parity_case():
    case = json.loads((CASE / "case.json").read_text())
    golden = np.load(CASE / "golden.npz")
    return case, {k: golden[k] for k in golden.files}


@pytest.fixture(scope="session")
def ti512_model():
    """efficienttam_ti_512x512 on the fixture's synthetic weights (seed 5)."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    model, _ = load_model(get_config("efficienttam_ti_512x512"), None, seed=5, quiet=True)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    model, _ = load_model(tiny_test_config(), None, seed=0, quiet=True)
    return model


@pytest.fixture(scope="session")
def ti512_export(ti512_model):
    """ExecuTorch + ONNX fp32 export of ti512_model, made once per session and shared by the
    exported tracking and image-mode parity tests. Without slot buckets (the full graph runs
    every frame, no bucket graphs to lower): buckets vs the full graph's values are checked on the tiny
    export (test_slot_buckets.py::test_runtime_runs_the_smallest_bucket_with_the_full_graphs_values,
    both backends), so the parity here is of the stages themselves."""
    import shutil
    import tempfile

    from etam_export import export_model

    root = tempfile.mkdtemp(prefix="etam-ti512-")
    folder = f"{root}/export"
    # verify=False: the parity tests that use it check the exported graphs end to end.
    export_model(ti512_model, folder, targets=("executorch", "onnx"), precision="fp32",
                 weights_info={"synthetic": True, "seed": 5}, quiet=True, verify=False, slot_buckets=False)
    yield folder
    shutil.rmtree(root, ignore_errors=True)


# ---- one stage exported on its own (Core ML plan and compression tests) ---------------------

def exported_stage(model, stage: str, seed: int = 0):
    """(spec, example inputs, torch.export program, eager outputs) of one stage of `model` at the
    default capacities, the example inputs made as the exporter makes them (seed `seed`): what a
    test that converts or emulates a single stage starts from."""
    from etam_export.artifact import torch_export
    from etam_export.common import example_inputs, run_eager
    from etam_mobile.contracts import Capacities, stage_specs

    caps = Capacities()
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    inputs = example_inputs(model.cfg, caps, stages, seed=seed)[stage]
    ep = torch_export(stages[stage], inputs, stage)
    ref = run_eager(model.stages()[stage].eval(), inputs)
    return stage_specs(model.cfg, caps)[stage], inputs, ep, ref


# ---- the tiny config's one export, shared by every test that reads exported graphs ----------

@functools.lru_cache(maxsize=None)
def tiny():
    """(model, weights info) of the tiny config, synthetic weights seed 0."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    return load_model(tiny_test_config(), None, seed=0, quiet=True)


@functools.lru_cache(maxsize=None)
def exported_tiny() -> Path:
    """The tiny model exported once per test session to every target, slot-bucket graphs included
    (fp16: Core ML targets fp16, the others fp32). Read only: a test that changes an export
    copies this folder (shutil.copytree) instead of exporting again."""
    from etam_export import export_model

    model, weights = tiny()
    root = Path(tempfile.mkdtemp(prefix="etam-export-test-"))
    atexit.register(shutil.rmtree, root, True)
    export_model(model, root / "export", targets=ALL_TARGETS, precision="fp16", weights_info=weights, quiet=True)
    return root / "export"


@pytest.fixture(scope="session")
def tiny_export() -> Path:
    """exported_tiny() as a fixture."""
    return exported_tiny()


def export_with_stage(dst, model, stage) -> Path:
    """A copy of the shared tiny export at `dst` whose ExecuTorch `stage` comes from `model`: a
    test of other weights in one stage (e.g. a shifted object-score bias in the mask decoder)
    pays for one stage's lowering, not a whole export. The other stages' weights must be the
    shared export's; the manifest's checksum of the new artifact is updated."""
    from etam_export import executorch as etx
    from etam_export.artifact import torch_export
    from etam_export.common import example_inputs
    from etam_mobile.contracts import Capacities
    from etam_mobile.manifest import read_manifest, write_manifest
    from etam_mobile.runtime.exported import artifact_sha256

    base = tiny()[0]
    assert model.cfg == base.cfg and stage != "memory_attention"  # (its slot-bucket graphs would stay the base's)
    stage_module = model.stages(for_export=True)[stage].eval()
    owned = {id(p) for p in stage_module.parameters()}
    base_params = dict(base.named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, base_params[n]) and id(p) not in owned]
    assert not changed, f"weights outside {stage} differ from the shared export's: {changed[:5]}"
    dst = Path(dst)
    shutil.copytree(exported_tiny(), dst)
    doc = read_manifest(dst)
    rel = doc["stages"][stage]["artifacts"]["executorch"]
    inputs = example_inputs(model.cfg, Capacities(), model.stages(for_export=True))[stage]
    etx.write(torch_export(stage_module, inputs, stage), dst / rel, stage, "executorch", "fp32")
    doc["checksums"][rel] = artifact_sha256(dst / rel)
    write_manifest(dst, doc)
    return dst
