"""`export_model`: every stage of a model to every requested target, one manifest, atomically.

For each stage of `contracts.STAGES`: torch.export once, then each target writes its
artifact, reads it back and compares it with eager PyTorch on realistic example inputs
(`verify`). Everything goes to a hidden partial folder next to OUT that replaces OUT
only when all stages, checks and the manifest are done, so OUT is never half-written
(etam_mobile/atomic.py: --force replaces only an earlier export; stale partial folders go).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from etam_mobile import atomic
from etam_mobile.contracts import STAGES, Capacities, memory_attention_spec, stage_specs
from etam_mobile.contracts import slot_buckets as contract_slot_buckets
from etam_mobile.manifest import MANIFEST_NAME, TARGET_SUFFIX, TARGETS, build_manifest, producer_versions, write_manifest
from etam_mobile.runtime.mask_prompt import mask_prompt_constants
from etam_mobile.testhooks import fault_point

from . import coreml, executorch, onnx
from . import variants
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
    """Refuse to replace something that is not ours (even with force), or ours without force."""
    try:
        atomic.check_destination(Path(out), force, "an export", is_export_folder, MANIFEST_NAME)
    except atomic.OutputError as exc:
        raise ExportError(str(exc)) from None


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
                 force: bool = False, verify: bool = True, quantize: str = "none", stage_precision=None,
                 calibration=None, allow_failing_gates: bool = False, gate_cases=None, compress: str = "fp16",
                 slot_buckets: bool = True) -> dict:
    """Export the four stages of `model` (an EfficientTAM with `.cfg` and `.stages()`) to OUT.

    precision: "fp16" (default) makes the Core ML targets compute in fp16 with the fragile
    ops in fp32 (export/precision.py); "fp32" keeps everything fp32. ExecuTorch-XNNPACK and
    ONNX artifacts are fp32 either way. Returns the manifest written to OUT/manifest.json.

    quantize / stage_precision / calibration / allow_failing_gates / gate_cases: compressed
    ExecuTorch variants and their accuracy gates (export/variants.py).
    slot_buckets: also export the memory attention at the smaller slot counts of
    contracts.slot_buckets (listed in the manifest; the runtimes run the smallest that fits).
    Compressed variants are written without buckets for now (the buckets would be fp32 beside a
    quantised full graph, and their gates are not measured).
    """
    targets = parse_targets(targets)
    precision = check_precision(precision)
    variant = variants.Variant.create(targets, quantize, stage_precision, calibration, allow_failing_gates,
                                      gate_cases, compress)
    out = Path(out)
    check_destination(out, force)
    cfg, caps = model.cfg, capacities
    weights = dict(weights_info or getattr(model, "weights_info", None) or {"source": "not recorded by the caller"})
    log = _Log(quiet)
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    reference = {k: v.eval() for k, v in model.stages().items()}  # parity is checked against eager's form
    specs = stage_specs(cfg, caps)
    examples = example_inputs(cfg, caps, stages)
    artifacts, reports = {}, {}
    atomic.clean_stale(out)
    tmp = None
    t_all = time.perf_counter()
    what = precision if not variant.active else variant.describe()
    log(f"exporting {cfg.name} ({', '.join(targets)}, {what}) -> {out}")
    try:
        tmp = atomic.make_partial(out)
        for i, stage in enumerate(STAGES, 1):
            spec, inputs = specs[stage], examples[stage]
            ref = run_eager(reference[stage], inputs)
            t0 = time.perf_counter()
            ep = torch_export(stages[stage], inputs, stage)
            log(f"[{i}/{len(STAGES)}] {stage}: torch.export {time.perf_counter() - t0:.1f} s")
            artifacts[stage], reports[stage] = {}, {"torch_export_s": round(time.perf_counter() - t0, 2)}
            for target in targets:
                rel = f"{stage}{TARGET_SUFFIX[target]}"
                if variant.compresses(stage, target):
                    info, line = variant.export_stage(stages[stage], reference[stage], ep, tmp / rel, spec, inputs,
                                                      ref, target, verify, cfg, weights)
                    log(line)
                    artifacts[stage][target] = rel
                    reports[stage][target] = info
                    continue
                info, line = _export_one(target, stages[stage], ep, tmp / rel, spec, inputs, ref, cfg,
                                         target_precision(target, precision), weights, verify)
                log(line)
                artifacts[stage][target] = rel
                reports[stage][target] = info
            fault_point("export:stage")
        buckets = []
        for k, p in (contract_slot_buckets(cfg, caps) if slot_buckets and not variant.active else []):
            bucket = _export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights,
                                    verify, tmp, log)
            buckets.append(bucket)
            reports[f"memory_attention.k{k}p{p}"] = bucket.pop("reports")
        rels = [rel for per in artifacts.values() for rel in per.values()]
        rels += [rel for b in buckets for rel in b["artifacts"].values()]
        checksums = {rel: artifact_sha256(tmp / rel) for rel in rels}
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
                             producers=producer_versions(targets, extra["versions"]), slot_buckets=buckets,
                             mask_prompt=mask_prompt_constants(model))
        variant.finish(doc, tmp, model, caps, reports, target_precision, precision, verify, log)
        write_manifest(tmp, doc)
        fault_point("export:manifest")
        atomic.commit(tmp, out)
    except BaseException as exc:
        atomic.remove_partial(tmp)
        full = atomic.disk_full_error(exc, out) if isinstance(exc, Exception) else None
        if full is not None:
            raise ExportError(str(full)) from exc
        if isinstance(exc, (ExportError, KeyboardInterrupt)):
            raise
        raise ExportError(f"{type(exc).__name__}: {exc}") from exc
    log(f"done in {time.perf_counter() - t_all:.1f} s -> {out}")
    return doc


def bucket_inputs(full: list, k: int, p: int) -> list:
    """The full memory-attention example inputs cut to k memory / p pointer slots, keeping some
    padding (k - 1 memories valid when k > 1, half the pointers) so masking is exercised."""
    feats, mem, tpos, mem_valid, ptrs, ptr_valid = full
    mem_valid = np.zeros((k,), np.float32)
    mem_valid[: max(1, k - 1)] = 1.0
    ptr_valid = np.zeros((p,), np.float32)
    ptr_valid[: max(1, p // 2)] = 1.0
    return [feats, np.ascontiguousarray(mem[:k]), np.ascontiguousarray(tpos[:k]), mem_valid,
            np.ascontiguousarray(ptrs[:p]), ptr_valid]


def _export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights, verify, tmp, log):
    """One memory-attention slot bucket for every target; returns its manifest entry (+ reports)."""
    spec = memory_attention_spec(cfg, k, p)
    inputs = bucket_inputs(examples["memory_attention"], k, p)
    ref = run_eager(reference["memory_attention"], inputs)
    t0 = time.perf_counter()
    ep = torch_export(stages["memory_attention"], inputs, "memory_attention")
    log(f"[bucket] memory_attention k={k} p={p}: torch.export {time.perf_counter() - t0:.1f} s")
    entry = {"memory_slots": k, "ptr_slots": p, "artifacts": {}, "reports": {}}
    for target in targets:
        rel = f"memory_attention.k{k}p{p}{TARGET_SUFFIX[target]}"
        info, line = _export_one(target, stages["memory_attention"], ep, tmp / rel, spec, inputs, ref, cfg,
                                 target_precision(target, precision), weights, verify)
        log(line)
        entry["artifacts"][target] = rel
        entry["reports"][target] = info
    return entry


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
