"""Core ML compute-precision plans, and a PyTorch emulation that follows the converted program.

Plans per stage (`--stage-precision image_encoder=fp16-islands`, `--precision fp32`):
- fp16 (default): every op in fp16 except the ops the overflow guard flags (fp16_guard.py):
  the Neural Engine computes in fp16 only, so every fp32 island hands work back to the
  GPU/CPU and splits the stage across compute units;
- fp16-islands: the earlier plan, which keeps every layer norm, softmax, norm statistic
  (mean, pow, sqrt, div) and add in fp32, plus the guard's ops — the fallback if the
  all-fp16 plan misbehaves on a device;
- fp16-unguarded: every op in fp16, no guard (for comparisons; an overflow shows as inf);
- fp32: the whole stage in fp32.

Ops are matched between the PyTorch graph and the Core ML program by EXIR debug handles:
`prepare` numbers every node of the graph that is converted, coremltools carries the number
as a scope through all its passes, and `op_selector` decides per MIL op from it. After
conversion, `node_precisions` reads back which nodes really compute in fp32, and
`Fp16Emulator` runs the same graph with exactly those nodes in fp32 and every other
converted node rounded to fp16 on its inputs and output. That is an EMULATION of Core ML
(Core ML cannot predict on Linux): fp16 values between ops are faithful, the accumulation
inside a matmul/conv stays fp32 (Core ML's GPU does the same, the Neural Engine may be coarser).
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

MODES = ("fp16", "fp16-islands", "fp16-unguarded", "fp32")
DEFAULT_MODE = "fp16"
GUARDED_MODES = ("fp16", "fp16-islands")
# The islands plan's op families, as Core ML MIL op types.
ISLAND_FAMILIES = {
    "layer_norm": {"layer_norm"},
    "softmax": {"softmax"},
    "norm_stats": {"reduce_mean", "pow", "sqrt", "rsqrt", "real_div"},
    "add": {"add"},
}
ISLAND_TYPES = set().union(*ISLAND_FAMILIES.values())
# MIL ops that hold or move data without computing (not counted as fp32 compute).
NON_COMPUTE = {"const", "cast"}


def describe(mode: str) -> str:
    return {"fp16": "fp16 compute; only ops flagged by the overflow guard in fp32",
            "fp16-islands": "fp16 compute; layer norms, softmax, norm statistics and adds in fp32 (+ guard flags)",
            "fp16-unguarded": "fp16 compute everywhere (no overflow guard)",
            "fp32": "fp32 compute"}[mode]


def prepare(ep):
    """The graph Core ML converts (ATen ops, nothing decomposed further), every call node
    numbered by meta["debug_handle"]; returns (exported program, {handle: node name})."""
    ep = ep.run_decompositions({})
    handles = {}
    for i, node in enumerate(n for n in ep.graph_module.graph.nodes if n.op == "call_function"):
        node.meta["debug_handle"] = i + 1
        handles[i + 1] = node.name
    return ep, handles


def _handle(op):
    from coremltools.converters.mil.mil.scope import ScopeSource

    try:
        data = op.scopes.get(ScopeSource.EXIR_DEBUG_HANDLE)
    except AttributeError:
        return None
    return data[0] if data else None


def op_selector(mode: str, fp32_handles=frozenset()):
    """coremltools FP16ComputePrecision op_selector (True = compute this MIL op in fp16)."""
    fp32_handles = frozenset(fp32_handles)
    if mode == "fp16-unguarded":
        return lambda op: True
    if mode == "fp16-islands":
        return lambda op: op.op_type not in ISLAND_TYPES and _handle(op) not in fp32_handles
    return lambda op: _handle(op) not in fp32_handles


def node_precisions(program, handles: dict) -> dict:
    """{node name: 'fp16' | 'fp32' | 'mixed'} of every graph node that became compute ops in
    the converted MIL program (read from the ops' output dtypes)."""
    from coremltools.converters.mil.mil import types

    seen = {}
    for op in program.functions["main"].operations:
        if op.op_type in NON_COMPUTE or not op.outputs:
            continue
        h = _handle(op)
        if h not in handles:
            continue
        dt = op.outputs[0].dtype
        if dt not in (types.fp16, types.fp32):
            continue
        seen.setdefault(handles[h], set()).add("fp32" if dt == types.fp32 else "fp16")
    return {name: (kinds.pop() if len(kinds) == 1 else "mixed") for name, kinds in seen.items()}


def saved_counts(path) -> dict:
    """Op census of a saved .mlpackage, read back from its spec: compute ops, ops computing
    in fp32 (float32 output; casts and consts not counted), casts, and fp32 ops by type."""
    from .common import import_quietly, quiet_converters

    ct = import_quietly("coremltools")
    with quiet_converters():
        spec = ct.utils.load_spec(str(path))
    dtype_name = ct.proto.MIL_pb2.DataType.Name
    ops = []
    for block in spec.mlProgram.functions["main"].block_specializations.values():
        ops.extend(block.operations)
    counts = {"ops": 0, "fp32_ops": 0, "casts": 0, "fp32_op_types": {}}
    for op in ops:
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        if op.type == "cast":
            counts["casts"] += 1
            continue
        counts["ops"] += 1
        out = op.outputs[0].type if op.outputs else None
        if out is not None and out.HasField("tensorType") and dtype_name(out.tensorType.dataType) == "FLOAT32":
            counts["fp32_ops"] += 1
            counts["fp32_op_types"][op.type] = counts["fp32_op_types"].get(op.type, 0) + 1
    return counts


def _round16(x):
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return x.to(torch.float16).to(torch.float32)
    return x


class Fp16Emulator(torch.fx.Interpreter):
    """Runs the converted graph as Core ML's typed program would: nodes that became fp16
    ops see fp16-rounded inputs and store an fp16-rounded output; fp32 nodes and nodes
    that became no compute op (folded into constants or a neighbour) run in fp32."""

    def __init__(self, gm, precisions: dict):
        super().__init__(gm)
        self.fp16 = {n for n, p in precisions.items() if p != "fp32"}  # 'mixed' counts as fp16 (pessimistic)

    def run_node(self, n):
        if n.op != "call_function" or n.name not in self.fp16:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        out = self.call_function(n.target, tree_map(_round16, args), tree_map(_round16, kwargs))
        return tree_map(_round16, out)


def emulate(module, precisions: dict, inputs: tuple) -> list:
    """Outputs (numpy) of the emulated fp16 program; `module` is the prepared program's module()."""
    with torch.inference_mode():
        out = Fp16Emulator(module, precisions).run(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().numpy() for o in out]
