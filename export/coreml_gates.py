"""The Core ML fp16 plans of an export: per stage the overflow guard measured on the example and
calibration inputs (`guard`, `Calibration`), the PSNR gates of the emulated plan and chained
tracking with it (`frames_gate`, `emulated_gates`), and their manifest records (`record_plans`).

Why its own module: Core ML cannot predict on Linux, so its fp16 artifacts are judged by
emulating their plan in PyTorch; that is a job of its own next to writing the artifacts
(exporter.py, artifact.py).
"""
from __future__ import annotations

import time

import numpy as np

from etam_mobile.contracts import STAGES

from . import coreml_tracking, fp16_guard, gates
from . import precision as mixed
from .common import ExportError, run_eager, torch_inputs


class Calibration:
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


def guard(stage, ep, mode, inputs, calibration, log, extra=None):
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


def frames_gate(plan, spec, reference, cal_inputs, label) -> dict:
    """fp16 PSNR gate of the emulated plan over every calibration input set (stacked)."""
    refs = [run_eager(reference, a) for a in cal_inputs]
    gots = [plan.emulate(torch_inputs(a)) for a in cal_inputs]
    n = len(spec.outputs)
    ref_all = [np.concatenate([np.ravel(r[i]) for r in refs]) for i in range(n)]
    got_all = [np.concatenate([np.ravel(g[i]) for g in gots]) for i in range(n)]
    gate = gates.stage_gate(ref_all, got_all, [t.name for t in spec.outputs], "fp16",
                            f"calibration inputs ({label}; emulated Core ML fp16 plan {plan.mode})")
    gate.update(precision="fp16", fix=fp16_fix(spec.name, plan.mode))
    return gate


def fp16_fix(stage: str, mode: str) -> str:
    if mode == "fp16-unguarded":
        return f"--stage-precision {stage}=fp16 (the guarded default keeps overflowing ops in fp32)"
    if mode == "fp16":
        return f"--stage-precision {stage}=fp16-islands (or {stage}=fp32)"
    return f"--stage-precision {stage}=fp32"


def emulated_gates(model, caps, coreml_plans, frame_gates, reports, verify, gate_cases, log) -> tuple:
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
                 "fix": fp16_fix(s, plan.mode)})
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


def record_plans(doc, modes, coreml_plans, reports, tracking, missed, precision, has_coreml) -> None:
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
