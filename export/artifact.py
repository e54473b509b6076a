"""One stage for one target: torch.export of the stage (once, shared by its targets), then
`export_one` writes the artifact, reads it back and gates it against eager PyTorch.

Why its own module: the export driver (exporter.py) and the slot buckets (buckets.py) write
their artifacts the same way.
"""
from __future__ import annotations

import time

import torch

from . import coreml, executorch, onnx
from .common import ExportError, artifact_size, parity_summary, quiet_converters, torch_inputs, wrap_error
from .coreml_gates import fp16_fix

# Targets with an fp16 path; ExecuTorch-XNNPACK and ONNX artifacts are always fp32.
FP16_TARGETS = ("coreml", "executorch-coreml")


def target_precision(target: str, precision: str) -> str:
    return precision if target in FP16_TARGETS else "fp32"


def torch_export(module: torch.nn.Module, inputs: list, stage: str):
    try:
        with quiet_converters():
            return torch.export.export(module, torch_inputs(inputs), strict=False)
    except Exception as exc:
        raise wrap_error(exc, stage, "torch.export", "torch.export") from exc


def export_one(target, module, ep, path, spec, inputs, ref, cfg, precision, weights, verify, plan=None,
               allow_failing=False) -> tuple:
    """Write one artifact and (if asked) read it back and gate it; returns (report, progress line)."""
    t1 = time.perf_counter()
    info = _write(target, module, ep, path, spec, inputs, cfg, precision, weights, plan)
    info["export_s"] = round(time.perf_counter() - t1, 2)
    info["bytes"] = artifact_size(path)
    line = f"      {target:17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB"
    if "delegated_fraction" in info:
        line += f"  delegated {100 * info['delegated_fraction']:.0f}% of nodes"
    if "casts" in info:
        line += f"  fp32 ops {info['fp32_ops']}/{info['mil_ops']}, casts {info['casts']}"
    if not verify:
        return info, line
    t2 = time.perf_counter()
    res = info["verify"] = _verify(target, path, spec, ep, inputs, ref, precision, plan)
    info["verify_s"] = round(time.perf_counter() - t2, 2)
    if "outputs" in res and not res["ok"]:
        bad = [k for k, v in res["outputs"].items() if not v.get("ok")]
        fix = f"; a plan that passes: {fp16_fix(spec.name, plan.mode)}" if plan is not None else ""
        if not (allow_failing and plan is not None):
            raise ExportError(f"parity check failed on {', '.join(bad)} ({res['gate']}; {parity_summary(res)}"
                              f"{', emulated' if 'fp16_emulation' in res else ''}){fix}", spec.name, target)
        line += "  GATE MISSED"
    if "outputs" in res:
        line += f"  {'fp16 emulation' if 'fp16_emulation' in res else 'parity'} {parity_summary(res)}"
    if res.get("numeric") == "skipped":
        line += f"; numeric check skipped ({res['reason']})"
    return info, line


def _write(target, module, ep, path, spec, inputs, cfg, precision, weights, plan=None) -> dict:
    try:
        if target in ("executorch", "executorch-coreml"):
            return executorch.write(ep, path, spec.name, target, precision)
        if target == "coreml":
            return coreml.write(ep, path, spec, cfg, precision, weights, plan=plan)
        return onnx.write(onnx.prepare(module, ep, inputs, spec.name), path, spec)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "export") from exc


def _verify(target, path, spec, ep, inputs, ref, precision, plan=None) -> dict:
    try:
        if target in ("executorch", "executorch-coreml"):
            return executorch.verify(path, spec, target, inputs, ref, precision)
        if target == "coreml":
            return coreml.verify(path, spec, ep, inputs, ref, precision, plan)
        return onnx.verify(path, spec, inputs, ref)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "verification") from exc
