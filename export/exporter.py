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

from . import coreml, coreml_tracking, executorch, fp16_guard, gates, onnx
from . import plan as plans
from . import precision as mixed
from . import variants
from .common import (DIRECTORY_CHECKSUM_RULE, ExportError, artifact_sha256, artifact_size, example_inputs,
                     parity_summary, quiet_converters, run_eager, torch_inputs, wrap_error)

PRECISIONS = ("fp32", "fp16")
# Targets with an fp16 path; ExecuTorch-XNNPACK and ONNX artifacts are always fp32.
FP16_TARGETS = ("coreml", "executorch-coreml")
# Targets whose memory-attention slot buckets are METHODS of the one memory_attention program
# ("forward" = the full graph, then e.g. "k7p16"), sharing one copy of the weights (executorch.
# write_methods). Other targets write one file per bucket.
METHOD_TARGETS = ("executorch",)


def bucket_method(k: int, p: int) -> str:
    """The method name of a k-memory / p-pointer slot bucket in a multi-method program."""
    return f"k{k}p{p}"


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


class _Calibration:
    """Per-stage inputs the fp16 guard measures: the example inputs plus a short fp32 eager
    tracking run over the calibration frames (computed once, on first use)."""

    def __init__(self, model, caps, variant, log):
        self.model, self.caps, self.variant, self.log = model, caps, variant, log
        self._inputs, self.label = None, ""

    def inputs(self, stage: str) -> list:
        if self._inputs is None:
            frames, label = self.variant.frames()
            t0 = time.perf_counter()
            try:
                self._inputs = fp16_guard.calibration_inputs(self.model, self.caps, frames)
            except Exception as exc:
                raise ExportError(f"the fp16 overflow guard could not track the calibration frames ({label}): "
                                  f"{type(exc).__name__}: {exc}; pass --calibration with readable frames of one size, "
                                  "or export with --precision fp32") from exc
            self.label = f"example inputs + fp32 tracking over {label}" if frames else "example inputs only (no frames)"
            self.log(f"      fp16 guard: calibration tracking over {len(frames)} frame(s) "
                     f"{time.perf_counter() - t0:.1f} s")
        return self._inputs.get(stage, [])


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
    calibration_inputs = _Calibration(model, caps, variant, log)
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
            ep = torch_export(stages[stage], inputs, stage)
            log(f"[{i}/{len(STAGES)}] {stage}: torch.export {time.perf_counter() - t0:.1f} s")
            artifacts[stage], reports[stage] = {}, {"torch_export_s": round(time.perf_counter() - t0, 2)}
            for target in targets:
                rel = f"{stage}{TARGET_SUFFIX[target]}"
                plan = None
                if target == "coreml" and precision == "fp16" and coreml_modes[stage] != "fp32":
                    plan = coreml_plans[stage] = _guard(stage, ep, coreml_modes[stage], inputs,
                                                        calibration_inputs, log)
                if stage == "memory_attention" and bucket_list and target in METHOD_TARGETS and \
                        not variant.compresses(stage, target):  # quantised buckets stay files (quantize.write)
                    # its own exported program: lowering for the other targets may change `ep` in place
                    deferred[target] = (torch_export(stages[stage], inputs, stage), inputs, ref)
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
                info, line = _export_one(target, stages[stage], ep, tmp / rel, spec, inputs, ref, cfg,
                                         stage_prec, weights, verify, plan, allow_failing_gates)
                if plan is not None and verify:
                    cal = calibration_inputs.inputs(stage)
                    if cal:
                        gate = coreml_frame_gates[stage] = _frames_gate(plan, spec, reference[stage], cal,
                                                                        calibration_inputs.label)
                        line += f"; calibration inputs min PSNR {gate['min_psnr_db']:.1f} dB"
                        info["verify_calibration"] = gate
                        if not gate["ok"]:
                            line += "  GATE MISSED"
                log(line)
                artifacts[stage][target] = rel
                reports[stage][target] = info
            fault_point("export:stage")
        coreml_missed, coreml_tracking_report = _coreml_gates(
            model, caps, {} if variant.compress != "fp16" else coreml_plans, coreml_frame_gates, reports, verify,
            gate_cases, log)
        if coreml_missed and not allow_failing_gates:
            raise ExportError("accuracy gate missed: " + "; ".join(coreml_missed) +
                              " (or pass --allow-failing-gates to write the variant marked failing)")
        buckets, programs = [], {t: {"forward": d} for t, d in deferred.items()}
        for k, p in bucket_list:
            bucket = _export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights,
                                    verify, tmp, log, coreml_modes, calibration_inputs, allow_failing_gates, variant,
                                    programs)
            buckets.append(bucket)
            reports[f"memory_attention.k{k}p{p}"] = bucket.pop("reports")
        for target, methods in programs.items():
            rel = artifacts["memory_attention"][target]
            reports["memory_attention"][target], method_reports = _export_methods(
                target, methods, tmp / rel, specs["memory_attention"], cfg, target_precision(target, precision), verify, log)
            for b in buckets:
                reports[f"memory_attention.k{b['memory_slots']}p{b['ptr_slots']}"][target] = \
                    method_reports[b["methods"][target]]
        for target in targets:
            if buckets and variant.compresses("memory_attention", target):
                _quantized_buckets_as_methods(target, buckets, artifacts, stages, examples, variant, tmp, log)
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
        _record_coreml_plans(doc, coreml_modes, coreml_plans, reports, coreml_tracking_report, coreml_missed,
                             precision, "coreml" in targets)
        _record_buckets(doc, variant, reports)
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


def bucket_key(k: int, p: int) -> str:
    """Name of a slot bucket in the export report and the variant's gates."""
    return f"memory_attention.k{k}p{p}"


def _export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights, verify, tmp, log,
                   coreml_modes=None, calibration=None, allow_failing=False, variant=None, programs=None):
    """One memory-attention slot bucket for every target; returns its manifest entry (+ reports).
    A target the variant quantises gets the bucket quantised as the full memory attention is
    (variants.Variant.export_stage: same scheme, kept-fp32 layers and gates; own file). For a
    target in `programs` ({target: {method: (ep, inputs, ref)}}, the METHOD_TARGETS) the bucket
    is added there as a method of memory_attention's program, written afterwards by
    _export_methods; the others get their own file."""
    spec = memory_attention_spec(cfg, k, p)
    inputs = bucket_inputs(examples["memory_attention"], k, p)
    ref = run_eager(reference["memory_attention"], inputs)
    entry = {"memory_slots": k, "ptr_slots": p, "artifacts": {}, "reports": {}}
    ep = None
    own_ep = None  # the methods' own exported program (lowering for other targets may change `ep`)
    for target in targets:
        if programs and target in programs:
            own_ep = own_ep or torch_export(stages["memory_attention"], inputs, "memory_attention")
            programs[target][bucket_method(k, p)] = (own_ep, inputs, ref)
            entry["artifacts"][target] = f"memory_attention{TARGET_SUFFIX[target]}"
            entry.setdefault("methods", {})[target] = bucket_method(k, p)
            continue
        rel = f"memory_attention.k{k}p{p}{TARGET_SUFFIX[target]}"
        if variant is not None and variant.compresses("memory_attention", target):
            log(f"[bucket] memory_attention k={k} p={p}: {variant.plan['memory_attention']}")
            info, line = variant.export_stage(stages["memory_attention"], reference["memory_attention"], None,
                                              tmp / rel, spec, inputs, ref, target, verify, cfg, weights,
                                              key=bucket_key(k, p))
            log(line)
            entry["artifacts"][target] = rel
            entry["reports"][target] = info
            continue
        if ep is None:
            t0 = time.perf_counter()
            ep = torch_export(stages["memory_attention"], inputs, "memory_attention")
            log(f"[bucket] memory_attention k={k} p={p}: torch.export {time.perf_counter() - t0:.1f} s")
        mode = (coreml_modes or {}).get("memory_attention", "fp16")
        plan = None
        if target == "coreml" and precision == "fp16" and mode != "fp32":
            cal = [bucket_cut(a, k, p) for a in calibration.inputs("memory_attention")] if calibration else []
            plan = _guard("memory_attention", ep, mode, inputs, None, log, [a for a in cal if a is not None])
        stage_prec = "fp32" if target == "coreml" and mode == "fp32" else target_precision(target, precision)
        info, line = _export_one(target, stages["memory_attention"], ep, tmp / rel, spec, inputs, ref, cfg,
                                 stage_prec, weights, verify, plan, allow_failing)
        log(line)
        entry["artifacts"][target] = rel
        entry["reports"][target] = info
    return entry


def _quantized_buckets_as_methods(target, buckets, artifacts, stages, examples, variant, tmp, log) -> None:
    """Rewrite a quantised memory attention and its (gated) bucket files as methods of one
    program, as the fp32 buckets are: one copy of the int8 weights instead of one per file.
    Each method must give its gated file's outputs (the same quantised graph, lowered again);
    then the bucket files go and the manifest entries name the methods."""
    from . import quantize
    from .executorch import load

    scheme = variant.plan["memory_attention"]
    rel = artifacts["memory_attention"][target]
    inputs = {"forward": examples["memory_attention"]}
    for b in buckets:
        inputs[bucket_method(b["memory_slots"], b["ptr_slots"])] = bucket_inputs(
            examples["memory_attention"], b["memory_slots"], b["ptr_slots"])
    files = {"forward": tmp / rel, **{bucket_method(b["memory_slots"], b["ptr_slots"]): tmp / b["artifacts"][target]
                                      for b in buckets}}

    def run(path, method, arrays):
        program = load(path)[1]
        out = program.load_method(method).execute(list(torch_inputs(arrays)))
        return [o.detach().numpy().copy() for o in out]

    gated = {name: run(f, "forward", inputs[name]) for name, f in files.items()}
    t0 = time.perf_counter()
    combined = tmp / (rel + ".methods")
    try:
        quantize.write_methods(stages["memory_attention"], inputs, combined, "memory_attention", scheme,
                               plans.keep_fp32_layers("memory_attention", scheme))
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, "memory_attention", target, f"{scheme} slot buckets as methods") from exc
    for name, want in gated.items():
        got = run(combined, name, inputs[name])
        worst = max(float(np.abs(g - w).max() / (np.abs(w).max() + 1e-12)) for g, w in zip(got, want))
        if worst > 1e-4:
            raise ExportError(f"the {scheme} method {name} differs from its gated program by {worst:.2e} of the "
                              "peak; export without slot buckets", "memory_attention", target)
    for name, f in files.items():
        f.unlink()
    combined.rename(tmp / rel)
    for b in buckets:
        b["artifacts"][target] = rel
        b.setdefault("methods", {})[target] = bucket_method(b["memory_slots"], b["ptr_slots"])
    log(f"      {target:17s} {time.perf_counter() - t0:6.1f} s {artifact_size(tmp / rel) / 2**20:8.2f} MiB  "
        f"memory_attention {scheme} with {len(buckets)} slot bucket(s) as methods (each equal to its gated program)")


def _record_buckets(doc: dict, variant, reports: dict) -> None:
    """Per-artifact precision records of the slot buckets (stages.memory_attention.slot_buckets[i]
    .precision): a quantised bucket's own record (scheme, layers, its PSNR gate); any other bucket
    has the full memory attention's precision, with its own parity check."""
    st = doc["stages"]["memory_attention"]
    for b in st.get("slot_buckets", []):
        key = bucket_key(b["memory_slots"], b["ptr_slots"])
        recs = {}
        for target in b["artifacts"]:
            rec = variant.artifact_record(key, target)
            if rec is None:
                full = st.get("precision", {}).get(target, {})
                rec = {"precision": full.get("precision", "fp32"), "scheme": full.get("scheme", "fp32")}
                ver = reports.get(key, {}).get(target, {}).get("verify")
                if ver and "gate" in ver:
                    rec["gates"] = [{"on": "example inputs", "gate": ver["gate"], "ok": ver["ok"]}]
            recs[target] = rec
        b["precision"] = recs


def _export_methods(target, methods: dict, path: Path, spec, cfg, precision: str, verify: bool, log) -> tuple:
    """Write the memory attention and its slot buckets as methods of one program (`methods`:
    {name: (exported program, example inputs, eager outputs)}, "forward" first) and check every
    method against eager. Returns (report of the program, {method: its report})."""
    t1 = time.perf_counter()
    eps = {name: m[0] for name, m in methods.items()}
    try:
        info = executorch.write_methods(eps, path, spec.name, target, precision)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "export") from exc
    info["export_s"] = round(time.perf_counter() - t1, 2)
    info["bytes"] = artifact_size(path)
    log(f"      {target:17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB  memory_attention with "
        f"{len(eps) - 1} slot bucket(s) as methods ({', '.join(eps)})  delegated "
        f"{100 * info['delegated_fraction']:.0f}% of nodes")
    per = {name: {"method": name, "artifact": Path(path).name, **info.get("methods", {}).get(name, {})}
           for name in eps}
    if not verify:
        return info, per
    for name, (ep, inputs, ref) in methods.items():
        mspec = spec if name == "forward" else memory_attention_spec(cfg, inputs[1].shape[0], inputs[4].shape[0])
        t2 = time.perf_counter()
        try:
            res = executorch.verify(path, mspec, target, inputs, ref, precision, method=name)
        except ExportError:
            raise
        except Exception as exc:
            raise wrap_error(exc, spec.name, target, f"verification of method {name}") from exc
        if "outputs" in res and not res["ok"]:
            bad = [k for k, v in res["outputs"].items() if not v.get("ok")]
            raise ExportError(f"parity check failed on {', '.join(bad)} of method {name} ({res['gate']}; "
                              f"{parity_summary(res)})", spec.name, target)
        rep = info if name == "forward" else per[name]
        rep["verify"], rep["verify_s"] = res, round(time.perf_counter() - t2, 2)
        if "outputs" in res:
            log(f"      {target:17s} method {name:8s} parity {parity_summary(res)}")
    return info, per


def bucket_cut(arrays: list, k: int, p: int):
    """Full-capacity memory-attention inputs cut to a k/p-slot bucket (valid slots come first),
    or None when more slots are valid than the bucket holds."""
    feats, mem, tpos, mem_valid, ptrs, ptr_valid = arrays
    if np.count_nonzero(mem_valid[k:]) or np.count_nonzero(ptr_valid[p:]):
        return None
    return [feats, mem[:k], tpos[:k], mem_valid[:k], ptrs[:p], ptr_valid[:p]]


def _guard(stage, ep, mode, inputs, calibration, log, extra=None):
    """The Core ML fp16 plan of one stage: the overflow guard measured on the example inputs
    and the calibration inputs (guarded modes), logged."""
    cal = list(extra) if extra is not None else calibration.inputs(stage)
    label = calibration.label if calibration is not None else "example inputs + calibration inputs cut to the bucket"
    t0 = time.perf_counter()
    plan = fp16_guard.plan_stage(stage, ep, mode, [inputs, *cal], label)
    if mode in mixed.GUARDED_MODES:
        worst = max(plan.flags.items(), key=lambda kv: kv[1]["max_abs"], default=None)
        what = (f"{len(plan.flags)} op(s) kept fp32, worst {worst[0]}: {worst[1]['reason']}" if worst
                else f"no op at risk (max |x| {plan.max_abs:.3g})")
        log(f"      fp16 guard ({mode}) on {1 + len(cal)} input set(s) {time.perf_counter() - t0:.1f} s: {what}")
    return plan


def _frames_gate(plan, spec, reference, cal_inputs, label) -> dict:
    """fp16 PSNR gate of the emulated plan over every calibration input set (stacked)."""
    refs = [run_eager(reference, a) for a in cal_inputs]
    gots = [plan.emulate(torch_inputs(a)) for a in cal_inputs]
    n = len(spec.outputs)
    ref_all = [np.concatenate([np.ravel(r[i]) for r in refs]) for i in range(n)]
    got_all = [np.concatenate([np.ravel(g[i]) for g in gots]) for i in range(n)]
    gate = gates.stage_gate(ref_all, got_all, [t.name for t in spec.outputs], "fp16",
                            f"calibration inputs ({label}; emulated Core ML fp16 plan {plan.mode})")
    gate.update(precision="fp16", fix=_fp16_fix(spec.name, plan.mode))
    return gate


def _fp16_fix(stage: str, mode: str) -> str:
    if mode == "fp16-unguarded":
        return f"--stage-precision {stage}=fp16 (the guarded default keeps overflowing ops in fp32)"
    if mode == "fp16":
        return f"--stage-precision {stage}=fp16-islands (or {stage}=fp32)"
    return f"--stage-precision {stage}=fp32"


def _coreml_gates(model, caps, coreml_plans, frame_gates, reports, verify, gate_cases, log) -> tuple:
    """(missed-gate lines, chained-tracking report) of the Core ML fp16 plans (emulated):
    the per-stage PSNR gates on example and calibration inputs, then chained tracking."""
    if not coreml_plans or not verify:
        return [], None
    stage_gates = {}
    for s, plan in coreml_plans.items():
        res = reports[s].get("coreml", {}).get("verify", {})
        if "outputs" in res:
            stage_gates.setdefault((s, "coreml"), []).append(
                {"on": "example inputs (emulated)", "ok": res["ok"], "outputs": res["outputs"], "precision": "fp16",
                 "fix": _fp16_fix(s, plan.mode)})
        if s in frame_gates:
            stage_gates.setdefault((s, "coreml"), []).append(frame_gates[s])
    missed = gates.failures(stage_gates, None)
    cases = gates.case_dirs(gate_cases)
    if not cases:
        return missed, None
    t0 = time.perf_counter()
    report = coreml_tracking.tracking_gate(model, caps, coreml_plans, cases)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    bad = [s for s, p in coreml_plans.items() if p.mode == "fp16-unguarded"]
    report["fix"] = ("the guarded plan: --stage-precision " + ",".join(f"{s}=fp16" for s in bad) if bad else
                     "the fallback plan: --stage-precision " + ",".join(f"{s}=fp16-islands" for s in coreml_plans))
    for name, c in report["cases"].items():
        log(f"      coreml fp16 tracking (emulated) {name}: mean IoU {c.get('mean_iou', 0):.4f}, "
            f"min {c.get('min_iou', 0):.4f} ({'ok' if c['ok'] else 'MISSED'})")
    missed += [line.replace("tracking case", "Core ML fp16 tracking (emulated) case")
               for line in gates.failures({}, report)]
    return missed, report


def _record_coreml_plans(doc, modes, coreml_plans, reports, tracking, missed, precision, has_coreml) -> None:
    """Per-artifact Core ML precision records (plan, guard flags, fp32 op/cast census) and
    the emulated gates into the manifest."""
    if not has_coreml:
        return
    for stage in STAGES:
        rec = doc["stages"][stage].get("precision", {}).get("coreml")
        if rec is None:
            continue
        info = reports[stage].get("coreml", {})
        plan = coreml_plans.get(stage)
        if plan is not None:
            rec["fp16_plan"] = plan.record()
            if rec.get("precision") == "fp16":
                rec["scheme"] = f"{mixed.describe(plan.mode)} (export/precision.py)"
            gate = info.get("verify_calibration")
            if gate is not None:
                rec.setdefault("gates", []).append({"on": gate["on"], "gate": gate["gate"], "ok": gate["ok"],
                                                    "min_psnr_db": gate["min_psnr_db"]})
        elif precision == "fp16" and modes.get(stage) == "fp32":
            rec.update(precision="fp32", scheme="fp32 (--stage-precision)")
        if "casts" in info:
            rec["saved_program"] = {k: info[k] for k in ("mil_ops", "fp32_ops", "casts")}
    if missed:  # written only with --allow-failing-gates
        var = doc.setdefault("variant", {})
        var["status"] = "failing"
        var["failures"] = list(var.get("failures") or []) + list(missed)
    if tracking is not None or missed:
        doc.setdefault("variant", {})["coreml_fp16"] = {
            "tracking_gate": tracking, "failures": missed,
            "status": "failing" if missed else "passed",
            "note": "Core ML fp16 emulated in PyTorch (Core ML cannot predict on Linux)"}


def _export_one(target, module, ep, path, spec, inputs, ref, cfg, precision, weights, verify, plan=None,
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
        fix = f"; a plan that passes: {_fp16_fix(spec.name, plan.mode)}" if plan is not None else ""
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
