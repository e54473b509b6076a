"""ExecuTorch slot buckets as METHODS of the one memory_attention.pte (manifest format 2): one copy
of the weights instead of one per bucket file; format-1 folders (a file per bucket) still load."""
import json
import shutil

import numpy as np
import pytest

from etam_mobile.contracts import Capacities, memory_attention_spec, slot_buckets
from etam_mobile.manifest import FORMAT_VERSION, read_manifest
from etam_mobile.runtime.exported import ArtifactError, artifact_sha256, open_backend

from conftest import exported_tiny, tiny
from test_export import FP32_REL, eager_io


def _program(path):
    from etam_export import executorch as etx

    return etx.load(path)[1]


def test_executorch_buckets_are_methods_of_the_stage_program():
    folder = exported_tiny()
    doc = read_manifest(folder)
    assert doc["format_version"] == FORMAT_VERSION == 2
    ma = doc["stages"]["memory_attention"]
    rel = ma["artifacts"]["executorch"]
    names = []
    for b in ma["slot_buckets"]:
        assert b["artifacts"]["executorch"] == rel, "an ExecuTorch bucket has its own file (a copy of the weights)"
        assert b["methods"]["executorch"] == f"k{b['memory_slots']}p{b['ptr_slots']}"
        assert "executorch-coreml" not in b.get("methods", {})  # Core ML delegate buckets stay files
        rep = doc["tool"]["export_report"][f"memory_attention.k{b['memory_slots']}p{b['ptr_slots']}"]["executorch"]
        assert rep["method"] == b["methods"]["executorch"] and rep["verify"]["ok"], rep  # each method checked
        names.append(b["methods"]["executorch"])
    stray = [f for f in folder.glob("memory_attention.k*.pte") if not f.name.endswith(".coreml.pte")]
    assert not stray, "XNNPACK bucket files written next to the multi-method program"
    assert _program(folder / rel).method_names == {"forward", *names}


def test_one_multi_method_program_is_about_one_copy_of_the_weights(tmp_path):
    """The five-method program weighs about what one bucket lowered alone weighs (the weights are
    shared), not five times it."""
    from etam_export import executorch as etx
    from etam_export.artifact import torch_export
    from etam_export.buckets import bucket_inputs
    from etam_export.common import example_inputs

    model, _ = tiny()
    caps = Capacities()
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    full = example_inputs(model.cfg, caps, stages)["memory_attention"]
    ep = torch_export(stages["memory_attention"], bucket_inputs(full, 1, 1), "memory_attention")
    etx.write(ep, tmp_path / "k1p1.pte", "memory_attention", "executorch", "fp32")
    one = (tmp_path / "k1p1.pte").stat().st_size
    multi = (exported_tiny() / "memory_attention.pte").stat().st_size
    assert one < multi < 1.25 * one, (one, multi)


def test_runtime_opens_each_file_once_and_runs_every_method():
    backend = open_backend("executorch", exported_tiny(), config="test_tiny")
    assert len(backend._programs) == 4  # one Program per stage file, the buckets' methods share one
    cfg = backend.cfg
    assert backend.bucket_methods == {kp: f"k{kp[0]}p{kp[1]}" for kp in slot_buckets(cfg, Capacities())}
    model, _ = tiny()
    inputs, _ = eager_io(model)
    import torch

    stage = model.stages()["memory_attention"]
    for k, p in slot_buckets(cfg, Capacities()):
        arrays = [a.copy() for a in inputs["memory_attention"]]
        arrays[3][:] = 0.0
        arrays[3][:k] = 1.0
        arrays[5][:] = 0.0
        arrays[5][:p] = 1.0
        (got,) = backend.run("memory_attention", arrays)
        with torch.inference_mode():
            ref = stage(*[torch.from_numpy(a) for a in arrays]).numpy()
        assert np.abs(got - ref).max() < FP32_REL * np.abs(ref).max(), (k, p)
    assert all(backend.bucket_calls[kp] == 1 for kp in backend.bucket_methods)


def test_format_one_folder_with_a_bucket_file_still_loads(tmp_path):
    """An export written before buckets became methods: format 1, a file per bucket, run through
    its "forward" (one bucket re-lowered as its own file stands in for the old exporter)."""
    from etam_export import executorch as etx
    from etam_export.artifact import torch_export
    from etam_export.buckets import bucket_inputs
    from etam_export.common import example_inputs

    folder = tmp_path / "v1"
    shutil.copytree(exported_tiny(), folder)
    model, _ = tiny()
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    full = example_inputs(model.cfg, Capacities(), stages)["memory_attention"]
    ep = torch_export(stages["memory_attention"], bucket_inputs(full, 2, 2), "memory_attention")
    etx.write(ep, folder / "memory_attention.k2p2.pte", "memory_attention", "executorch", "fp32")
    doc = json.loads((folder / "manifest.json").read_text())
    doc["format_version"] = 1
    doc["stages"]["memory_attention"]["slot_buckets"] = [
        {"memory_slots": 2, "ptr_slots": 2, "artifacts": {"executorch": "memory_attention.k2p2.pte"}}]
    doc["checksums"]["memory_attention.k2p2.pte"] = artifact_sha256(folder / "memory_attention.k2p2.pte")
    (folder / "manifest.json").write_text(json.dumps(doc))
    backend = open_backend("executorch", folder, config="test_tiny")
    assert backend.bucket_methods == {(2, 2): "forward"} and len(backend._programs) == 5
    inputs, _ = eager_io(model)
    arrays = [a.copy() for a in inputs["memory_attention"]]
    arrays[3][:] = 0.0
    arrays[3][:2] = 1.0
    arrays[5][:] = 0.0
    arrays[5][:1] = 1.0
    (got,) = backend.run("memory_attention", arrays)
    import torch

    with torch.inference_mode():
        ref = model.stages()["memory_attention"](*[torch.from_numpy(a) for a in arrays]).numpy()
    assert backend.bucket_calls[(2, 2)] == 1
    assert np.abs(got - ref).max() < FP32_REL * np.abs(ref).max()
    assert memory_attention_spec(model.cfg, 2, 2).inputs[1].shape[0] == 2


@pytest.mark.parametrize("methods,match", [
    ({"executorch": "k9p9"}, "no method 'k9p9'"),
    ({"executorch": "not a name"}, "bad methods"),
    ({"onnx-missing": "k1p1"}, "bad methods"),
])
def test_bad_method_names_are_clear_errors(tmp_path, methods, match):
    folder = tmp_path / "bad"
    shutil.copytree(exported_tiny(), folder)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["stages"]["memory_attention"]["slot_buckets"][0]["methods"] = methods
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=match):
        open_backend("executorch", folder, config="test_tiny")


def test_onnx_refuses_a_method_for_its_bucket(tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(exported_tiny(), folder)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["stages"]["memory_attention"]["slot_buckets"][0]["methods"]["onnx"] = "k1p1"
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="one graph each"):
        open_backend("onnx", folder, config="test_tiny")


def test_bench_artifact_sizes_count_every_named_file_once(tmp_path):
    """The benchmark's artifact size: bucket files count (format 1), buckets that are methods of the
    stage's own program do not count twice (format 2)."""
    from etam_mobile.bench.artifacts import artifact_sizes

    for name, size in (("image_encoder.pte", 100), ("memory_attention.pte", 1000), ("ma.k1p1.pte", 1000),
                       ("mask_decoder.pte", 10), ("memory_encoder.pte", 1)):
        (tmp_path / name).write_bytes(b"x" * size)
    stages = {s: {"artifacts": {"executorch": f"{s}.pte"}} for s in
              ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")}
    ma = stages["memory_attention"]
    ma["slot_buckets"] = [{"memory_slots": 1, "ptr_slots": 1, "artifacts": {"executorch": "ma.k1p1.pte"}}]
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": stages}))
    assert artifact_sizes(tmp_path, "executorch")["memory_attention"] == 2000  # was 1000: the file ignored
    ma["slot_buckets"] = [{"memory_slots": k, "ptr_slots": k, "artifacts": {"executorch": "memory_attention.pte"},
                           "methods": {"executorch": f"k{k}p{k}"}} for k in (1, 2, 4)]
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": stages}))
    sizes = artifact_sizes(tmp_path, "executorch")
    assert sizes["memory_attention"] == 1000 and sum(sizes.values()) == 1111
