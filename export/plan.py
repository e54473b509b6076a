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
# ExecuTorch (XNNPACK) schemes per stage; "fp32" = not quantised; "fp16" = fp16 weights and
# compute behind fp32 inputs/outputs (export/half.py). "fp16" also names Core ML's default compute
# plan: with the coreml target in the export it keeps that meaning and the ExecuTorch stage stays
# fp32 (executorch_plan), as before this ExecuTorch precision existed.
EXECUTORCH_PRECISIONS = ("fp32", "int8", "int8-4w", "fp16")
# Core ML compute plans per stage (export/precision.py; "fp32" applies to both targets).
COREML_PRECISIONS = ("fp16", "fp16-islands", "fp16-unguarded", "fp32")
# Core ML weight compression per stage (`--compress S`; a stage given a compute plan above keeps
# fp16 weights, i.e. is not compressed).
COREML_COMPRESSIONS = ("int8", "palettize6", "palettize4")
# Default: the mask decoder keeps fp16 weights. Measured (test_tiny, synthetic weights, emulated
# chained tracking, README "Compressed variants"): --compress int8 on all four stages misses the
# gate (mean IoU 0.966 / 0.946), with the mask decoder uncompressed it passes (0.985 / 0.979) -
# the same stage the ExecuTorch int8 plan keeps fp32. `--stage-precision mask_decoder=int8` compresses it.
COREML_COMPRESS_KEEP_FP16 = ("mask_decoder",)
STAGE_PRECISIONS = EXECUTORCH_PRECISIONS + tuple(p for p in COREML_PRECISIONS + COREML_COMPRESSIONS
                                                 if p not in EXECUTORCH_PRECISIONS)
# Default plans, from the chained-tracking sensitivity measured one stage at a time
# (benchmarks/quantization_sensitivity.py, README "Which layers stay fp32"): int8 on the whole
# mask decoder misses the tracking gate (mean mask IoU 0.966 / 0.964 on the two gate cases
# alone, 0.959 / 0.954 with the other three stages int8); every other stage alone passes
# (>= 0.98), and all stages but the mask decoder pass (0.981 / 0.983, worst frame 0.945).
# Within the mask decoder only the two-way transformer's MLPs (8 of its 16.7 MiB) are
# insensitive: int8 on them alone costs 0.010 / 0.019 (the attention projections, 4.5 MiB,
# cost 0.020 / 0.034), and with the other three stages int8 the plan passes (0.978 / 0.972,
# benchmarks/mask_decoder_layers.py --mode only --others; results/mask_decoder_layers_tiny.txt).
# That MLP-only split (`--stage-precision mask_decoder=int8`: the decoder "int8" with every other
# layer kept fp32, KEEP_FP32_LAYERS below) passed on the tiny config by 0.002. At ti_512 with
# synthetic weights seed 0 both plans miss (split 0.9669 / 0.9523, decoder fp32 0.9725 / 0.9472);
# with seed 5 the decoder-fp32 plan passes (0.9838 / 0.9807). So the DEFAULT is the conservative
# plan, the whole mask decoder fp32; the split is there to try on a trained checkpoint, whose gate
# the exporter measures (README "Which layers stay fp32").
# int8-4w keeps the same split (4-bit where the int8 plan quantises the big stages; the memory
# encoder's weights are mostly convs, which have no 4-bit path in XNNPACK, so it stays int8).
DEFAULT_EXECUTORCH_PLANS = {
    "none": {s: FP32 for s in STAGES},
    "int8": {"image_encoder": "int8", "memory_attention": "int8", "mask_decoder": FP32, "memory_encoder": "int8"},
    "int8-4w": {"image_encoder": "int8-4w", "memory_attention": "int8-4w", "mask_decoder": FP32,
                "memory_encoder": "int8"},
}

_T = "decoder.transformer"
# Mask-decoder layers kept fp32 when the decoder is int8: everything but the two-way
# transformer's MLPs (prompt-encoder convs, every attention projection, the hypernetwork MLPs,
# the IoU / object-score heads and the object-pointer projection; the upscaling transposed convs
# stay fp32 anyway: no dynamic int8 pattern). Measured, tiny config, synthetic weights: keeping
# fewer layers fp32 misses the gate with the other stages int8 - decoder all int8 0.959 / 0.954,
# its attention kept 0.976 / 0.959, the whole transformer kept 0.969 / 0.968 - because no layer
# is an outlier (every linear input loses 0.6-0.9 % to int8, per tensor or per row alike) and the
# other three int8 stages already use 0.017-0.019 of the 0.03 margin.
MASK_DECODER_KEEP_FP32 = ("prompt_encoder",) + tuple(
    f"{_T}.layers.{i}.{a}" for i in (0, 1) for a in ("self_attn", "cross_attn_token_to_image",
                                                      "cross_attn_image_to_token")) + (
    f"{_T}.final_attn_token_to_image", "decoder.output_upscaling", "decoder.output_hypernetworks_mlps",
    "decoder.iou_prediction_head", "decoder.pred_obj_score_head", "obj_ptr_proj")

# Layers a quantised stage keeps in fp32 by default (module-name prefixes), from the measured
# sensitivity (README "Which layers stay fp32"): {scheme: {stage: prefixes}}.
KEEP_FP32_LAYERS: dict = {"int8": {"mask_decoder": MASK_DECODER_KEEP_FP32}, "int8-4w": {}}


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


def executorch_plan(quantize: str, stage_precision: str | dict | None, coreml: bool = False) -> dict:
    """The stage -> precision plan of the ExecuTorch-XNNPACK artifacts. `coreml`: the export has
    the coreml target, whose compute plan a `STAGE=fp16` names (the ExecuTorch stage is untouched)."""
    plan = dict(DEFAULT_EXECUTORCH_PLANS[quantize])
    over = stage_precision if isinstance(stage_precision, dict) else parse_stage_precision(
        stage_precision, STAGE_PRECISIONS)
    plan.update({s: p for s, p in over.items() if p in EXECUTORCH_PRECISIONS and not (coreml and p == "fp16")})
    return plan


def coreml_compress_plan(compress: str, stage_precision: str | dict | None) -> dict:
    """{stage: weight scheme} of a `--compress` export: `compress` on every stage, except stages
    `--stage-precision` names — a compression scheme there compresses that stage so, a compute
    plan (fp16, fp16-islands, fp32, ...) keeps its weights fp16 (e.g. mask_decoder=fp16: the
    stage whose outputs are the masks stays uncompressed, as the ExecuTorch int8 plan keeps it fp32)."""
    over = stage_precision if isinstance(stage_precision, dict) else parse_stage_precision(
        stage_precision, STAGE_PRECISIONS)
    out = {}
    for s in STAGES:
        p = over.get(s, "fp16" if s in COREML_COMPRESS_KEEP_FP16 else compress)
        out[s] = p if p in COREML_COMPRESSIONS else "fp16"
    return out


def coreml_plan(stage_precision: str | dict | None) -> dict:
    """The stage -> Core ML compute plan (default: guarded all-fp16)."""
    over = stage_precision if isinstance(stage_precision, dict) else parse_stage_precision(
        stage_precision, STAGE_PRECISIONS)
    return {s: over.get(s, "fp16") if over.get(s, "fp16") in COREML_PRECISIONS else "fp16" for s in STAGES}


def describe(plan: dict) -> str:
    return ",".join(f"{s}={plan[s]}" for s in STAGES)
