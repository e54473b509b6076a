"""Chained-tracking gate of compressed Core ML variants (`--compress int8|palettize6|palettize4`),
EMULATED in PyTorch: every stage runs with the weights decompressed from its saved .mlpackage
and its fp16 plan, against fp32 eager on a recorded upstream case.

One tiny int8 export serves the integration test (Core ML conversion is the slow part); the
gate's pass/fail wiring is tested on stand-in emulated stages, which needs no conversion.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from etam_mobile.contracts import STAGES, Capacities
from etam_mobile.manifest import read_manifest

from etam_export import ExportError, export_model
from etam_export.variants import Variant

CASE = "ti_plain_two_objects"  # 5 frames, a click + negative click and a box


@functools.lru_cache(maxsize=None)
def tiny():
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    return load_model(tiny_test_config(), None, seed=0, quiet=True)


@functools.lru_cache(maxsize=None)
def coreml_int8_tiny() -> Path:
    model, weights = tiny()
    root = Path(tempfile.mkdtemp(prefix="etam-cml-int8-"))
    atexit.register(shutil.rmtree, root, True)
    export_model(model, root / "int8", targets=("coreml",), weights_info=weights, quiet=True, compress="int8",
                 stage_precision="mask_decoder=fp16", gate_cases=(CASE,), allow_failing_gates=True)
    return root / "int8"


def test_coreml_int8_export_runs_emulated_chained_tracking_gate():
    """Every stage but the mask decoder (kept fp16 by --stage-precision) is compressed (the ViT
    patch embedding too: coremltools 9.0's conv-bias fusion used to crash on it), and the
    manifest carries the emulated tracking gate, the uncompressed stage emulated with its fp16 plan."""
    doc = read_manifest(coreml_int8_tiny())
    var = doc["variant"]
    assert var["name"] == "coreml-int8" and var["coreml_compress"] == "int8"
    assert var["coreml_compress_plan"] == {s: ("fp16" if s == "mask_decoder" else "int8") for s in STAGES}
    tg = var["tracking_gate"]
    assert "emulated in PyTorch" in tg["emulation"] and "decompressed weights" in tg["emulation"]
    assert set(tg["plans"]) == set(STAGES)
    assert all(p.startswith("int8 weights + fp16") for s, p in tg["plans"].items() if s != "mask_decoder")
    assert not tg["plans"]["mask_decoder"].startswith("int8") and tg["plans"]["mask_decoder"] != "fp32"
    case = tg["cases"][CASE]
    assert case["masks"] > 5 and 0.5 < case["mean_iou"] <= 1.0 and case["min_iou"] <= case["mean_iou"]
    assert case["ok"] == (case["mean_iou"] >= 0.97 and case["min_iou"] >= 0.90)
    assert var["status"] == ("passed" if tg["ok"] and not var["failures"] else "failing")
    for line in var["failures"]:
        if "tracking" in line:
            assert line.startswith(f"Core ML int8 chained tracking (emulated) case {CASE}: mean mask IoU")
            assert "--compress fp16" in line
    for stage in STAGES:
        rec = doc["stages"][stage]["precision"]["coreml"]
        if stage == "mask_decoder":
            assert rec["precision"] == "fp16" and "layers" not in rec, rec
            continue
        assert rec["precision"] == "int8" and rec["layers"]["compressed_weights"] > 0, (stage, rec)
        assert rec["gates"][0]["min_psnr_db"] >= 30.0, (stage, rec["gates"][0])
        # the image encoder is gated on real frames too (the built-in clip), emulated like the rest
        on = [g["on"].split(":")[0].split(" (")[0] for g in rec["gates"]]
        assert on == (["example inputs", "real frames"] if stage == "image_encoder" else ["example inputs"]), on
        assert all(g["min_psnr_db"] >= 30.0 and "emulation" in g for g in rec["gates"]), (stage, rec["gates"])


@pytest.mark.slow
@pytest.mark.parametrize("scheme,next_scheme", [("palettize6", "--compress int8"), ("palettize4", "--compress palettize6")])
def test_palettized_exports_run_the_emulated_tracking_gate(scheme, next_scheme, tmp_path):
    model, weights = tiny()
    doc = export_model(model, tmp_path / scheme, targets=("coreml",), weights_info=weights, quiet=True,
                       compress=scheme, gate_cases=(CASE,), allow_failing_gates=True)
    tg = doc["variant"]["tracking_gate"]
    assert doc["variant"]["name"] == f"coreml-{scheme}" and "decompressed weights" in tg["emulation"]
    case = tg["cases"][CASE]
    assert 0.0 <= case["min_iou"] <= case["mean_iou"] <= 1.0
    if not case["ok"]:
        assert any(line.startswith(f"Core ML {scheme} chained tracking (emulated) case {CASE}") and next_scheme in line
                   for line in doc["variant"]["failures"])


# ---- the gate's wiring, on stand-in emulated stages ------------------------------------------

class _Stage:
    """Eager fp32 stage, optionally with noise on its first output (a stand-in for a badly
    compressed package)."""

    def __init__(self, module, noise: float = 0.0):
        self.module, self.noise, self.mode = module.eval(), noise, "stand-in"
        self.rng = np.random.default_rng(0)

    def emulate(self, inputs):
        with torch.inference_mode():
            out = self.module(*inputs)
        out = [o.detach().numpy().copy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
        if self.noise:
            out[0] = out[0] + self.noise * self.rng.standard_normal(out[0].shape).astype(np.float32)
        return out


def _finish(noise: float, allow_failing: bool):
    model, _ = tiny()
    v = Variant(compress="palettize4", gate_cases=(CASE,), allow_failing=allow_failing)
    v.coreml_emulated = {s: _Stage(m, noise if s == "mask_decoder" else 0.0)
                         for s, m in model.stages(for_export=True).items()}
    doc = {"stages": {s: {"artifacts": {}} for s in STAGES}}
    v.finish(doc, None, model, Capacities(), {}, lambda t, p: p, "fp16", True, lambda *a: None)
    return doc


def test_exact_emulated_stages_pass_the_gate():
    tg = _finish(0.0, False)["variant"]["tracking_gate"]
    assert tg["ok"] and tg["cases"][CASE]["mean_iou"] == 1.0


def test_missed_compressed_tracking_gate_fails_the_export_with_the_plan_that_passes():
    with pytest.raises(ExportError, match=rf"accuracy gate missed: Core ML palettize4 chained tracking \(emulated\) "
                                          rf"case {CASE}: mean mask IoU 0\.\d+ \(>= 0\.97\), worst 0\.\d+ on frame \d+ "
                                          r"object \d+ \(>= 0\.9\); the plan to try next: --stage-precision "
                                          r"mask_decoder=fp16 \(mask decoder uncompressed\), else --compress palettize6"):
        _finish(8.0, False)
    doc = _finish(8.0, True)
    assert doc["variant"]["status"] == "failing" and not doc["variant"]["tracking_gate"]["ok"]


def test_w8a8_is_refused_in_one_line_with_the_reason(tmp_path, capsys):
    from etam_mobile.cli import main

    assert main(["-q", "export", "--config", "test_tiny", "--compress", "w8a8", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --compress w8a8 is not available in this exporter: ")
    assert "choose int8, palettize6 or palettize4" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_stage_precision_picks_the_compressed_stages():
    """With --compress, --stage-precision speaks of Core ML weights: a compute plan keeps a
    stage's weights fp16, a scheme compresses that stage so; compressing nothing is refused."""
    from etam_export.plan import coreml_compress_plan

    assert coreml_compress_plan("int8", "mask_decoder=fp16,image_encoder=palettize6") == {
        "image_encoder": "palettize6", "memory_attention": "int8", "mask_decoder": "fp16", "memory_encoder": "int8"}
    assert coreml_compress_plan("palettize6", None)["mask_decoder"] == "fp16"  # the measured default
    assert coreml_compress_plan("palettize6", "mask_decoder=palettize6")["mask_decoder"] == "palettize6"
    v = Variant.create(("coreml",), "none", "mask_decoder=fp16", None, False, None, "int8")
    assert not v.quantized and v.compresses("image_encoder", "coreml") and not v.compresses("mask_decoder", "coreml")
    with pytest.raises(ExportError, match="compresses nothing"):
        Variant.create(("coreml",), "none", ",".join(f"{s}=fp16" for s in STAGES), None, False, None, "int8")


def test_uncompressed_decoder_drops_the_keep_decoder_advice():
    model, _ = tiny()
    v = Variant(compress="int8", gate_cases=(CASE,), allow_failing=True,
                compress_plan={s: ("fp16" if s == "mask_decoder" else "int8") for s in STAGES})
    v.coreml_emulated = {s: _Stage(m, 8.0 if s == "memory_attention" else 0.0)
                         for s, m in model.stages(for_export=True).items()}
    doc = {"stages": {s: {"artifacts": {}} for s in STAGES}}
    v.finish(doc, None, model, Capacities(), {}, lambda t, p: p, "fp16", True, lambda *a: None)
    assert doc["variant"]["tracking_gate"]["fix"] == "the plan to try next: --compress fp16"
