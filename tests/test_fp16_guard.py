"""fp16 overflow guard and Core ML fp16 plans (export/fp16_guard.py, export/precision.py).

The issue's test: synthetic weights in which one ViT block's MLP writes activations beyond
fp16's range into the residual stream (the next layer norm brings them back). The all-fp16
plan without the guard must miss its gates (per-stage PSNR and chained tracking, both on
the PyTorch emulation of the converted Core ML program, since Core ML cannot predict on
Linux) and the guarded plan must pass them. Tiny config here; ti_512 in the slow suite.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from etam_mobile.contracts import Capacities

from etam_export import ExportError, coreml, coreml_tracking, export_model, fp16_guard, gates
from etam_export import precision as mixed
from etam_export.variants import load_calibration

from conftest import exported_stage, tiny

CASE = "ti_plain_two_objects"
BLOCK = 1  # the block whose MLP overflows
TARGET_PEAK = 2e5  # > 65504: beyond fp16


def overflow_model(config: str = "test_tiny", seed: int = 0):
    """A model whose block BLOCK's MLP output peaks at ~TARGET_PEAK on the built-in clip."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config, tiny_test_config
    from etam_mobile.preprocess import preprocess_frame

    cfg = tiny_test_config() if config == "test_tiny" else get_config(config)
    model, weights = load_model(cfg, None, seed=seed, quiet=True)
    block = model.image_encoder.trunk.blocks[BLOCK]
    peaks = []
    hook = block.mlp.register_forward_hook(lambda m, i, o: peaks.append(float(o.abs().max())))
    frames, _ = load_calibration(None)
    with torch.inference_mode():
        for f in frames[:2]:
            model.image_encoder(preprocess_frame(f, cfg.image_size).reshape(1, 3, cfg.image_size, cfg.image_size))
    hook.remove()
    scale = TARGET_PEAK / max(peaks)
    with torch.no_grad():
        block.mlp.layers[-1].weight.mul_(scale)
        block.mlp.layers[-1].bias.mul_(scale)
    return model, weights, frames[:2]


@functools.lru_cache(maxsize=None)
def tiny_overflow():
    return overflow_model()


def _stage_plans(model, weights, frames, tmp: Path, modes, stage="image_encoder"):
    """{mode: (plan, verify result, write info)} for one stage converted under each plan."""
    spec, inputs, ep, ref = exported_stage(model, stage)
    cal = fp16_guard.calibration_inputs(model, Capacities(), frames)[stage]
    out = {}
    for mode in modes:
        plan = fp16_guard.plan_stage(stage, ep, mode, [inputs, *cal], "test")
        path = tmp / f"{stage}.{mode}.mlpackage"
        info = coreml.write(ep, path, spec, model.cfg, "fp16", weights, plan=plan)
        out[mode] = (plan, coreml.verify(path, spec, ep, inputs, ref, "fp16", plan), info)
    return out


def test_overflowing_block_fails_unguarded_and_passes_guarded(tmp_path):
    model, weights, frames = tiny_overflow()
    res = _stage_plans(model, weights, frames, tmp_path, ("fp16-unguarded", "fp16"))
    plan, ver, info = res["fp16-unguarded"]
    assert not ver["ok"] and ver["outputs"]["feats"]["psnr_db"] < gates.MIN_PSNR["fp16"], ver
    assert "emulation" in ver["fp16_emulation"] and info["fp32_ops"] == 0 and not plan.flags

    plan, ver, info = res["fp16"]
    assert ver["ok"] and ver["outputs"]["feats"]["psnr_db"] >= gates.MIN_PSNR["fp16"], ver
    kept = info["fp16_plan"]["overflow_guard"]["kept_fp32"]
    # the overflowing MLP's output projection is named, with its magnitude and why
    fc2 = [k for k in kept if k["op"].startswith("linear") and k["max_abs"] > 0.5 * TARGET_PEAK]
    assert fc2 and "overflow" in fc2[0]["reason"], kept
    # only what the guard flagged is fp32 in the saved program, and it is read back from it
    assert 0 < info["fp32_ops"] < info["mil_ops"] // 3
    assert {n for n, p in plan.precisions.items() if p == "fp32"} <= set(plan.flags)
    assert info["fp16_plan"]["saved_program"]["casts"] == info["casts"] > 0

    # chained tracking on a recorded case (image encoder emulated, other stages fp32 eager)
    cases = gates.case_dirs((CASE,))
    bad = coreml_tracking.tracking_gate(model, Capacities(), {"image_encoder": res["fp16-unguarded"][0]}, cases)
    good = coreml_tracking.tracking_gate(model, Capacities(), {"image_encoder": res["fp16"][0]}, cases)
    assert not bad["ok"] and bad["cases"][CASE]["mean_iou"] < gates.MIN_CASE_MEAN_IOU, bad
    assert good["ok"] and good["cases"][CASE]["min_iou"] >= gates.MIN_FRAME_IOU, good
    assert "emulated" in good["emulation"]


def test_export_refuses_unguarded_overflow_naming_the_plan_that_passes(tmp_path):
    model, weights, _ = tiny_overflow()
    out = tmp_path / "o"
    with pytest.raises(ExportError) as err:
        export_model(model, out, targets=("coreml",), weights_info=weights, quiet=True, slot_buckets=False,
                     stage_precision="image_encoder=fp16-unguarded")
    msg = str(err.value)
    assert "image_encoder" in msg and "PSNR >= 35" in msg and "--stage-precision image_encoder=fp16 " in msg, msg
    assert not out.exists() and not list(tmp_path.iterdir())


def test_guard_flags_overflow_underflow_and_hidden_intermediates():
    stats = {
        "big": {"op": "linear", "input": 3.0, "output": 1e5, "internal": 0.0, "internal_what": "", "rel16": 1e-4},
        "eats_big": {"op": "add", "input": 1e5, "output": 10.0, "internal": 0.0, "internal_what": "", "rel16": 1e-4},
        "tiny": {"op": "mul", "input": 1.0, "output": 1e-6, "internal": 0.0, "internal_what": "", "rel16": 0.05},
        "norm": {"op": "layer_norm", "input": 300.0, "output": 4.0, "internal": 9e4,
                 "internal_what": "squared deviation (variance)", "rel16": 1e-4},
        "fine": {"op": "conv", "input": 300.0, "output": 3e4, "internal": 0.0, "internal_what": "", "rel16": 3e-4},
    }
    flags = fp16_guard.flag(stats)
    assert set(flags) == {"big", "eats_big", "tiny", "norm"}
    assert flags["big"]["reason"].startswith("overflow: |output|") and flags["big"]["max_abs"] == 1e5
    assert flags["eats_big"]["reason"].startswith("overflow: |input|")
    assert flags["tiny"]["reason"].startswith("precision:")
    assert "variance" in flags["norm"]["reason"]

    # the recorder measures those on a real graph: a layer norm fed 300s hides 9e4 squares
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x * 300.0)

    x = torch.tensor([[1.0, -1.0] * 4])
    ep, _ = mixed.prepare(torch.export.export(M(), (x,)))
    stats = fp16_guard.measure(ep.module(), [[x.numpy()]])
    ln = next(s for s in stats.values() if "layer_norm" in s["op"])
    assert ln["input"] == pytest.approx(300.0) and ln["internal"] == pytest.approx(9e4)
    assert any("layer_norm" in f["op"] for f in fp16_guard.flag(stats).values())


def test_emulation_follows_read_back_precisions():
    """A node read back as fp32 is not rounded; fp16 nodes round inputs and outputs."""
    class M(torch.nn.Module):
        def forward(self, x):
            return (x * 1000.0) * 1000.0

    x = torch.tensor([1.0001, 70.0])
    ep, handles = mixed.prepare(torch.export.export(M(), (x,)))
    names = list(handles.values())
    all16 = mixed.emulate(ep.module(), {n: "fp16" for n in names}, (x,))[0]
    assert np.isinf(all16[1])  # 7e7 overflows fp16
    first32 = mixed.emulate(ep.module(), {names[0]: "fp32", names[1]: "fp16"}, (x,))[0]
    assert np.isinf(first32[1])  # the second op is still fp16
    all32 = mixed.emulate(ep.module(), {n: "fp32" for n in names}, (x,))[0]
    np.testing.assert_allclose(all32, (x * 1e6).numpy())


def test_bad_plan_and_calibration_arguments_are_one_line_errors(tmp_path, capsys):
    from etam_mobile.cli import main

    out = tmp_path / "o"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    Image.new("RGB", (32, 24)).save(corrupt / "00000.png")
    (corrupt / "00001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed_sizes = tmp_path / "mixed"
    mixed_sizes.mkdir()
    Image.new("RGB", (32, 24)).save(mixed_sizes / "00000.png")
    Image.new("RGB", (24, 32)).save(mixed_sizes / "00001.png")
    bad = [
        (["--targets", "executorch", "--stage-precision", "image_encoder=fp16-islands"],
         "image_encoder=fp16-islands is a Core ML fp16 plan but the coreml target is not exported"),
        (["--targets", "coreml", "--precision", "fp32", "--stage-precision", "mask_decoder=fp16-unguarded"],
         "--precision fp32 is given"),
        (["--targets", "coreml", "--stage-precision", "image_encoder=fp8"], "image_encoder=fp8: unknown precision"),
        (["--targets", "coreml", "--calibration", str(tmp_path / "nope")], "--calibration"),
        (["--targets", "coreml", "--calibration", str(empty)], "no .jpg/.jpeg/.png frames"),
        (["--targets", "coreml", "--calibration", str(mixed_sizes)], "frames have different sizes"),
        (["--targets", "coreml", "--calibration", str(corrupt)], "not a readable image"),
    ]
    for extra, want in bad:
        assert main(["-q", "export", "--config", "test_tiny", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert want in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_guard_that_cannot_run_is_a_one_line_error(tmp_path, monkeypatch):
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    def broken(*a, **k):
        raise OSError("frame 00002.jpg vanished")

    monkeypatch.setattr(fp16_guard, "calibration_inputs", broken)
    model, weights = load_model(tiny_test_config(), None, seed=0, quiet=True)
    with pytest.raises(ExportError, match=r"overflow guard could not track the calibration frames .*vanished; pass "
                                          r"--calibration"):
        export_model(model, tmp_path / "o", targets=("coreml",), weights_info=weights, quiet=True, slot_buckets=False)
    assert not (tmp_path / "o").exists()


def test_calibration_tracking_runs_once_for_every_stage_and_bucket(monkeypatch):
    """The guard's fp32 calibration tracking is run once per export: every stage reads it and
    each memory-attention slot bucket measures it cut to its slots (buckets.export_bucket)."""
    from etam_export.buckets import bucket_cut
    from etam_export.coreml_gates import Calibration
    from etam_mobile.contracts import STAGES, slot_buckets

    calls, real = [], fp16_guard.calibration_inputs

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fp16_guard, "calibration_inputs", counting)
    model, _ = tiny()
    frames, label = load_calibration(None)

    class Variant:
        def frames(self):
            return frames[:3], label

    cal = Calibration(model, Capacities(), Variant(), lambda msg: None)
    assert all(cal.inputs(stage) for stage in STAGES)
    cut = [[bucket_cut(a, k, p) for a in cal.inputs("memory_attention")] for k, p in slot_buckets(model.cfg, Capacities())]
    assert len(calls) == 1 and any(c is not None for per in cut for c in per)


# ---- full size (slow) ----------------------------------------------------------------------

@pytest.mark.slow
def test_ti_512_overflowing_block_fails_unguarded_and_passes_guarded(tmp_path):
    model, weights, frames = overflow_model("efficienttam_ti_512x512", seed=5)
    res = _stage_plans(model, weights, frames[:1], tmp_path, ("fp16-unguarded", "fp16"))
    assert not res["fp16-unguarded"][1]["ok"]
    plan, ver, info = res["fp16"]
    assert ver["ok"] and ver["outputs"]["feats"]["psnr_db"] >= gates.MIN_PSNR["fp16"], ver
    assert 0 < info["fp32_ops"] < info["mil_ops"] // 3
