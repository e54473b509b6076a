"""Per-stage precision plan: `--quantize`/`--compress` pick a variant, `--stage-precision`
overrides single stages (`image_encoder=int8,memory_attention=fp32`).

The default plan of each variant is the measured one (README, "Compressed variants"):
stages whose gate a scheme misses on the reference config are lowered one step, not the
whole variant.
"""
from __future__ import annotations

from etam_mobile.contracts import STAGES

from .common import ExportError

FP32 = "fp32"
# ExecuTorch (XNNPACK) schemes per stage; "fp32" = not quantised.
EXECUTORCH_PRECISIONS = ("fp32", "int8", "int8-4w")
# Core ML compute plans per stage (export/precision.py; "fp32" applies to both targets).
COREML_PRECISIONS = ("fp16", "fp16-islands", "fp16-unguarded", "fp32")
STAGE_PRECISIONS = EXECUTORCH_PRECISIONS + tuple(p for p in COREML_PRECISIONS if p not in EXECUTORCH_PRECISIONS)
# Default plans, from the sensitivity measured on efficienttam_ti_512x512 (README):
# int8-4w keeps the memory encoder at int8: its weights are convs (no 4-bit path in
# XNNPACK) and 4-bit on its one projection saves < 20 kB.
DEFAULT_EXECUTORCH_PLANS = {
    "none": {s: FP32 for s in STAGES},
    "int8": {s: "int8" for s in STAGES},
    "int8-4w": {"image_encoder": "int8-4w", "memory_attention": "int8-4w", "mask_decoder": "int8-4w",
                "memory_encoder": "int8"},
}


def parse_stage_precision(text: str | None, allowed: tuple) -> dict:
    """'stage=prec,...' -> {stage: prec}; one-line errors name the bad part and the choices."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        stage, sep, prec = part.partition("=")
        stage, prec = stage.strip(), prec.strip()
        if not sep:
            raise ExportError(f"--stage-precision part {part!r} is not STAGE=PRECISION; e.g. "
                              "--stage-precision image_encoder=int8,memory_attention=fp32")
        if stage not in STAGES:
            raise ExportError(f"--stage-precision names unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        if prec not in allowed:
            raise ExportError(f"--stage-precision {stage}={prec}: unknown precision; choose from {', '.join(allowed)}")
        out[stage] = prec
    return out


def executorch_plan(quantize: str, stage_precision: str | dict | None) -> dict:
    """The stage -> precision plan of the ExecuTorch-XNNPACK artifacts."""
    plan = dict(DEFAULT_EXECUTORCH_PLANS[quantize])
    over = stage_precision if isinstance(stage_precision, dict) else parse_stage_precision(
        stage_precision, STAGE_PRECISIONS)
    plan.update({s: p for s, p in over.items() if p in EXECUTORCH_PRECISIONS})
    return plan


def coreml_plan(stage_precision: str | dict | None) -> dict:
    """The stage -> Core ML compute plan (default: guarded all-fp16)."""
    over = stage_precision if isinstance(stage_precision, dict) else parse_stage_precision(
        stage_precision, STAGE_PRECISIONS)
    return {s: over.get(s, "fp16") if over.get(s, "fp16") in COREML_PRECISIONS else "fp16" for s in STAGES}


def describe(plan: dict) -> str:
    return ",".join(f"{s}={plan[s]}" for s in STAGES)
