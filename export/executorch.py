"""ExecuTorch targets: `.pte` programs lowered to XNNPACK (CPU, Android/any) or to the Core ML
delegate (Apple; "executorch-coreml").

torch.export -> to_edge_transform_and_lower(partitioner) -> to_executorch. Ops a delegate
does not take stay in ExecuTorch's portable kernels; the fraction of graph nodes that went
to the delegate is reported per stage because every node left outside costs a hand-off.
"""
from __future__ import annotations

import copy
import math
import operator
from pathlib import Path

import torch

from etam_mobile.contracts import MASK_BIAS, StageSpec

from .common import ExportError, import_quietly, parity, quiet_converters, torch_inputs, wrap_error

aten = torch.ops.aten


# ---- decompositions that keep XNNPACK subgraphs whole --------------------------------
# XNNPACK has no layer_norm, squeeze or reductions other than a 4-D mean over the two
# innermost axes, and torch's own SDPA decomposition adds a "safe softmax" (eq/any/where)
# per attention. Each such node splits the delegate (68 partitions for the ti ViT, 69 %
# of nodes delegated); rewritten with ops XNNPACK takes, the image encoder becomes 4
# partitions and > 99 % delegated, ~25 % faster. Values are unchanged (float32 noise).

def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if is_causal or enable_gqa or dropout_p or k.shape[:-2] != q.shape[:-2] or (
            attn_mask is not None and attn_mask.dtype == torch.bool):
        return NotImplemented  # not used by the stages; torch's own decomposition applies
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    *batch, n, d = q.shape
    m, dv = k.shape[-2], v.shape[-1]
    logits = torch.bmm((q * s).reshape(-1, n, d), k.reshape(-1, m, d).transpose(1, 2))
    if attn_mask is not None:
        if math.prod(attn_mask.shape[:-2]) == 1:  # one mask for all: a broadcast add, no expand copy
            logits = logits + attn_mask.reshape(1, attn_mask.shape[-2], m)
        else:
            logits = logits + attn_mask.expand(*batch, n, m).reshape(-1, n, m)
    return torch.bmm(torch.softmax(logits, -1), v.reshape(-1, m, dv)).reshape(*batch, n, dv)


def sdpa_query_chunked(chunk: int):
    """The bmm-softmax-bmm SDPA computed for `chunk` queries at a time (exact: every query row is
    independent), so each block of logits (chunk x keys) can stay in cache between the two bmms.
    Off by default: see QUERY_CHUNK_DEFAULT."""
    def _sdpa_chunked(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        n = q.shape[-2]
        if n <= chunk:
            return _sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        outs = []
        for i in range(0, n, chunk):
            m = attn_mask if attn_mask is None or attn_mask.shape[-2] == 1 else attn_mask[..., i:i + chunk, :]
            o = _sdpa(q[..., i:i + chunk, :], k, v, m, dropout_p, is_causal, scale, enable_gqa)
            if o is NotImplemented:
                return NotImplemented
            outs.append(o)
        return torch.cat(outs, dim=-2)
    return _sdpa_chunked


def _sdpa_fused(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """SDPA as ExecuTorch's flash-style CPU kernel `llama::custom_sdpa` (its LLM custom ops): the
    (queries x keys) logits are computed block by block and never written out.

    The kernel takes q, k, v as (batch, seq, heads, dim) with one head width, no broadcast mask,
    and attends to the first `start_pos + q_len` keys. So: the per-key bias becomes one extra
    key column (q gets a column of ones, k the bias / scale: the logit gains exactly the bias);
    values are zero-padded to the query width (the export form's 64-d values; the padding columns
    are dropped after); keys are padded with masked entries up to the query count when fewer;
    start_pos = keys - queries."""
    if is_causal or enable_gqa or dropout_p or q.dim() != 4 or q.shape[:2] != (1, 1) or k.shape[:2] != (1, 1) or (
            attn_mask is not None and (attn_mask.dtype == torch.bool or attn_mask.numel() != k.shape[-2])):
        return _sdpa(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    n, d = q.shape[-2:]
    m, dv = k.shape[-2], v.shape[-1]
    q2, k2, v2 = q.reshape(1, n, 1, d), k.reshape(1, m, 1, d), v.reshape(1, m, 1, dv)
    if attn_mask is not None:
        q2 = torch.cat([q2, torch.ones(1, n, 1, 1, dtype=q.dtype)], -1)
        k2 = torch.cat([k2, attn_mask.reshape(1, m, 1, 1).to(q.dtype) / s], -1)
    width = q2.shape[-1]
    if m < n:  # never-attended keys: logit MASK_BIAS (bias column) or, without a bias, ...
        if attn_mask is None:  # ... give q a bias column now
            q2 = torch.cat([q2, torch.ones(1, n, 1, 1, dtype=q.dtype)], -1)
            k2 = torch.cat([k2, torch.zeros(1, m, 1, 1, dtype=q.dtype)], -1)
            width += 1
        pad = torch.cat([torch.zeros(1, n - m, 1, width - 1, dtype=q.dtype),
                         torch.full((1, n - m, 1, 1), MASK_BIAS / s, dtype=q.dtype)], -1)
        k2 = torch.cat([k2, pad], 1)
        v2 = torch.cat([v2, torch.zeros(1, n - m, 1, dv, dtype=q.dtype)], 1)
    if width > dv:
        v2 = torch.cat([v2, torch.zeros(1, v2.shape[1], 1, width - dv, dtype=q.dtype)], -1)
    out = torch.ops.llama.custom_sdpa(q2, k2, v2, k2.shape[1] - n, None, 0.0, False, s)
    return out[..., :dv].reshape(1, 1, n, dv)


def load_custom_ops() -> None:
    """Register llama::custom_sdpa (export: its meta kernel; Python runtime: its ExecuTorch kernel)."""
    import importlib

    with quiet_converters():
        importlib.import_module("executorch.extension.llm.custom_ops.custom_ops")


def _unbind(x, dim=0):
    dim = dim % x.dim()
    shape = [s for i, s in enumerate(x.shape) if i != dim]
    return [x.narrow(dim, i, 1).reshape(shape) for i in range(x.shape[dim])]


def _mean(x, dim=None, keepdim=False, dtype=None):
    """Any mean as XNNPACK's average pooling over a (1, rows, reduced, 1) view."""
    if dtype is not None:
        return NotImplemented
    r = x.dim()
    dims = sorted({d % r for d in ([dim] if isinstance(dim, int) else (dim or range(r)))})
    keep = [i for i in range(r) if i not in dims]
    order = keep + dims
    y = x.permute(*order) if order != list(range(r)) else x
    rows, red = math.prod(x.shape[i] for i in keep), math.prod(x.shape[i] for i in dims)
    m = aten.avg_pool2d.default(y.reshape(1, rows, red, 1), [red, 1], [red, 1], [0, 0], False, False)
    if not keepdim:
        return m.reshape([x.shape[i] for i in keep])
    m = m.reshape([x.shape[i] for i in keep] + [1] * len(dims))
    return m.permute(*[order.index(i) for i in range(r)]) if order != list(range(r)) else m


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    d = x - _mean(x, dims, True)
    y = d * torch.rsqrt(_mean(d * d, dims, True) + eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


XNNPACK_DECOMPOSITIONS = {
    aten.scaled_dot_product_attention.default: _sdpa,
    aten.unbind.int: _unbind,
    aten.mean.dim: _mean,
    aten.layer_norm.default: _layer_norm,
}
# Stages whose attention can run as the fused custom_sdpa kernel (see _sdpa_fused). Off by
# default: measured on this x86 CPU with ExecuTorch 1.4.1, the fused 8-slot memory attention took
# 1.8-2.1x the time of the XNNPACK bmm-softmax-bmm form (benchmarks/README.md, "issue 15"): the
# kernel's GEMMs are slower than XNNPACK's and the export form's 64-d values are padded to 257.
FUSED_ATTENTION_STAGES = ("memory_attention",)
FUSED_ATTENTION_DEFAULT = False


# Query-chunked bmm attention (sdpa_query_chunked): None = off. Measured not faster here
# (benchmarks/README.md, issue 15: attention_variants.py), so the default is off.
QUERY_CHUNK_DEFAULT = None


def decompositions(stage: str, fused_attention: bool = FUSED_ATTENTION_DEFAULT,
                   query_chunk: int | None = QUERY_CHUNK_DEFAULT) -> dict:
    """The XNNPACK decomposition table of one stage."""
    if fused_attention and stage in FUSED_ATTENTION_STAGES:
        load_custom_ops()
        return {**XNNPACK_DECOMPOSITIONS, aten.scaled_dot_product_attention.default: _sdpa_fused}
    if query_chunk and stage in FUSED_ATTENTION_STAGES:
        return {**XNNPACK_DECOMPOSITIONS, aten.scaled_dot_product_attention.default: sdpa_query_chunked(query_chunk)}
    return XNNPACK_DECOMPOSITIONS


BACKEND_ID = {"executorch": "XnnpackBackend", "executorch-coreml": "CoreMLBackend"}
# ExecuTorch ScalarType codes (c10 numbering) of the dtypes the contracts use.
SCALAR_TYPE = {torch.float32: 6, torch.int32: 3, torch.float16: 5, torch.int64: 4}


def _partitioner(target: str, precision: str):
    if target == "executorch":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    ct = import_quietly("coremltools")
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit.ALL,
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
    )
    return CoreMLPartitioner(compile_specs=specs)


def _delegation(graph_module: torch.fx.GraphModule) -> dict:
    """Compute nodes inside delegate blobs vs left to portable kernels (getitem excluded)."""
    delegated = outside = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module"):
            inner = getattr(graph_module, node.target).original_module.graph
            delegated += sum(1 for n in inner.nodes if n.op == "call_function" and n.target is not operator.getitem)
        elif node.op == "call_function" and node.target is not operator.getitem:
            if "executorch_call_delegate" not in getattr(node.target, "__name__", str(node.target)):
                outside += 1
    total = delegated + outside
    ops_outside = {}
    for n in graph_module.graph.nodes:
        name = getattr(n.target, "__name__", str(n.target))
        if n.op == "call_function" and n.target is not operator.getitem and "executorch_call_delegate" not in name:
            name = name.split(".")[1] if name.startswith("aten.") else name
            ops_outside[name] = ops_outside.get(name, 0) + 1
    return {"delegated_nodes": delegated, "total_nodes": total,
            "delegated_fraction": round(delegated / total, 4) if total else 0.0,
            "not_delegated_ops": dict(sorted(ops_outside.items()))}


def write(ep, path: Path, stage: str, target: str, precision: str,
          fused_attention: bool = FUSED_ATTENTION_DEFAULT, query_chunk: int | None = QUERY_CHUNK_DEFAULT) -> dict:
    """Lower an exported stage and write the .pte (one method, "forward"); returns delegation info."""
    return write_methods({"forward": ep}, path, stage, target, precision, fused_attention, query_chunk)


def write_methods(programs: dict, path: Path, stage: str, target: str, precision: str,
                  fused_attention: bool = FUSED_ATTENTION_DEFAULT, query_chunk: int | None = QUERY_CHUNK_DEFAULT,
                  decomposition: dict | None = None, partitioners=None) -> dict:
    """Lower {method name: exported program} into ONE .pte and write it; returns delegation info.

    Why one file: ExecuTorch stores constant data once per program, shared by its methods (the
    XNNPACK delegate keys its weights by content), so the memory attention's slot buckets as
    methods of one program weigh one copy of the weights instead of one per bucket. "forward"
    (first) is the stage's full graph, the one readers of single-method programs run.
    decomposition / partitioners: defaults are this target's (fp32); the quantised path passes
    its own (export/quantize.py). The report is forward's delegation plus per-method
    `methods` entries when there is more than one."""
    try:
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise ExportError(f"ExecuTorch is not installed ({exc}); pip install executorch", stage, target) from None
    if not programs:
        raise ExportError("no exported program to lower", stage, target)
    try:
        with quiet_converters():
            table = decomposition if decomposition is not None else (
                decompositions(stage, fused_attention, query_chunk) if target == "executorch" else None)
            # A copy when nothing is decomposed: lowering consumes the program in place (the Core ML
            # delegate pops the lifted constants it takes), and the caller lowers the same program
            # for its other targets afterwards (run_decompositions already returns a new one).
            eps = {name: (ep.run_decompositions(table) if table is not None else copy.deepcopy(ep))
                   for name, ep in programs.items()}
            parts = partitioners if partitioners is not None else [_partitioner(target, precision)]
            edge = to_edge_transform_and_lower(eps if len(eps) > 1 else next(iter(eps.values())), partitioner=parts)
            per = {name: _delegation(edge.exported_program(name).graph_module) for name in eps} if len(eps) > 1 \
                else {next(iter(eps)): _delegation(edge.exported_program().graph_module)}
            program = edge.to_executorch()
            Path(path).write_bytes(program.buffer)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, stage, target, "lowering to ExecuTorch") from exc
    info = dict(per.get("forward") or next(iter(per.values())))
    if len(per) > 1:
        info["methods"] = {name: {k: d[k] for k in ("delegated_fraction", "delegated_nodes", "total_nodes")}
                           for name, d in per.items()}
    info["precision"] = precision if target == "executorch-coreml" else "fp32"
    info["fused_attention"] = any("llama.custom_sdpa.default" in d["not_delegated_ops"] for d in per.values())
    if info["fused_attention"]:
        info["runtime_needs"] = "ExecuTorch LLM custom ops (llama::custom_sdpa)"
    return info


def load(path: Path):
    """Load a .pte once; returns (program, method or None if its delegate is not in this runtime)."""
    from executorch.runtime import Runtime

    load_custom_ops()
    with quiet_converters():
        runtime = Runtime.get()
        program = runtime.load_program(str(path))
    return runtime, program


def check_signature(program, spec: StageSpec, method: str = "forward") -> list:
    """Problems between one method's signature and the contract (empty = fine)."""
    if method not in program.method_names:
        return [f"no method {method!r} (it has {', '.join(sorted(program.method_names))})"]
    meta = program.metadata(method)
    problems = []
    if meta.num_inputs() != len(spec.inputs) or meta.num_outputs() != len(spec.outputs):
        return [f"{meta.num_inputs()} inputs / {meta.num_outputs()} outputs, contract has "
                f"{len(spec.inputs)} / {len(spec.outputs)}"]
    for kind, tensors, get in (("input", spec.inputs, meta.input_tensor_meta),
                               ("output", spec.outputs, meta.output_tensor_meta)):
        for i, t in enumerate(tensors):
            info = get(i)
            if tuple(info.sizes()) != tuple(t.shape) or info.dtype() != SCALAR_TYPE[t.dtype]:
                problems.append(f"{kind} {t.name}: shape {tuple(info.sizes())} dtype code {info.dtype()}, "
                                f"contract {tuple(t.shape)} {t.dtype}")
    return problems


def verify(path: Path, spec: StageSpec, target: str, inputs: list, ref: list, precision: str,
           method: str = "forward") -> dict:
    """Run one method of the written program on `inputs` and compare with eager's `ref`."""
    runtime, program = load(path)
    problems = check_signature(program, spec, method)
    if problems:
        where = f"{Path(path).name}" + (f" method {method}" if method != "forward" else "")
        raise ExportError(f"{where} does not match the contract: {'; '.join(problems)}", spec.name, target)
    backend = BACKEND_ID[target]
    if not runtime.backend_registry.is_available(backend):
        return {"numeric": "skipped", "reason": f"this ExecuTorch runtime has no {backend} (needs an Apple device)",
                "signature": "ok"}
    with quiet_converters():
        out = program.load_method(method).execute(list(torch_inputs(inputs)))
    got = [o.detach().numpy() for o in out]
    res = parity(ref, got, [t.name for t in spec.outputs], precision if target == "executorch-coreml" else "fp32")
    res["signature"] = "ok"
    return res
