"""`export_model`: every stage of a model to every requested target, one manifest, atomically.

For each stage of `contracts.STAGES`: torch.export once, then each target writes its
artifact, reads it back and compares it with eager PyTorch on realistic example inputs
(`verify`). Everything goes to a hidden partial folder next to OUT that replaces OUT
only when all stages, checks and the manifest are done, so OUT is never half-written
(etam_mobile/atomic.py: --force replaces only an earlier export; stale partial folders go).
This module is the driver: artifact.py writes and checks one artifact, buckets.py the memory
attention's slot buckets, coreml_gates.py guards and gates the Core ML fp16 plans.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from etam_mobile import atomic
from etam_mobile.contracts import STAGES, Capacities, stage_specs
from etam_mobile.contracts import slot_buckets as contract_slot_buckets
from etam_mobile.manifest import MANIFEST_NAME, TARGET_SUFFIX, TARGETS, build_manifest, producer_versions, write_manifest
from etam_mobile.runtime.mask_prompt import mask_prompt_constants
from etam_mobile.testhooks import fault_point

from . import artifact, coreml_gates, variants
from . import plan as plans
from .artifact import export_one, target_precision
from .buckets import METHOD_TARGETS, export_bucket, export_methods, quantized_methods, record_buckets
from .common import DIRECTORY_CHECKSUM_RULE, ExportError, artifact_sha256, example_inputs, run_eager

PRECISIONS = ("fp32", "fp16")


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


def check_coreml_plan(targets, stage_precision, precision: str) -> dict:
    """{stage: Core ML compute plan} (precision.py); a Core ML-only plan without the coreml
    target, or with --precision fp32, is refused (it would silently do nothing)."""
    modes = plans.coreml_plan(stage_precision)
    odd = {s: m for s, m in modes.items() if m not in ("fp16", "fp32")}
    if odd and ("coreml" not in targets or precision != "fp16"):
        stage, mode = next(iter(odd.items()))
        why = "the coreml target is not exported" if "coreml" not in targets else "--precision fp32 is given"
        raise ExportError(f"--stage-precision {stage}={mode} is a Core ML fp16 plan but {why}; add coreml to "
                          "--targets with --precision fp16, or drop that part")
    return modes


def is_export_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def check_destination(out: Path, force: bool) -> None:
    """Refuse to replace something that is not ours (even with force), or ours without force."""
    try:
        atomic.check_destination(Path(out), force, "an export", is_export_folder, MANIFEST_NAME)
    except atomic.OutputError as exc:
        raise ExportError(str(exc)) from None


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

    precision: "fp16" (default) makes the Core ML targets compute in fp16, the coreml target
    keeping in fp32 only the ops its overflow guard flags on the calibration inputs
    (export/fp16_guard.py; per-stage plans via stage_precision, export/precision.py); "fp32"
    keeps everything fp32. ExecuTorch-XNNPACK and
    ONNX artifacts are fp32 either way. Returns the manifest written to OUT/manifest.json.

    quantize / stage_precision / calibration / allow_failing_gates / gate_cases: compressed
    ExecuTorch variants and their accuracy gates (export/variants.py).
    slot_buckets: also export the memory attention at the smaller slot counts of
    contracts.slot_buckets (listed in the manifest; the runtimes run the smallest that fits).
    A quantised variant quantises its buckets like its full memory attention (same scheme and
    plan, each gated); Core ML weight-compressed variants are written without buckets for now.
    """
    targets = parse_targets(targets)
    precision = check_precision(precision)
    variant = variants.Variant.create(targets, quantize, stage_precision, calibration, allow_failing_gates,
                                      gate_cases, compress)
    coreml_modes = check_coreml_plan(targets, stage_precision, precision)
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
    calibration_inputs = coreml_gates.Calibration(model, caps, variant, log)
    coreml_plans, coreml_frame_gates = {}, {}
    atomic.clean_stale(out)
    tmp = None
    t_all = time.perf_counter()
    what = precision if not variant.active else variant.describe()
    log(f"exporting {cfg.name} ({', '.join(targets)}, {what}) -> {out}")
    try:
        tmp = atomic.make_partial(out)
        bucket_list = contract_slot_buckets(cfg, caps) if slot_buckets and variant.compress == "fp16" else []
        deferred = {}  # target -> the full memory attention, written with its buckets as methods
        for i, stage in enumerate(STAGES, 1):
            spec, inputs = specs[stage], examples[stage]
            ref = run_eager(reference[stage], inputs)
            t0 = time.perf_counter()
            ep = artifact.torch_export(stages[stage], inputs, stage)
            log(f"[{i}/{len(STAGES)}] {stage}: torch.export {time.perf_counter() - t0:.1f} s")
            artifacts[stage], reports[stage] = {}, {"torch_export_s": round(time.perf_counter() - t0, 2)}
            for target in targets:
                rel = f"{stage}{TARGET_SUFFIX[target]}"
                plan = None
                if target == "coreml" and precision == "fp16" and coreml_modes[stage] != "fp32":
                    plan = coreml_plans[stage] = coreml_gates.guard(stage, ep, coreml_modes[stage], inputs,
                                                                    calibration_inputs, log)
                if stage == "memory_attention" and bucket_list and target in METHOD_TARGETS:
                    # written with its buckets as methods of one program below (quantised or not);
                    # its own exported program: lowering for the other targets may change `ep` in place
                    # (none when quantised: the quantiser exports the module itself)
                    quantized = variant.compresses(stage, target)
                    deferred[target] = (None if quantized else artifact.torch_export(stages[stage], inputs, stage),
                                        inputs, ref)
                    artifacts[stage][target] = rel
                    continue
                if variant.compresses(stage, target):
                    info, line = variant.export_stage(stages[stage], reference[stage], ep, tmp / rel, spec, inputs,
                                                      ref, target, verify, cfg, weights, coreml_plan=plan)
                    log(line)
                    artifacts[stage][target] = rel
                    reports[stage][target] = info
                    continue
                if target == "coreml" and variant.compress != "fp16":
                    variant.coreml_emulated[stage] = plan  # uncompressed stage of a compressed folder: fp16 plan
                stage_prec = "fp32" if target == "coreml" and coreml_modes[stage] == "fp32" else \
                    target_precision(target, precision)
                info, line = export_one(target, stages[stage], ep, tmp / rel, spec, inputs, ref, cfg,
                                        stage_prec, weights, verify, plan, allow_failing_gates)
                if plan is not None and verify:
                    cal = calibration_inputs.inputs(stage)
                    if cal:
                        gate = coreml_frame_gates[stage] = coreml_gates.frames_gate(
                            plan, spec, reference[stage], cal, calibration_inputs.label)
                        line += f"; calibration inputs min PSNR {gate['min_psnr_db']:.1f} dB"
                        info["verify_calibration"] = gate
                        if not gate["ok"]:
                            line += "  GATE MISSED"
                log(line)
                artifacts[stage][target] = rel
                reports[stage][target] = info
            fault_point("export:stage")
        coreml_missed, coreml_tracking_report = coreml_gates.emulated_gates(
            model, caps, {} if variant.compress != "fp16" else coreml_plans, coreml_frame_gates, reports, verify,
            gate_cases, log)
        if coreml_missed and not allow_failing_gates:
            raise ExportError("accuracy gate missed: " + "; ".join(coreml_missed) +
                              " (or pass --allow-failing-gates to write the variant marked failing)")
        buckets, programs = [], {t: {"forward": d} for t, d in deferred.items()}
        for k, p in bucket_list:
            bucket = export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights,
                                   verify, tmp, log, coreml_modes, calibration_inputs, allow_failing_gates, variant,
                                   programs)
            buckets.append(bucket)
            reports[f"memory_attention.k{k}p{p}"] = bucket.pop("reports")
        for target, methods in programs.items():
            rel = artifacts["memory_attention"][target]
            if variant.compresses("memory_attention", target):
                reports["memory_attention"][target], method_reports = quantized_methods(
                    target, methods, tmp / rel, specs["memory_attention"], cfg, stages["memory_attention"], variant,
                    verify, log)
            else:
                reports["memory_attention"][target], method_reports = export_methods(
                    target, methods, tmp / rel, specs["memory_attention"], cfg, target_precision(target, precision),
                    verify, log)
            for b in buckets:
                reports[f"memory_attention.k{b['memory_slots']}p{b['ptr_slots']}"][target] = \
                    method_reports[b["methods"][target]]
        rels = [rel for per in artifacts.values() for rel in per.values()]
        rels += [rel for b in buckets for rel in b["artifacts"].values()]
        checksums = {rel: artifact_sha256(tmp / rel) for rel in dict.fromkeys(rels)}
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
        coreml_gates.record_plans(doc, coreml_modes, coreml_plans, reports, coreml_tracking_report, coreml_missed,
                                  precision, "coreml" in targets)
        record_buckets(doc, variant, reports)
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
