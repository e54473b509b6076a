"""ONNX target: torch.onnx.export(dynamo=True) of the exported stage, single file, opset 20,
checked by onnx.checker and run in ONNX Runtime (CPU) for parity.

Optionally (`fused_attention`) the memory attention's SDPA is emitted as ONNX Runtime's contrib op
`com.microsoft::MultiHeadAttention` (see fused_sdpa) instead of MatMul-Add-Softmax-MatMul."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from etam_mobile.contracts import StageSpec

from .common import ExportError, parity, quiet_converters, torch_inputs, wrap_error

# 20 is ONNX Runtime's fully covered recent opset on every platform ORT Mobile ships, and
# the dynamo exporter's native one in torch 2.13 (no version conversion pass).
OPSET = 20


class Int64Indices(torch.nn.Module):
    """Feeds int32 contract inputs to the stage as int64.

    The dynamo exporter copies an int32 index tensor straight into Gather/GatherND, whose
    indices must be int64 in ONNX (onnx.checker rejects the model). Casting at the graph
    input keeps the manifest's int32 interface and makes every index int64.
    """

    def __init__(self, stage: torch.nn.Module):
        super().__init__()
        self.stage = stage

    def forward(self, *args):
        return self.stage(*[a.long() if a.dtype == torch.int32 else a for a in args])


def prepare(stage_module: torch.nn.Module, ep, inputs: list, stage: str):
    """The exported program to hand to the ONNX exporter (re-exported when int32 inputs exist)."""
    if not any(a.dtype.kind == "i" for a in inputs):
        return ep
    try:
        with quiet_converters():
            return torch.export.export(Int64Indices(stage_module), torch_inputs(inputs), strict=False)
    except Exception as exc:
        raise wrap_error(exc, stage, "onnx", "torch.export (int64 index wrapper)") from exc


# ---- fused attention: com.microsoft::MultiHeadAttention ------------------------------------
# ONNX Runtime's CPU kernel of this contrib op runs MLAS's flash attention (blocks of queries x
# keys sized to the L2 cache; the logits are never written out) only without attention_bias,
# key_padding_mask and past/present; the standard ONNX `Attention` op (opset 23) of ONNX Runtime
# 1.32 materialises the logits on CPU. So the per-key bias becomes one extra key column, as in
# the ExecuTorch variant: q gets a column of ones, k the bias / scale, and the op's explicit
# `scale` attribute keeps 1/sqrt(256) (its default would use the widened head).
# Off by default: measured on this 2-core x86 VM with ONNX Runtime 1.32, the fused ti_512 memory
# attention took 0.91-1.06x the time of the MatMul-Softmax-MatMul graph (benchmarks/README.md,
# "Issue 15: fused attention on ONNX Runtime"): no measurable gain, only less peak memory.
FUSED_ATTENTION_STAGES = ("memory_attention",)
FUSED_ATTENTION_DEFAULT = False
MSFT_DOMAIN = "com.microsoft"


def _mha_op():
    """The contrib op as an onnxscript Op. onnx has no schema for it (it lives in ONNX Runtime),
    so one is declared here with the three inputs and two attributes used; not registered
    globally."""
    import onnxscript
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    schema = OpSchema(
        "MultiHeadAttention", MSFT_DOMAIN, 1,
        inputs=[param("query", "T"), param("key", "T"), param("value", "T")], outputs=[param("output", "T")],
        type_constraints=[("T", ["tensor(float)"], "fp32 only (the exported stages are fp32)")],
        attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                    OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "logit scale")])
    return onnxscript.values.Op(onnxscript.values.Opset(MSFT_DOMAIN, 1), "MultiHeadAttention", schema)


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """aten.scaled_dot_product_attention -> MultiHeadAttention (ONNX translation, traced).

    Handles the memory attention's forms: one batch and one head, (1, 1, n, d) queries and keys,
    values of any width (the export form's 64-d), and no mask or a per-key float bias
    (1, 1, 1, m). Anything else is left to torchlib's own translation."""
    from onnxscript import opset20 as op
    from onnxscript.function_libs.torch_lib.ops.nn import aten_scaled_dot_product_attention

    shapes = [None if t is None or t.shape is None else list(t.shape) for t in (query, key, value, attn_mask)]
    ok = (not (is_causal or enable_gqa or dropout_p) and all(
              s is not None and len(s) == 4 and s[:2] == [1, 1] and all(isinstance(x, int) for x in s)
              for s in shapes[:3]) and shapes[0][-1] == shapes[1][-1]
          and (attn_mask is None or (shapes[3] is not None and shapes[3] == [1, 1, 1, shapes[1][-2]]
                                     and attn_mask.dtype is not None and attn_mask.dtype.name == "FLOAT")))
    if not ok:
        return aten_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    (n, d), (m, dv) = shapes[0][-2:], shapes[2][-2:]
    s = float(scale) if scale is not None else 1.0 / math.sqrt(d)

    def shape(*dims):
        return op.Constant(value_ints=list(dims))

    q, k, v = op.Reshape(query, shape(1, n, d)), op.Reshape(key, shape(1, m, d)), op.Reshape(value, shape(1, m, dv))
    if attn_mask is not None:
        q = op.Concat(q, op.Expand(op.Constant(value_float=1.0), shape(1, n, 1)), axis=-1)
        k = op.Concat(k, op.Mul(op.Reshape(attn_mask, shape(1, m, 1)), op.Constant(value_float=1.0 / s)), axis=-1)
    out = _mha_op()(q, k, v, num_heads=1, scale=s)
    return op.Reshape(out, shape(1, 1, n, dv))


def write(ep, path: Path, spec: StageSpec, fused_attention: bool = FUSED_ATTENTION_DEFAULT) -> dict:
    """Export to ONNX and check; `fused_attention` emits MultiHeadAttention in FUSED_ATTENTION_STAGES."""
    try:
        import onnx
    except ImportError as exc:
        raise ExportError(f"onnx is not installed ({exc}); pip install onnx onnxscript", spec.name, "onnx") from None
    table = None
    if fused_attention and spec.name in FUSED_ATTENTION_STAGES:
        table = {torch.ops.aten.scaled_dot_product_attention.default: fused_sdpa}
    try:
        with quiet_converters():
            torch.onnx.export(
                ep, (), str(path), dynamo=True, opset_version=OPSET, external_data=False, optimize=True,
                input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                custom_translation_table=table,
            )
    except Exception as exc:
        raise wrap_error(exc, spec.name, "onnx", "ONNX export") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise wrap_error(exc, spec.name, "onnx", "onnx.checker") from exc
    model = onnx.load(str(path), load_external_data=False)
    fused = sum(1 for n in model.graph.node if n.domain == MSFT_DOMAIN and n.op_type == "MultiHeadAttention")
    info = {"opset": OPSET, "nodes": len(model.graph.node), "precision": "fp32", "fused_attention": fused > 0}
    if fused:
        info["fused_attention_nodes"] = fused
        info["runtime_needs"] = "ONNX Runtime contrib ops (com.microsoft::MultiHeadAttention)"
    return info


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_io(sess, spec: StageSpec) -> list:
    onnx_type = {"float32": "tensor(float)", "int32": "tensor(int32)"}
    problems = []
    for kind, have, want in (("input", sess.get_inputs(), spec.inputs), ("output", sess.get_outputs(), spec.outputs)):
        got = [(a.name, tuple(a.shape), a.type) for a in have]
        exp = [(t.name, tuple(t.shape), onnx_type[str(t.dtype).replace("torch.", "")]) for t in want]
        if got != exp:
            problems.append(f"{kind}s {got}, contract {exp}")
    return problems


def verify(path: Path, spec: StageSpec, inputs: list, ref: list) -> dict:
    sess = session(path)
    problems = check_io(sess, spec)
    if problems:
        raise ExportError(f"{Path(path).name} does not match the contract: {'; '.join(problems)}", spec.name, "onnx")
    got = sess.run(None, {t.name: a for t, a in zip(spec.inputs, inputs)})
    res = parity(ref, got, [t.name for t in spec.outputs], "fp32")
    res["checker"] = "ok"
    return res
