"""Core ML target: one ML Program (.mlpackage) per stage.

iOS 17 deployment target, compute units ALL, inputs/outputs float32/int32 named exactly as
the manifest. fp16 compute follows the stage's plan (precision.py: all fp16 except the ops
the overflow guard of fp16_guard.py flags, by default). Metadata
records config, weights (checkpoint SHA-256 or synthetic seed), version, licence and a
description of every input and output.

Core ML only predicts on macOS: elsewhere the saved spec is checked against the contract
and the numeric check is replaced by the PyTorch fp16 emulation of the same plan.
"""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch

from etam_mobile import __version__
from etam_mobile.configs import ModelConfig
from etam_mobile.contracts import StageSpec

from . import coreml_compress, fp16_guard
from . import precision as mixed
from .common import ExportError, import_quietly, parity, quiet_converters, wrap_error

# Descriptions of contract tensors, by name (shape and dtype are appended).
DESCRIPTIONS = {
    "image": "RGB frame stretched to image_size, scaled to [0,1], ImageNet mean/std normalized, NCHW",
    "feats": "image features from image_encoder",
    "cond_feats": "image features conditioned on the memory bank (memory_attention output)",
    "mem_feats": "memory features (memory_attention: one slot per selected frame; memory_encoder: the new one)",
    "mem_tpos": "temporal position index of each memory slot into maskmem_tpos_enc (0..num_maskmem-1)",
    "mem_valid": "1 for a filled memory slot, 0 for padding",
    "obj_ptrs": "object pointers of the selected frames, one per slot",
    "ptr_valid": "1 for a filled object-pointer slot, 0 for padding",
    "points": "prompt points in model-input pixels (x, y), padded",
    "labels": "point labels: 1 positive, 0 negative, 2/3 box corners, -1 padding (first -1 is SAM's pad point)",
    "mask_input": "low-res mask logits used as a prompt (ignored when has_mask_input is 0)",
    "has_mask_input": "1 to use mask_input, 0 to use the no-mask embedding",
    "mask": "low-res mask logits of the chosen mask",
    "binarize": "1 to binarize the mask (conditioning frames with prompts), 0 to use sigmoid(logits)",
    "masks": "low-res mask logits: [single-mask output, 3 multimask outputs]",
    "iou": "predicted IoU of each mask",
    "obj_ptr": "object pointer candidate per mask token",
    "obj_score": "object score logit (> 0: object present)",
}
MIL_DTYPE = {torch.float32: np.float32, torch.int32: np.int32}
SPEC_DTYPE = {torch.float32: "FLOAT32", torch.int32: "INT32"}


def _describe(t) -> str:
    text = DESCRIPTIONS.get(t.name, t.name)
    return f"{text}; shape {list(t.shape)}, {str(t.dtype).replace('torch.', '')}"


def write(ep, path: Path, spec: StageSpec, cfg: ModelConfig, precision: str, weights_info: dict,
          compress_scheme: str = "fp16", plan: "fp16_guard.StagePlan | None" = None) -> dict:
    """Convert and save one stage; `compress_scheme` other than fp16 compresses the weights
    (coreml_compress.py) before saving. An fp16 stage follows `plan` (fp16_guard.plan_stage;
    without one: all fp16, nothing measured); the plan gets the precisions read back from the
    converted program and the op census of the saved package."""
    try:
        ct = import_quietly("coremltools")
    except ImportError as exc:
        raise ExportError(f"coremltools is not installed ({exc}); pip install coremltools", spec.name, "coreml") from None
    if precision == "fp16":
        plan = plan or fp16_guard.plan_stage(spec.name, ep, mixed.DEFAULT_MODE, [], "nothing (no calibration inputs)")
        source, compute_precision = plan.ep, ct.transform.FP16ComputePrecision(op_selector=plan.selector())
    else:
        plan, source, compute_precision = None, ep.run_decompositions({}), ct.precision.FLOAT32
    try:
        with quiet_converters():
            model = ct.convert(
                source,
                convert_to="mlprogram",
                minimum_deployment_target=coreml_compress.minimum_target(compress_scheme),
                compute_units=ct.ComputeUnit.ALL,
                compute_precision=compute_precision,
                inputs=[ct.TensorType(name=t.name, shape=tuple(t.shape), dtype=MIL_DTYPE[t.dtype]) for t in spec.inputs],
                outputs=[ct.TensorType(name=t.name, dtype=MIL_DTYPE[t.dtype]) for t in spec.outputs],
                skip_model_load=True,
            )
    except Exception as exc:
        raise wrap_error(exc, spec.name, "coreml", "Core ML conversion") from exc
    if plan is not None:
        plan.read_back(model._mil_program)
    try:
        model = coreml_compress.compress(model, compress_scheme)
    except Exception as exc:
        raise wrap_error(exc, spec.name, "coreml", f"{compress_scheme} weight compression") from exc
    model.short_description = f"EfficientTAM {cfg.name}, stage {spec.name} (etam-mobile {__version__})"
    model.author = "etam-mobile (EfficientTAM model: Meta, Apache-2.0)"
    model.license = "Apache-2.0"
    model.version = __version__
    meta = model.user_defined_metadata
    meta["etam.config"] = cfg.name
    meta["etam.stage"] = spec.name
    meta["etam.precision"] = precision if compress_scheme == "fp16" else f"{precision}, {compress_scheme} weights"
    if plan is not None:
        meta["etam.fp16_plan"] = plan.mode
        meta["etam.fp32_nodes"] = ",".join(sorted(n for n, p in plan.precisions.items() if p == "fp32"))
    for key, value in (weights_info or {}).items():
        meta[f"etam.{key}"] = str(value)
    for t in spec.inputs:
        model.input_description[t.name] = _describe(t)
    for t in spec.outputs:
        model.output_description[t.name] = _describe(t)
    try:
        with quiet_converters():
            model.save(str(path))
    except Exception as exc:
        raise wrap_error(exc, spec.name, "coreml", "saving the .mlpackage") from exc
    counts = mixed.saved_counts(path)
    info = {"precision": precision, "fp32_op_types": sorted(counts["fp32_op_types"]), "mil_ops": counts["ops"],
            "fp32_ops": counts["fp32_ops"], "casts": counts["casts"]}
    if plan is not None:
        plan.counts = counts
        info["fp16_plan"] = plan.record()
    return info


def check_spec(path: Path, spec: StageSpec) -> list:
    """Problems between a saved .mlpackage's interface and the contract (empty = fine)."""
    ct = import_quietly("coremltools")
    with quiet_converters():
        mspec = ct.utils.load_spec(str(path))
    problems = []
    for kind, have, want in (("input", mspec.description.input, spec.inputs),
                             ("output", mspec.description.output, spec.outputs)):
        names = [f.name for f in have]
        if names != [t.name for t in want]:
            problems.append(f"{kind} names {names}, contract {[t.name for t in want]}")
            continue
        for f, t in zip(have, want):
            arr = f.type.multiArrayType
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(arr.dataType)
            if tuple(arr.shape) != tuple(t.shape) or dtype != SPEC_DTYPE[t.dtype]:
                problems.append(f"{kind} {t.name}: {tuple(arr.shape)} {dtype}, contract {tuple(t.shape)} {SPEC_DTYPE[t.dtype]}")
    return problems


def can_predict() -> bool:
    return platform.system() == "Darwin"


def verify(path: Path, spec: StageSpec, ep, inputs: list, ref: list, precision: str,
           plan: "fp16_guard.StagePlan | None" = None) -> dict:
    problems = check_spec(path, spec)
    if problems:
        raise ExportError(f"{Path(path).name} does not match the contract: {'; '.join(problems)}", spec.name, "coreml")
    names = [t.name for t in spec.outputs]
    if can_predict():
        ct = import_quietly("coremltools")
        model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        pred = model.predict({t.name: a for t, a in zip(spec.inputs, inputs)})
        res = parity(ref, [np.asarray(pred[n]).reshape(r.shape) for n, r in zip(names, ref)], names, precision)
        res.update(spec="ok", numeric="core ml predict")
        return res
    reason = "Core ML predictions need macOS; the saved spec was checked instead"
    if precision != "fp16":
        return {"spec": "ok", "numeric": "skipped", "reason": reason}
    if plan is None:
        raise ExportError("an fp16 Core ML stage needs its precision plan to be verified", spec.name, "coreml")
    with quiet_converters():
        got = plan.emulate(tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
    res = parity(ref, got, names, "fp16")
    res.update(spec="ok", numeric="skipped", reason=reason,
               fp16_emulation=f"PyTorch emulation of the converted program's fp16/fp32 ops, plan {plan.mode} "
                              "(precision.py); not Core ML")
    return res
