"""One export folder = one variant: which artifacts are compressed, how, and which gates
they passed. The exporter calls this for the ExecuTorch stages a plan quantises and once
at the end (`finish`) to run the chained-tracking gate and write the per-artifact
precision records into the manifest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from etam_mobile.contracts import STAGES

from . import coreml_compress, gates, plan as plans, quantize
from .common import ExportError, artifact_size, quiet_converters, run_eager, torch_inputs

# The next-larger Core ML scheme: what a missed gate suggests (measured order, README).
COREML_NEXT = {"palettize4": "--compress palettize6 (or int8)", "palettize6": "--compress int8 (or fp16)",
               "int8": "--compress fp16", "w8a8": "--compress int8 (weights only, fp16 activations)"}
# The lever before a weaker scheme: keep the stage whose outputs are the masks uncompressed.
KEEP_DECODER = "--stage-precision mask_decoder=fp16 (mask decoder uncompressed)"
MAX_CALIBRATION_FRAMES = 4  # real frames per stage gate / calibration pass (export time grows with each)


def load_calibration(folder) -> tuple:
    """(list of RGB uint8 frames, source label) from --calibration or the built-in clip."""
    from etam_mobile.runtime.frames import FrameError, open_frames

    if folder is None:
        cases = gates.case_dirs()
        if not cases:
            return [], "none (no --calibration and no built-in clip)"
        folder, label = cases[0] / "frames", f"built-in clip tests/fixtures/upstream_cases/{cases[0].name}/frames"
    else:
        label = f"--calibration {folder}"
        if not Path(folder).is_dir():
            raise ExportError(f"--calibration {folder} is not a folder; pass a folder of .jpg/.png frames of one size")
    try:
        frames = open_frames(Path(folder))
    except FrameError as exc:
        raise ExportError(f"--calibration: {exc}") from None
    n = min(len(frames), MAX_CALIBRATION_FRAMES)
    step = max(1, len(frames) // n)
    try:
        picked = [frames.rgb(i) for i in range(0, len(frames), step)[:n]]
    except FrameError as exc:  # an unreadable frame: the guard and the gates cannot run on it
        raise ExportError(f"--calibration: {exc}") from None
    return picked, f"{label} ({n} of {len(frames)} frames)"


@dataclass
class Variant:
    quantize: str = "none"
    plan: dict = field(default_factory=dict)
    calibration: str | None = None
    allow_failing: bool = False
    gate_cases: tuple | None = None
    compress: str = "fp16"
    records: dict = field(default_factory=dict)  # (stage, target) -> record
    stage_gates: dict = field(default_factory=dict)  # (stage, target) -> [gate]
    coreml_emulated: dict = field(default_factory=dict)  # stage -> coreml_compress.EmulatedStage
    compress_plan: dict = field(default_factory=dict)  # stage -> Core ML weight scheme ("fp16": uncompressed)
    _frames: list | None = None
    _frames_label: str = ""
    _status: str = "not gated"  # the folder's status once finish() ran

    @classmethod
    def create(cls, targets, quantize_scheme, stage_precision, calibration, allow_failing, gate_cases,
               compress: str = "fp16") -> "Variant":
        scheme = quantize.check_scheme(quantize_scheme or "none")
        compress = coreml_compress.check_scheme(compress or "fp16")
        if compress != "fp16":
            others = [t for t in targets if t not in coreml_compress.COMPRESS_TARGETS]
            if others:
                raise ExportError(f"--compress {compress} applies to the {', '.join(coreml_compress.COMPRESS_TARGETS)} "
                                  f"target only, not {', '.join(others)} (one folder holds one variant); pass "
                                  f"--targets coreml, and export {', '.join(others)} to another --out")
        # With --compress, --stage-precision speaks of the Core ML weights (plan.coreml_compress_plan).
        plan = plans.executorch_plan(scheme, stage_precision if compress == "fp16" else None, "coreml" in targets)
        if any(p != plans.FP32 for p in plan.values()):
            others = [t for t in targets if t not in quantize.QUANTIZE_TARGETS]
            if others:
                raise ExportError(f"--quantize/--stage-precision apply to the {', '.join(quantize.QUANTIZE_TARGETS)} "
                                  f"target only, not {', '.join(others)} (one folder holds one variant); pass "
                                  f"--targets executorch, and export {', '.join(others)} to another --out")
        if calibration is not None:
            p = Path(calibration)
            if not p.is_dir():
                raise ExportError(f"--calibration {p} does not exist or is not a folder; pass a folder of "
                                  ".jpg/.png frames of one size")
        v = cls(scheme, plan, None if calibration is None else str(calibration), bool(allow_failing),
                None if gate_cases is None else tuple(gate_cases), compress)
        if compress != "fp16":
            v.compress_plan = plans.coreml_compress_plan(compress, stage_precision)
            if all(p == "fp16" for p in v.compress_plan.values()):
                raise ExportError(f"--compress {compress} with --stage-precision keeping every stage fp16 compresses "
                                  "nothing; drop --compress, or name a stage to compress")
        if calibration is not None:
            v._frames, v._frames_label = load_calibration(calibration)  # bad folders fail before any work
        return v

    def describe(self) -> str:
        if self.compress != "fp16":
            return f"Core ML {self.compress} weights: {plans.describe(self.compress_plan)}"
        return f"{self.quantize}: {plans.describe(self.plan)}"

    @property
    def active(self) -> bool:
        return self.quantized or self.compress != "fp16"

    @property
    def quantized(self) -> bool:
        return any(p != plans.FP32 for p in self.plan.values())

    def compresses(self, stage: str, target: str) -> bool:
        if target in coreml_compress.COMPRESS_TARGETS:
            return self.compress_plan.get(stage, self.compress) != "fp16"
        return target in quantize.QUANTIZE_TARGETS and self.plan.get(stage, plans.FP32) != plans.FP32

    def frames(self) -> tuple:
        if self._frames is None:
            self._frames, self._frames_label = load_calibration(None)
        return self._frames, self._frames_label

    # ---- one stage ----------------------------------------------------------------------

    def export_stage(self, module, reference, ep, path: Path, spec, inputs, ref, target, verify, cfg, weights,
                     coreml_plan=None, key: str | None = None) -> tuple:
        """One compressed artifact of `spec.name`, gated. `key` names a memory-attention slot
        bucket (buckets.bucket_key): quantised with the stage's scheme and plan, its record and
        gates kept under that name."""
        if target in coreml_compress.COMPRESS_TARGETS:
            return self._export_coreml(ep, path, spec, inputs, ref, verify, cfg, weights, coreml_plan, reference)
        stage, scheme = spec.name, self.plan[spec.name]
        t0 = time.perf_counter()
        keep = plans.keep_fp32_layers(stage, scheme)
        info = quantize.write(module, inputs, path, stage, scheme, skip_fp32=keep)
        info["export_s"] = round(time.perf_counter() - t0, 2)
        info["bytes"] = artifact_size(path)
        line = (f"      {target:17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB  "
                + self._record(key or stage, target, stage, info, keep, bucket=bool(key)))
        if verify:
            line += self._gate(key or stage, target, path, "forward", spec, inputs, ref, reference, info)
        return info, line

    def export_methods(self, module, methods: dict, path: Path, target: str, verify: bool, log) -> dict:
        """The quantised memory attention and its slot buckets as methods of ONE program,
        quantised and lowered once (not once per bucket file and again as methods); each method
        gated and recorded as export_stage does a file. `methods`: {method: (record key, spec,
        example inputs, eager outputs)}, "forward" (the full graph, key = the stage) first.
        Returns {method: report}."""
        stage = next(iter(methods.values()))[1].name
        scheme = self.plan[stage]
        keep = plans.keep_fp32_layers(stage, scheme)
        log(f"      {target:17s} quantising {stage} and {len(methods) - 1} slot bucket(s) ({scheme}) and lowering "
            "them as methods of one program ...")
        t0 = time.perf_counter()
        reports = quantize.write_methods(module, {n: m[2] for n, m in methods.items()}, path, stage, scheme,
                                         skip_fp32=keep, log=log)
        size = artifact_size(path)
        log(f"      {target:17s} {time.perf_counter() - t0:6.1f} s {size / 2**20:8.2f} MiB  {stage} with "
            f"{len(methods) - 1} slot bucket(s) as methods ({', '.join(methods)})")
        for name, (key, spec, inputs, ref) in methods.items():
            info = reports[name]
            info.update(method=name, artifact=Path(path).name, bytes=size,
                        export_s=round(time.perf_counter() - t0, 2) if name == "forward" else None)
            line = f"      {target:17s} method {name:8s} " + self._record(key, target, stage, info, keep,
                                                                          bucket=name != "forward")
            if verify:
                line += self._gate(key, target, path, name, spec, inputs, ref, None, info)
            log(line)
        return reports

    def _record(self, name: str, target: str, stage: str, info: dict, keep: tuple, bucket: bool) -> str:
        """The per-artifact precision record of a quantised graph (`name`: the stage or a
        bucket key); returns its log text."""
        scheme = self.plan[stage]
        info["kept_fp32_layers"] = list(keep)
        self.records[(name, target)] = {
            "precision": scheme, "scheme": quantize.SCHEME_DESCRIPTION[scheme], "layers": info["layers"],
            "fp32_layers": info.get("fp32_layers", []),
            "kept_fp32_layers": list(keep),
            "calibration": "none needed (dynamic activation quantisation)" if scheme != "fp16" else
                           "none needed (weights cast to fp16)"}
        if scheme == "fp16":
            self.records[(name, target)]["io"] = "fp32 inputs/outputs, cast to/from fp16 inside the program"
        if bucket and scheme == "fp16":
            self.records[(name, target)]["quantised_as"] = f"the full {stage} cast to fp16 (same weights)"
        elif bucket:
            self.records[(name, target)]["quantised_as"] = (
                f"the full {stage}: same scheme and kept-fp32 layers; per-channel weight scales come from the "
                "weights alone and activations are quantised per call, so every bucket holds the full graph's "
                "int8/int4 weights and no calibration is shared or needed")
        layers = ", ".join(f"{k} {'/'.join(f'{n} {p}' for p, n in v.items())}" for k, v in info["layers"].items())
        return f"{scheme}: {layers}; delegated {100 * info['delegated_fraction']:.0f}% of nodes"

    def _gate(self, name, target, path, method, spec, inputs, ref, reference, info) -> str:
        """PSNR gates of one quantised graph (method `method` of the .pte at `path`) on the
        example inputs, and on real frames for the image encoder; returns the log text."""
        stage, scheme = spec.name, self.plan[spec.name]
        t1 = time.perf_counter()
        checks = [self._gate_on(path, spec, inputs, ref, scheme, "example inputs", method)]
        if stage == "image_encoder":
            frames, label = self.frames()
            if frames:
                checks.append(self._gate_frames(path, spec, reference, frames, scheme, label))
        for c in checks:
            c["precision"] = scheme
            c["fix"] = f"--stage-precision {stage}={'int8' if scheme == 'int8-4w' else 'fp32'}"
        self.stage_gates[(name, target)] = checks
        info["verify"] = {"ok": all(c["ok"] for c in checks), "gates": checks}
        info["verify_s"] = round(time.perf_counter() - t1, 2)
        text = "  PSNR " + ", ".join(f"{c['min_psnr_db']:.1f} dB ({c['on'].split(' (')[0]})" for c in checks)
        return text + ("" if info["verify"]["ok"] else "  GATE MISSED")

    def _export_coreml(self, ep, path, spec, inputs, ref, verify, cfg, weights, plan=None, reference=None) -> tuple:
        from . import coreml

        stage = spec.name
        scheme = self.compress_plan.get(stage, self.compress)
        t0 = time.perf_counter()
        info = coreml.write(ep, path, spec, cfg, "fp16", weights, scheme, plan=plan)
        info["export_s"] = round(time.perf_counter() - t0, 2)
        info["bytes"] = artifact_size(path)
        line = f"      {'coreml':17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB  {scheme} weights"
        self.records[(stage, "coreml")] = {"precision": scheme, "scheme": coreml_compress.DESCRIPTION[scheme],
                                          "calibration": "none needed (weight-only)", "deployment_target": "iOS18"}
        if not verify:
            return info, line
        problems = coreml.check_spec(path, spec)
        if problems:
            raise ExportError(f"{Path(path).name} does not match the contract: {'; '.join(problems)}", stage, "coreml")
        emulated, emu = coreml_compress.load_emulated(ep, path, scheme, plan)
        self.coreml_emulated[stage] = emulated
        got = emulated.emulate(torch_inputs(inputs))
        gate = gates.stage_gate(ref, got, [t.name for t in spec.outputs], scheme,
                                "example inputs (PyTorch emulation: decompressed weights from the package, fp16 plan)")
        fix = "--compress int8 (or fp16)" if scheme != "int8" else "--compress fp16"
        gate.update(precision=scheme, fix=fix, emulation=emu)
        checks = [gate]
        if stage == "image_encoder":
            frames, label = self.frames()
            if frames:  # the "and on real frames": the clip or --calibration, emulated like the above
                fg = self._gate_frames_with(lambda a: emulated.emulate(torch_inputs(a)), spec, reference, frames, scheme,
                                            f"{label}; PyTorch emulation")
                fg.update(precision=scheme, fix=fix, emulation=emu)
                checks.append(fg)
        self.stage_gates[(stage, "coreml")] = checks
        self.records[(stage, "coreml")]["layers"] = {"compressed_weights": emu["compressed_weights"]}
        info["verify"] = {"ok": all(c["ok"] for c in checks), "gates": checks}
        line += f" ({emu['compressed_weights']} tensors)  emulated PSNR " + ", ".join(
            f"{c['min_psnr_db']:.1f} dB ({c['on'].split(' (')[0].split(':')[0]})" for c in checks)
        if emu["unmatched"]:
            raise ExportError(f"{len(emu['unmatched'])} compressed weights of the package could not be matched to "
                              f"the PyTorch stage for the emulated gate ({emu['unmatched'][0]}, ...)", stage, "coreml")
        return info, line

    @staticmethod
    def _run_pte(path, arrays_list, method_name: str = "forward"):
        from . import executorch

        _, program = executorch.load(path)
        with quiet_converters():
            method = program.load_method(method_name)
            return [[o.detach().numpy().copy() for o in method.execute(list(torch_inputs(a)))] for a in arrays_list]

    def _gate_on(self, path, spec, inputs, ref, scheme, label, method: str = "forward") -> dict:
        (got,) = self._run_pte(path, [inputs], method)
        return gates.stage_gate(ref, got, [t.name for t in spec.outputs], scheme, label)

    def _gate_frames(self, path, spec, reference, frames, scheme, label) -> dict:
        return self._gate_frames_with(lambda a: self._run_pte(path, [a])[0], spec, reference, frames, scheme, label)

    @staticmethod
    def _gate_frames_with(run, spec, reference, frames, scheme, label) -> dict:
        """Image-encoder PSNR gate on real frames; `run(arrays) -> outputs` is the variant."""
        from etam_mobile.preprocess import preprocess_frame

        S = spec.inputs[0].shape[-1]
        arrays = [[preprocess_frame(f, S).numpy()] for f in frames]
        gots = [[np.asarray(o) for o in run(a)] for a in arrays]
        refs = [run_eager(reference, a) for a in arrays]
        # one gate over all frames: PSNR of the stacked outputs
        ref_all = [np.concatenate([r[i] for r in refs]) for i in range(len(spec.outputs))]
        got_all = [np.concatenate([g[i] for g in gots]) for i in range(len(spec.outputs))]
        return gates.stage_gate(ref_all, got_all, [t.name for t in spec.outputs], scheme, f"real frames: {label}")

    # ---- the whole folder ------------------------------------------------------------------

    def _coreml_tracking(self, model, caps, log) -> dict:
        """Chained tracking of the compressed Core ML stages, EMULATED: each stage runs with its
        package's decompressed weights and its fp16 plan (coreml_tracking.py)."""
        from . import coreml_tracking

        cases = gates.case_dirs(self.gate_cases)
        log(f"      chained tracking gate (PyTorch emulation of the {self.compress} packages) on {len(cases)} "
            "recorded case(s) vs fp32 eager")
        t0 = time.perf_counter()
        tracking = coreml_tracking.tracking_gate(
            model, caps, self.coreml_emulated, cases,
            emulation=f"Core ML {self.compress} emulated in PyTorch: decompressed weights read back from each saved "
                      ".mlpackage, fp16/fp32 ops of its converted program (export/precision.py); not Core ML",
            progress=_case_logger(log, t0, " emulated"))
        nxt = COREML_NEXT[self.compress]
        if self.compress_plan.get("mask_decoder", self.compress) != "fp16":
            nxt = f"{KEEP_DECODER}, else {nxt}"
        tracking["fix"] = f"the plan to try next: {nxt}"
        tracking["seconds"] = round(time.perf_counter() - t0, 1)
        return tracking

    def finish(self, doc: dict, folder: Path, model, caps, reports: dict, target_precision, precision: str,
               verify: bool, log) -> None:
        """Chained-tracking gate (when something is compressed and verify is on), then the
        per-artifact precision records and the variant summary into `doc`."""
        tracking = None
        if self.quantized and verify:
            from etam_mobile.runtime.backends import EagerBackend
            from etam_mobile.runtime.exported import ExecuTorchBackend

            cases = gates.case_dirs(self.gate_cases)
            log(f"      chained tracking gate on {len(cases)} recorded case(s) vs fp32 eager")
            t0 = time.perf_counter()
            with torch.inference_mode():
                tracking = gates.tracking_gate(ExecuTorchBackend(folder, doc, "executorch"),
                                               EagerBackend(model, capacities=caps), cases, _case_logger(log, t0))
            # the stages by measured sensitivity (README "Which layers stay fp32"): decoder, then image encoder
            nxt = next((st for st in ("mask_decoder", "image_encoder", "memory_attention")
                        if self.plan.get(st, plans.FP32) != plans.FP32), "memory_encoder")
            tracking["fix"] = (f"the plan to try next keeps the most sensitive quantised stage in fp32: "
                               f"--stage-precision {nxt}=fp32 (benchmarks/quantization_sensitivity.py measures "
                               "each stage)")
            tracking["seconds"] = round(time.perf_counter() - t0, 1)
        if self.compress != "fp16" and verify:
            tracking = self._coreml_tracking(model, caps, log)
        missed = gates.failures(self.stage_gates, tracking)
        if self.compress != "fp16":
            missed = [m.replace("tracking case", f"Core ML {self.compress} chained tracking (emulated) case")
                      for m in missed]
        if missed and not self.allow_failing:
            raise ExportError("accuracy gate missed: " + "; ".join(missed) +
                              " (or pass --allow-failing-gates to write the variant marked failing)")
        status = "not gated" if not (self.active and verify) else ("failing" if missed else "passed")
        for stage in STAGES:
            recs = {}
            for target, rel in doc["stages"][stage]["artifacts"].items():
                rec = self.artifact_record(stage, target, status)
                if rec is None:
                    p = target_precision(target, precision)
                    rec = {"precision": p, "scheme": "fp32" if p == "fp32" else
                           "fp16 compute (ExecuTorch Core ML partitioner: every op fp16, no overflow guard)"
                           if target == "executorch-coreml" else "fp16 compute (export/precision.py)"}
                    ver = reports[stage].get(target, {}).get("verify")
                    if ver and "gate" in ver:
                        rec["gates"] = [{"on": "example inputs", "gate": ver["gate"], "ok": ver["ok"]}]
                recs[target] = rec
            doc["stages"][stage]["precision"] = recs
        self._status = status
        doc["variant"] = {
            "name": ((self.quantize if self.quantize != "none" else "mixed") if self.quantized else f"coreml-{self.compress}" if self.compress != "fp16"
                     else "fp32" if precision == "fp32" else precision),
            "coreml_compress": self.compress,
            "coreml_compress_plan": dict(self.compress_plan) or None,
            "executorch_plan": dict(self.plan),
            "calibration": self._frames_label or None,
            "status": status,
            "tracking_gate": tracking,
            "failures": missed,
            "note": "gates measured on the weights exported; with synthetic weights they are a lower bound, not a "
                    "claim about a trained model",
        }

    def artifact_record(self, name: str, target: str, status: str | None = None) -> dict | None:
        """The precision record of a compressed artifact (a stage or a slot bucket) with its gates
        and own status; None when this variant did not compress it."""
        rec = self.records.get((name, target))
        if rec is None:
            return None
        rec = dict(rec, gates=self.stage_gates.get((name, target), []))
        # this artifact's PSNR gates; the folder's status adds chained tracking
        rec["status"] = (("failing" if any(not g["ok"] for g in rec["gates"]) else "passed") if rec["gates"]
                         else status or self._status)
        return rec


def _case_logger(log, t0: float, what: str = ""):
    """Progress of the chained gate: one line per case as it ends (full-size cases take minutes)."""
    def line(name: str, c: dict) -> None:
        figures = (f"mean IoU {c.get('mean_iou', 0):.4f}, min {c.get('min_iou', 0):.4f}" if "problem" not in c
                   else c["problem"])
        log(f"        {name}: {figures} ({'ok' if c['ok'] else 'MISSED'}{',' + what if what else ''}) "
            f"{time.perf_counter() - t0:.0f} s")
    return line
