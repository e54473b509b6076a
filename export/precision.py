"""Mixed precision for Core ML: which ops stay fp32 when the rest computes in fp16, and a
PyTorch emulation of that plan so its error can be measured where Core ML cannot run.

The plan names op families once and maps them to Core ML MIL op types (for coremltools'
`FP16ComputePrecision(op_selector=...)`) and to core ATen ops (for the emulation), so the
emulated graph and the converted graph keep the same ops in fp32.

Why these families (measured with `emulate_fp16` on efficienttam_ti_512x512; README, Export):
layer_norm and the hand-written LayerNorm2d statistics (mean, pow, sqrt, div)
square activations, which overflows fp16's 65504 at |x| > 256; softmax sums exponentials;
the ViT's residual adds carry the residual stream, whose rounding error at fp16 accumulates
over 12 blocks. Everything else (convs, matmuls, GELU) is fp16.
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

aten = torch.ops.aten

# family -> (MIL op types, core ATen ops)
FAMILIES = {
    "layer_norm": ({"layer_norm"}, {aten.native_layer_norm.default, aten.layer_norm.default}),
    "softmax": ({"softmax"}, {aten._softmax.default, aten._safe_softmax.default, aten.softmax.int}),
    "norm_stats": ({"reduce_mean", "pow", "sqrt", "rsqrt", "real_div"},
                   {aten.mean.dim, aten.mean.default, aten.pow.Tensor_Scalar, aten.sqrt.default,
                    aten.rsqrt.default, aten.div.Tensor, aten.var_mean.correction}),
    "add": ({"add"}, {aten.add.Tensor}),
}
DEFAULT_FP32_FAMILIES = ("layer_norm", "softmax", "norm_stats", "add")


def mil_fp32_types(families=DEFAULT_FP32_FAMILIES) -> set:
    return set().union(*(FAMILIES[f][0] for f in families)) if families else set()


def aten_fp32_ops(families=DEFAULT_FP32_FAMILIES) -> set:
    return set().union(*(FAMILIES[f][1] for f in families)) if families else set()


def coreml_op_selector(families=DEFAULT_FP32_FAMILIES):
    """coremltools op_selector: True = compute this MIL op in fp16."""
    keep = mil_fp32_types(families)
    return lambda op: op.op_type not in keep


def _round16(x):
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return x.to(torch.float16).to(torch.float32)
    return x


class _Fp16Interpreter(torch.fx.Interpreter):
    def __init__(self, gm, keep: set):
        super().__init__(gm)
        self.keep = keep

    def call_function(self, target, args, kwargs):
        if target in self.keep or not isinstance(target, torch._ops.OpOverload):
            return super().call_function(target, args, kwargs)
        out = super().call_function(target, tree_map(_round16, args), tree_map(_round16, kwargs))
        return tree_map(_round16, out)


def emulate_fp16(ep, inputs: tuple, families=DEFAULT_FP32_FAMILIES) -> list:
    """Run an exported stage with every op's inputs and outputs rounded to fp16, except
    the fp32 families: what Core ML's typed fp16 program stores between ops.

    Matmul accumulation stays fp32 here (Core ML GPU does the same; the ANE may be
    coarser), so this is an optimistic but op-faithful estimate.
    """
    gm = ep.run_decompositions().module()
    with torch.inference_mode():
        out = _Fp16Interpreter(gm, aten_fp32_ops(families)).run(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().numpy() for o in out]
