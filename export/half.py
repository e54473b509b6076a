"""fp16 ExecuTorch (XNNPACK) programs: `--stage-precision STAGE=fp16`.

The stage's weights and compute are fp16, its inputs and outputs stay fp32 (the contract of
DESIGN.md / contracts.py): `Fp16Stage` casts the floating inputs to fp16 at the top of the
graph and the outputs back to fp32 at the end, so the runtimes (Python, Kotlin, Swift) feed
and read the program exactly as the fp32 one. Half the bytes of the weights, no calibration.

XNNPACK (ExecuTorch 1.4.1) takes the fp16 graph except GELU (no fp16 kernel: those nodes
run in ExecuTorch's portable kernels) and dtype conversions (the boundary casts and the
scalar constants the decompositions lift as fp32). Measured on the tiny config's mask
decoder: 82 % of nodes delegated (fp32: 87 %), the same 17 partitions, outputs >= 60 dB
PSNR vs fp32 eager (benchmarks/mask_decoder_fp16.py).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from .common import quiet_converters, torch_inputs, wrap_error

DESCRIPTION = ("fp16 weights and compute (XNNPACK fp16; GELU in portable kernels), fp32 inputs/outputs cast "
               "inside the program")
_WEIGHTED = {"linear": (torch.ops.aten.linear.default,),
             "conv": (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default,
                      torch.ops.aten.conv_transpose2d.input)}


class Fp16Stage(torch.nn.Module):
    """A stage in fp16 behind an fp32 boundary (integer inputs pass unchanged)."""

    def __init__(self, stage: torch.nn.Module):
        super().__init__()
        self.stage = copy.deepcopy(stage).eval().half()

    def forward(self, *args):
        out = self.stage(*(a.half() if a.is_floating_point() else a for a in args))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def census(gm: torch.fx.GraphModule) -> dict:
    """{kind: {weight dtype: count}} of the linear/conv layers of an exported graph."""
    counts = {}
    for node in gm.graph.nodes:
        kind = next((k for k, ops in _WEIGHTED.items() if node.op == "call_function" and node.target in ops), None)
        if kind is None:
            continue
        w = node.args[1].meta.get("val") if isinstance(node.args[1], torch.fx.Node) else None
        prec = {torch.float16: "fp16", torch.float32: "fp32"}.get(getattr(w, "dtype", None), "other")
        counts.setdefault(kind, {}).setdefault(prec, 0)
        counts[kind][prec] += 1
    return counts


def program(module: torch.nn.Module, inputs: list, stage: str):
    """(exported program of the fp16 stage, layer census)."""
    try:
        with quiet_converters():
            ep = torch.export.export(Fp16Stage(module), torch_inputs(inputs), strict=False)
    except Exception as exc:
        raise wrap_error(exc, stage, "executorch", "fp16 export") from exc
    return ep, census(ep.graph_module)


def write(module: torch.nn.Module, inputs: list, path: Path, stage: str) -> dict:
    """Export the stage in fp16, lower it to XNNPACK and write the .pte; returns the report."""
    return write_methods(module, {"forward": inputs}, path, stage)["forward"]


def write_methods(module: torch.nn.Module, inputs: dict, path: Path, stage: str) -> dict:
    """{method: example inputs} (the memory attention and its slot buckets) as fp16 methods of
    one .pte; returns {method: report} (census + delegation), as quantize.write_methods does."""
    from . import executorch

    eps, census_ = {}, {}
    for name, arrays in inputs.items():
        eps[name], census_[name] = program(module, arrays, stage)
    info = executorch.write_methods(eps, path, stage, "executorch", "fp16",
                                    decomposition=executorch.decompositions(stage))
    per = info.get("methods") or {}
    reports = {}
    for name in eps:
        rep = dict(info) if name == "forward" else dict(per[name])
        rep.pop("methods", None)
        rep.update(precision="fp16", scheme="fp16", description=DESCRIPTION, layers=census_[name], fp32_layers=[])
        reports[name] = rep
    return reports
