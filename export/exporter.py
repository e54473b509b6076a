"""`export_model`: every stage of a model to every requested target, one manifest, atomically.

For each stage of `contracts.STAGES`: torch.export once, then each target writes its
artifact, reads it back and compares it with eager PyTorch on realistic example inputs
(`verify`). Everything goes to a hidden temporary folder next to OUT that replaces OUT
only when all stages, checks and the manifest are done, so OUT is never half-written.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from etam_mobile.contracts import STAGES, Capacities, stage_specs
from etam_mobile.runtime.mask_prompt import mask_prompt_constants
from etam_mobile.manifest import MANIFEST_NAME, TARGET_SUFFIX, TARGETS, build_manifest, write_manifest

from . import coreml, executorch, onnx
from .common import (DIRECTORY_CHECKSUM_RULE, ExportError, artifact_sha256, artifact_size, example_inputs,
                     parity_summary, quiet_converters, run_eager, torch_inputs, wrap_error)

PRECISIONS = ("fp32", "fp16")
# Targets with an fp16 path; ExecuTorch-XNNPACK and ONNX artifacts are always fp32.
FP16_TARGETS = ("coreml", "executorch-coreml")


def parse_targets(targets) -> tuple:
    """'a,b' or an iterable -> validated tuple in the order given (duplicates dropped)."""
    if isinstance(targets, str):
        targets = [t for t in targets.split(",")]
    out = []
    for t in targets:
        t = t.strip()
        if t not in TARGETS:
            raise ExportError(f"unknown target {t!r}; choose from {', '.join(TARGETS)} (comma-separated)")
        if t not in out:
            out.append(t)
    if not out:
        raise ExportError(f"no target given; choose from {', '.join(TARGETS)}")
    return tuple(out)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose fp32 or fp16")
    return precision


def target_precision(target: str, precision: str) -> str:
    return precision if target in FP16_TARGETS else "fp32"


def is_export_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def check_destination(out: Path, force: bool) -> None:
    """Refuse to replace something that is not ours (or ours, without force)."""
    if not out.exists():
        return
    if out.is_dir() and not any(out.iterdir()):
        return
    if force:
        return
    if is_export_folder(out):
        raise ExportError(f"{out} already holds an export; pass --force (force=True) to replace it")
    raise ExportError(f"{out} exists and is not an export folder (no {MANIFEST_NAME}); choose another --out, "
                      "or pass --force to replace it")


def _move_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def torch_export(module: torch.nn.Module, inputs: list, stage: str):
    try:
        with quiet_converters():
            return torch.export.export(module, torch_inputs(inputs), strict=False)
    except Exception as exc:
        raise wrap_error(exc, stage, "torch.export", "torch.export") from exc


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "executorch", "coremltools", "onnx", "onnxscript"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class _Log:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


def export_model(model, out, targets=("executorch", "coreml", "onnx"), precision: str = "fp16",
                 capacities: Capacities = Capacities(), weights_info: dict | None = None, quiet: bool = False,
                 force: bool = False, verify: bool = True) -> dict:
    """Export the four stages of `model` (an EfficientTAM with `.cfg` and `.stages()`) to OUT.

    precision: "fp16" (default) makes the Core ML targets compute in fp16 with the fragile
    ops in fp32 (export/precision.py); "fp32" keeps everything fp32. ExecuTorch-XNNPACK and
    ONNX artifacts are fp32 either way. Returns the manifest written to OUT/manifest.json.
    """
    targets = parse_targets(targets)
    precision = check_precision(precision)
    out = Path(out)
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg, caps = model.cfg, capacities
    weights = dict(weights_info or getattr(model, "weights_info", None) or {"source": "not recorded by the caller"})
    log = _Log(quiet)
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    reference = {k: v.eval() for k, v in model.stages().items()}  # parity is checked against eager's form
    specs = stage_specs(cfg, caps)
    examples = example_inputs(cfg, caps, stages)
    artifacts, reports = {}, {}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    t_all = time.perf_counter()
    log(f"exporting {cfg.name} ({', '.join(targets)}, {precision}) -> {out}")
    try:
        for i, stage in enumerate(STAGES, 1):
            spec, inputs = specs[stage], examples[stage]
            ref = run_eager(reference[stage], inputs)
            t0 = time.perf_counter()
            ep = torch_export(stages[stage], inputs, stage)
            log(f"[{i}/{len(STAGES)}] {stage}: torch.export {time.perf_counter() - t0:.1f} s")
            artifacts[stage], reports[stage] = {}, {"torch_export_s": round(time.perf_counter() - t0, 2)}
            for target in targets:
                rel = f"{stage}{TARGET_SUFFIX[target]}"
                info, line = _export_one(target, stages[stage], ep, tmp / rel, spec, inputs, ref, cfg,
                                         target_precision(target, precision), weights, verify)
                log(line)
                artifacts[stage][target] = rel
                reports[stage][target] = info
        checksums = {rel: artifact_sha256(tmp / rel) for per in artifacts.values() for rel in per.values()}
        extra = {
            "exporter": "etam_export",
            "versions": _versions(),
            "targets": list(targets),
            "target_precision": {t: target_precision(t, precision) for t in targets},
            "checksum_rule": DIRECTORY_CHECKSUM_RULE,
            "verified": bool(verify),
            "export_report": reports,
        }
        doc = build_manifest(cfg, caps, weights, precision, artifacts, checksums, extra,
                             mask_prompt=mask_prompt_constants(model))
        write_manifest(tmp, doc)
        _move_into_place(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (ExportError, KeyboardInterrupt)):
            raise
        raise ExportError(f"{type(exc).__name__}: {exc}") from exc
    log(f"done in {time.perf_counter() - t_all:.1f} s -> {out}")
    return doc


def _export_one(target, module, ep, path, spec, inputs, ref, cfg, precision, weights, verify) -> tuple:
    """Write one artifact and (if asked) read it back and gate it; returns (report, progress line)."""
    t1 = time.perf_counter()
    info = _write(target, module, ep, path, spec, inputs, cfg, precision, weights)
    info["export_s"] = round(time.perf_counter() - t1, 2)
    info["bytes"] = artifact_size(path)
    line = f"      {target:17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB"
    if "delegated_fraction" in info:
        line += f"  delegated {100 * info['delegated_fraction']:.0f}% of nodes"
    if not verify:
        return info, line
    t2 = time.perf_counter()
    res = info["verify"] = _verify(target, path, spec, ep, inputs, ref, precision)
    info["verify_s"] = round(time.perf_counter() - t2, 2)
    if "outputs" in res and not res["ok"]:
        bad = [k for k, v in res["outputs"].items() if not v.get("ok")]
        raise ExportError(f"parity check failed on {', '.join(bad)} ({res['gate']}; {parity_summary(res)})",
                          spec.name, target)
    if "outputs" in res:
        line += f"  {'fp16 emulation' if 'fp16_emulation' in res else 'parity'} {parity_summary(res)}"
    if res.get("numeric") == "skipped":
        line += f"; numeric check skipped ({res['reason']})"
    return info, line


def _write(target, module, ep, path, spec, inputs, cfg, precision, weights) -> dict:
    try:
        if target in ("executorch", "executorch-coreml"):
            return executorch.write(ep, path, spec.name, target, precision)
        if target == "coreml":
            return coreml.write(ep, path, spec, cfg, precision, weights)
        return onnx.write(onnx.prepare(module, ep, inputs, spec.name), path, spec)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "export") from exc


def _verify(target, path, spec, ep, inputs, ref, precision) -> dict:
    try:
        if target in ("executorch", "executorch-coreml"):
            return executorch.verify(path, spec, target, inputs, ref, precision)
        if target == "coreml":
            return coreml.verify(path, spec, ep, inputs, ref, precision)
        return onnx.verify(path, spec, inputs, ref)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "verification") from exc
