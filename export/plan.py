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
# Default plans, from the chained-tracking sensitivity measured one stage at a time
# (benchmarks/quantization_sensitivity.py, README "Which layers stay fp32"): int8 on the mask
# decoder alone misses the tracking gate (mean mask IoU 0.966 / 0.964 on the two gate cases),
# every other stage alone passes (>= 0.98), and all stages but the mask decoder pass (0.981 /
# 0.984, worst frame 0.945) - so the mask decoder, whose outputs are the masks, stays fp32.
# int8-4w keeps the same split (4-bit where the int8 plan quantises; the memory encoder's
# weights are mostly convs, which have no 4-bit path in XNNPACK, so it stays int8).
DEFAULT_EXECUTORCH_PLANS = {
    "none": {s: FP32 for s in STAGES},
    "int8": {"image_encoder": "int8", "memory_attention": "int8", "mask_decoder": FP32, "memory_encoder": "int8"},
    "int8-4w": {"image_encoder": "int8-4w", "memory_attention": "int8-4w", "mask_decoder": FP32,
                "memory_encoder": "int8"},
}


# Layers a quantised stage keeps in fp32 by default (module-name prefixes), from the measured
# sensitivity (README "Which layers stay fp32"): {scheme: {stage: prefixes}}.
# Empty on purpose: no int8 split of the mask decoder passes the chained gate together with the
# three int8 stages (benchmarks/mask_decoder_layers.py --others, tiny config, synthetic weights;
# benchmarks/results/mask_decoder_layers_tiny.txt): decoder all int8 0.959 / 0.954 mean IoU on
# the two gate cases; its attention projections fp32 (4.5 MiB) 0.976 / 0.959; the whole two-way
# transformer fp32 (12.5 of 16.7 MiB) 0.969 / 0.968 - all below 0.97, because no layer is an
# outlier (every linear input loses 0.6-0.9 % to int8, per tensor or per row alike) and the
# other three int8 stages already use 0.016-0.019 of the 0.03 margin. Keeping the whole decoder
# fp32 is the one measured plan that passes (0.981 / 0.983).
KEEP_FP32_LAYERS: dict = {"int8": {}, "int8-4w": {}}


def keep_fp32_layers(stage: str, scheme: str) -> tuple:
    return tuple(KEEP_FP32_LAYERS.get(scheme, {}).get(stage, ()))


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
