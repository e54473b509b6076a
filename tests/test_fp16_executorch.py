"""`--stage-precision mask_decoder=fp16` on ExecuTorch-XNNPACK (export/half.py): the stage's
weights and compute in fp16 behind the fp32 contract, recorded and gated like int8.

One export of the tiny config to ExecuTorch only (the three other stages fp32, no slot
buckets, one gate case): the mask decoder is the only fp16 lowering."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from etam_mobile.contracts import STAGES, Capacities
from etam_mobile.manifest import read_manifest

from etam_export import export_model, gates, plan
from etam_export.common import example_inputs, run_eager

from conftest import tiny

CASE = "ti_plain_two_objects"


@functools.lru_cache(maxsize=None)
def fp16_decoder_tiny() -> Path:
    model, weights = tiny()
    root = Path(tempfile.mkdtemp(prefix="etam-fp16-et-"))
    atexit.register(shutil.rmtree, root, True)
    export_model(model, root / "x", targets=("executorch",), weights_info=weights, quiet=True,
                 stage_precision="mask_decoder=fp16", gate_cases=(CASE,), slot_buckets=False)
    return root / "x"


def test_fp16_mask_decoder_is_half_size_recorded_gated_and_matches_eager():
    folder = fp16_decoder_tiny()
    doc = read_manifest(folder)
    assert doc["variant"]["executorch_plan"] == {s: "fp16" if s == "mask_decoder" else "fp32" for s in STAGES}
    assert doc["variant"]["status"] == "passed", doc["variant"]["failures"]
    assert doc["variant"]["tracking_gate"]["cases"][CASE]["ok"]
    rec = doc["stages"]["mask_decoder"]["precision"]["executorch"]
    assert rec["precision"] == "fp16" and "fp16" in rec["scheme"] and rec["io"].startswith("fp32")
    # every weighted layer is fp16 inside (the census of the exported fp16 graph)
    assert rec["layers"]["linear"] == {"fp16": rec["layers"]["linear"]["fp16"]} and rec["layers"]["conv"].keys() == {"fp16"}
    (gate,) = rec["gates"]
    assert gate["ok"] and gate["gate"] == "PSNR >= 35 dB vs fp32 eager" and gate["min_psnr_db"] >= 35
    assert doc["stages"]["image_encoder"]["precision"]["executorch"]["precision"] == "fp32"
    # fp16 inside: the program is about half the stage's fp32 weights (measured 0.517; the fp32 program is 1.008)
    model, _ = tiny()
    stage = model.stages(for_export=True)["mask_decoder"]
    fp32_bytes = sum(t.numel() * 4 for t in [*stage.parameters(), *stage.buffers()])
    ratio = (folder / "mask_decoder.pte").stat().st_size / fp32_bytes
    assert 0.48 < ratio < 0.55, ratio

    from etam_mobile.runtime.exported import open_backend

    backend = open_backend("executorch", folder)  # the signature (fp32 I/O) is the contract's
    assert backend.precision["mask_decoder"]["precision"] == "fp16"
    inputs = example_inputs(model.cfg, Capacities(), model.stages(), seed=3)["mask_decoder"]
    ref = run_eager(model.stages()["mask_decoder"].eval(), inputs)
    got = backend.run("mask_decoder", inputs)
    # measured 60-70 dB on every output (benchmarks/results/mask_decoder_fp16_tiny.json); the gate is 35
    for r, g in zip(ref, got):
        assert g.dtype == np.float32 and gates.psnr(r, g) >= 50.0, gates.psnr(r, g)
    assert gates.mask_iou(ref[0] > 0, got[0] > 0) >= 0.99
    assert np.sign(ref[3]) == np.sign(got[3])  # the object decision


def test_fp16_is_an_executorch_stage_precision_unless_coreml_is_exported():
    """`STAGE=fp16` makes the ExecuTorch stage fp16; with the coreml target it keeps naming Core
    ML's (default) fp16 compute plan and the ExecuTorch stage stays fp32."""
    assert plan.executorch_plan("none", "mask_decoder=fp16")["mask_decoder"] == "fp16"
    assert plan.executorch_plan("int8", "mask_decoder=fp16")["image_encoder"] == "int8"
    assert plan.executorch_plan("none", "mask_decoder=fp16", coreml=True)["mask_decoder"] == "fp32"
    assert plan.DEFAULT_EXECUTORCH_PLANS["int8"]["mask_decoder"] == "fp32"
