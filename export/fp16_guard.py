"""fp16 overflow guard: which ops of a stage must stay fp32 in a Core ML fp16 program.

Before a Core ML fp16 conversion the stage's graph (the one Core ML converts, see
precision.prepare) runs in fp32 on the calibration inputs: the exporter's example inputs
plus every stage input of a short eager tracking run over the calibration frames
(`--calibration DIR` or the built-in clip; one click at the centre of the first frame, then
propagation). Each node records the largest magnitude among its float inputs, its output and,
where the op hides a bigger intermediate, that too (layer norm: the squared deviation its
variance sums; attention: the q.k logits). A node is kept in fp32 when
- that magnitude exceeds OVERFLOW_LIMIT (2^15: fp16 overflows past 65504, a 2x margin), or
- rounding its output to fp16 loses more than MAX_REL_ERROR of the tensor's norm (values
  in fp16's subnormal range, 16x worse than fp16's normal rounding).
Consumers of a large tensor are flagged through their inputs, so an overflowing value never
meets an fp16 op. Flags are per graph node; precision.op_selector turns them into MIL ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from . import precision as mixed
from .common import ExportError

OVERFLOW_LIMIT = 2.0 ** 15
MAX_REL_ERROR = 2.0 ** -7
FP16_MAX = 65504.0
aten = torch.ops.aten
_ATTN_ROWS = 512  # attention logits are measured in row chunks (bounded memory at 1024 px)


def _floats(values):
    return [v for v in tree_flatten(values)[0] if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _stats(ts) -> tuple:
    """(max |x|, squared fp16 rounding error, squared norm) over float tensors."""
    amax = err = norm = 0.0
    for t in ts:
        t = t.detach()
        if not t.numel():
            continue
        m = float(t.abs().amax())
        amax = max(amax, m)
        if not math.isfinite(m):
            continue
        r = (t.clamp(-FP16_MAX, FP16_MAX) if m > FP16_MAX else t).half().float()
        err += float(torch.linalg.vector_norm(t - r)) ** 2
        norm += float(torch.linalg.vector_norm(t)) ** 2
    return amax, err, norm


def _internal(target, args, kwargs) -> tuple:
    """(largest hidden intermediate, what it is) of ops whose intermediates exceed their I/O."""
    if target in (aten.layer_norm.default, aten.native_layer_norm.default):
        x, shape = args[0], args[1]
        dims = tuple(range(-len(shape), 0))
        dev = x - x.mean(dim=dims, keepdim=True)
        return float(dev.abs().max()) ** 2 if dev.numel() else 0.0, "squared deviation (variance)"
    if target == aten.scaled_dot_product_attention.default:
        q, k = args[0], args[1]
        scale = kwargs.get("scale") or (args[6] if len(args) > 6 and args[6] is not None else 1 / math.sqrt(q.shape[-1]))
        # Cauchy-Schwarz: |q.k| <= |q| |k|; the logits are computed only when the bound is at risk
        bound = float(q.norm(dim=-1).amax()) * float(k.norm(dim=-1).amax()) * scale
        if bound <= OVERFLOW_LIMIT:
            return bound, "attention logits (|q| |k| bound)"
        kt, peak = k.transpose(-2, -1), 0.0
        for i in range(0, q.shape[-2], _ATTN_ROWS):
            peak = max(peak, float((q[..., i:i + _ATTN_ROWS, :] @ kt).abs().max()) * scale)
        return peak, "attention logits"
    return 0.0, ""


_HIDDEN = (aten.layer_norm.default, aten.native_layer_norm.default, aten.scaled_dot_product_attention.default)


class _Recorder(torch.fx.Interpreter):
    def __init__(self, gm, stats: dict):
        super().__init__(gm)
        self.stats = stats
        self.peak = {}  # node -> max |x| of its value in this run (inputs are earlier nodes' values)

    def _peak(self, node) -> float:
        if node not in self.peak:
            if node.op == "get_attr":  # weights and buffers: the same in every run
                key = ("get_attr", node.target)
                if key not in self.stats:
                    self.stats[key] = _stats(_floats(self.env.get(node)))[0]
                self.peak[node] = self.stats[key]
            else:
                self.peak[node] = _stats(_floats(self.env.get(node)))[0]
        return self.peak[node]

    def run_node(self, n):
        out = super().run_node(n)
        if n.op != "call_function":
            return out
        outs = _floats(out)
        if not outs:
            return out
        amax, err, norm = _stats(outs)
        self.peak[n] = amax
        st = self.stats.setdefault(n.name, {"op": str(getattr(n.target, "__name__", n.target)), "input": 0.0,
                                            "output": 0.0, "internal": 0.0, "internal_what": "", "rel16": 0.0})
        st["input"] = max([st["input"], *(self._peak(a) for a in n.all_input_nodes)])
        st["output"] = max(st["output"], amax)
        st["rel16"] = max(st["rel16"], math.sqrt(err / norm) if norm > 0 else 0.0)
        if n.target in _HIDDEN:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            peak, what = _internal(n.target, args, kwargs)
            if peak > st["internal"]:
                st["internal"], st["internal_what"] = peak, what
        return out


def measure(module, inputs_list: list) -> dict:
    """{node name: magnitudes} of the fp32 graph over every input set (lists of arrays)."""
    stats = {}
    with torch.inference_mode():
        for inputs in inputs_list:
            _Recorder(module, stats).run(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    return stats


def flag(stats: dict) -> dict:
    """{node name: {"reason", "max_abs", ...}} of the nodes that must stay fp32."""
    flags = {}
    for name, st in stats.items():
        if not isinstance(name, str):
            continue  # cached weight magnitudes (they reach the flags through their consumers)
        where, peak = max((("output", st["output"]), ("input", st["input"]),
                           (st["internal_what"] or "internal", st["internal"])), key=lambda kv: kv[1])
        if not math.isfinite(peak) or peak > OVERFLOW_LIMIT:
            flags[name] = {"op": st["op"], "max_abs": float(f"{peak:.4g}"),
                           "reason": f"overflow: |{where}| up to {peak:.3g} > {OVERFLOW_LIMIT:g} (fp16 max 65504, 2x margin)"}
        elif st["rel16"] > MAX_REL_ERROR:
            flags[name] = {"op": st["op"], "max_abs": float(f"{max(st['output'], st['input']):.4g}"),
                           "reason": f"precision: fp16 rounding loses {100 * st['rel16']:.1f}% of the output's norm "
                                     f"(> {100 * MAX_REL_ERROR:.2g}%; values near fp16's underflow)"}
    return flags


@dataclass
class StagePlan:
    """One Core ML stage's precision plan: mode, the prepared graph, the guard's flags and
    (after conversion) the precisions read back from the program."""

    stage: str
    mode: str
    ep: object
    handles: dict
    flags: dict = field(default_factory=dict)
    measured_on: str = ""
    max_abs: float = 0.0
    precisions: dict | None = None
    counts: dict | None = None
    _module: object = None

    @property
    def module(self):
        if self._module is None:
            self._module = self.ep.module()
        return self._module

    @property
    def fp32_handles(self) -> set:
        return {h for h, name in self.handles.items() if name in self.flags}

    def selector(self):
        return mixed.op_selector(self.mode, self.fp32_handles)

    def read_back(self, program) -> None:
        self.precisions = mixed.node_precisions(program, self.handles)
        missing = [n for n in self.flags if self.precisions.get(n) in ("fp16", "mixed")]
        if missing:
            raise ExportError(f"the overflow guard kept {missing[0]} in fp32 but Core ML computes it in fp16 "
                              f"({len(missing)} such ops); export this stage with --stage-precision "
                              f"{self.stage}=fp32", self.stage, "coreml")

    def emulate(self, inputs: tuple, module=None) -> list:
        return mixed.emulate(module or self.module, self.precisions, inputs)

    def record(self) -> dict:
        rec = {"plan": self.mode, "compute": mixed.describe(self.mode),
               "emulation": "PyTorch emulation of the converted program's fp16/fp32 ops (export/precision.py); "
                            "not Core ML"}
        if self.mode in mixed.GUARDED_MODES:
            rec["overflow_guard"] = {
                "measured_on": self.measured_on, "limit_abs": OVERFLOW_LIMIT, "max_rel_error": MAX_REL_ERROR,
                "max_abs_seen": float(f"{self.max_abs:.4g}"),
                "kept_fp32": [dict(node=n, **f) for n, f in sorted(self.flags.items(), key=lambda kv: -kv[1]["max_abs"])]}
        if self.counts is not None:
            rec["saved_program"] = self.counts
        if self.precisions is not None:
            rec["graph_nodes"] = {k: sum(1 for v in self.precisions.values() if v == k) for k in ("fp16", "fp32", "mixed")}
        return rec


def plan_stage(stage: str, ep, mode: str, inputs_list: list, measured_on: str) -> StagePlan:
    """Prepare a stage for Core ML fp16 and (guarded modes) run the guard on `inputs_list`."""
    ep2, handles = mixed.prepare(ep)
    plan = StagePlan(stage, mode, ep2, handles, measured_on=measured_on)
    if mode in mixed.GUARDED_MODES:
        try:
            stats = measure(plan.module, inputs_list)
        except Exception as exc:
            raise ExportError(f"the fp16 overflow guard could not run the fp32 graph ({type(exc).__name__}: {exc}); "
                              f"export with --stage-precision {stage}=fp32 or --precision fp32", stage, "coreml") from exc
        plan.flags = flag(stats)
        plan.max_abs = max((max(s["input"], s["output"], s["internal"]) for k, s in stats.items()
                            if isinstance(k, str)), default=0.0)
    return plan


# ---- calibration inputs of every stage ---------------------------------------------------

class _RecordingBackend:
    """Eager export-form stages at the export's capacities, recording every stage input."""

    def __init__(self, model, caps):
        from etam_mobile.runtime.mask_prompt import mask_prompt_constants

        self.cfg, self.capacities, self.point_capacity = model.cfg, caps, caps.points
        self.stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
        self.mask_prompt = mask_prompt_constants(model)
        self.seen = {k: [] for k in self.stages}

    @torch.inference_mode()
    def run(self, stage: str, inputs: list) -> list:
        arrays = [np.array(a, copy=True) for a in inputs]
        self.seen[stage].append(arrays)
        out = self.stages[stage](*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in out]


def calibration_inputs(model, caps, frames: list) -> dict:
    """{stage: [input arrays, ...]} from eager fp32 tracking over `frames` (RGB uint8):
    a positive click at the centre of frame 0, then propagation through the rest."""
    from etam_mobile.preprocess import preprocess_frame
    from etam_mobile.runtime.tracker import Tracker

    if not frames:
        return {}
    backend = _RecordingBackend(model, caps)
    h, w = frames[0].shape[:2]
    S = model.cfg.image_size
    tracker = Tracker(backend, len(frames), (h, w), lambda i: preprocess_frame(frames[i], S).numpy())
    tracker.add_prompt(0, 1, [[w / 2.0, h / 2.0]], [1], None)
    for _ in tracker.propagate(0):
        pass
    return backend.seen
