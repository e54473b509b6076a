"""Quantised ExecuTorch (XNNPACK) programs: `--quantize int8 | int8-4w | none`.

Both schemes use the maintained path of the pinned toolchain, nothing hand-written:

- int8: ExecuTorch's `XNNPACKQuantizer` with `get_symmetric_quantization_config(
  is_per_channel=True, is_dynamic=True)` through torchao's `prepare_pt2e`/`convert_pt2e`
  (what ExecuTorch 1.4.1's own PT2E_INT8_DYNAMIC_PER_CHANNEL recipe does): per-channel int8
  weights, activations quantised per call (no calibration statistics to go stale).
  The quantizer annotates linear and conv layers only; attention matmuls, softmax, norms
  and element-wise ops stay fp32.
- int8-4w: torchao `quantize_` with `Int8DynamicActivationIntxWeightConfig(int4, PerGroup)`
  on linear layers whose input width divides the group (ExecuTorch's
  TORCHAO_INT8_DYNAMIC_ACT_INT4_WEIGHT recipe), then the int8 PT2E pass above for the
  remaining layers (convs, and linears 4-bit cannot take), so nothing a plain int8 export
  quantises is left fp32.

Order (it matters, see README "Compressed variants"): quantise the stage's exported
graph first, then apply the XNNPACK decompositions of `executorch.py` (so layer norms,
means and SDPA become ops XNNPACK takes without touching the quantised patterns), then
lower with the dynamically-quantised partitioner first and the plain one second, as
ExecuTorch's own examples do: each DQ linear/conv becomes its own small partition and
the float remainder is partitioned afterwards.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from .common import ExportError, quiet_converters, torch_inputs, wrap_error

SCHEMES = ("none", "int8", "int8-4w")
# Targets a `--quantize` scheme applies to; the others refuse a scheme other than none.
QUANTIZE_TARGETS = ("executorch",)
GROUP_SIZE = 32  # 4-bit group width: XNNPACK's blockwise kernels take multiples of 32

SCHEME_DESCRIPTION = {
    "none": "fp32",
    "int8": "XNNPACKQuantizer symmetric per-channel int8 weights, dynamic per-token int8 activations "
            "(linear, conv); torchao prepare_pt2e/convert_pt2e",
    "int8-4w": f"torchao Int8DynamicActivationIntxWeightConfig int4 weights, groups of {GROUP_SIZE}, dynamic int8 "
               "activations (linear); XNNPACKQuantizer dynamic per-channel int8 for the rest (conv, other linear)",
    "fp16": "fp16 weights and compute, fp32 inputs/outputs (export/half.py; not quantised)",
}


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ExportError(f"unknown --quantize scheme {scheme!r}; choose {', '.join(SCHEMES)}")
    return scheme


def _int8_quantizer():
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                           get_symmetric_quantization_config)

    q = XNNPACKQuantizer()
    q.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    return q


def _already_4bit(node) -> bool:
    """A linear whose weight torchao already dequantises from int4 (int8-4w): leave it."""
    w = node.args[1] if node.op == "call_function" and len(node.args) > 1 else None
    return isinstance(w, torch.fx.Node) and "dequantize_affine" in str(w.target)


def _tiny_weight(node) -> bool:
    """A linear whose weight has < 1024 values (e.g. the memory attention's 1 x K ones-matmul
    that counts valid slots): nothing to gain from int8, and XNNPACK's dynamic-quant partitioner
    does not take such a layer, which leaves quantize/dequantize ops with no ExecuTorch kernel."""
    if node.op != "call_function" or node.target not in _WEIGHTED["linear"] or len(node.args) < 2:
        return False
    w = node.args[1]
    val = w.meta.get("val") if isinstance(w, torch.fx.Node) else None
    return val is not None and hasattr(val, "numel") and val.numel() < 1024


def _in_modules(node, prefixes) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any(str(fqn).startswith(p) for fqn, _ in stack.values() for p in prefixes)


def _pt2e_int8(module: torch.nn.Module, args: tuple, calibration: list, skip: tuple = ()) -> torch.nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    q = _int8_quantizer()
    q.set_filter_function(lambda node: not _already_4bit(node) and not _tiny_weight(node) and not _in_modules(node, skip))
    gm = torch.export.export(module, args, strict=False).module()
    prepared = prepare_pt2e(gm, q)
    with torch.no_grad():
        for batch in calibration or [args]:
            prepared(*batch)  # dynamic activations: this only exercises the observers
    return convert_pt2e(prepared)


def _apply_4bit(module: torch.nn.Module, skip: tuple = ()) -> list:
    """torchao 4-bit groupwise on every eligible Linear not under `skip` (in place); returns their names."""
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig
    from torchao.utils import unwrap_tensor_subclass

    names = [n for n, m in module.named_modules()
             if isinstance(m, torch.nn.Linear) and m.in_features % GROUP_SIZE == 0 and not n.startswith(skip or ("\0",))]
    if names:
        chosen = set(names)
        cfg = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP_SIZE))
        quantize_(module, cfg, filter_fn=lambda m, fqn: fqn in chosen)
        unwrap_tensor_subclass(module)
    return names


# ---- constants that are cheaper to compute than to ship -----------------------------------
# Quantisation shrinks the weights 4-6x, but not the fp32 tables of the memory attention
# (ti_512: 1 MiB sine encoding of the image tokens, 0.25 MiB of the memory tokens, 2 x 0.5 MiB
# RoPE cos/sin), which are then a quarter of the int8 program. They depend only on sizes, so a
# quantised program computes them (arange, sin, cos: microseconds per call) instead of storing
# them. A table is replaced only when the computation reproduces the stored buffer.

def _size_tables(module: torch.nn.Module) -> list:
    """(owner module, buffer name, function) for every size-only table this stage holds."""
    from etam_mobile.model.memory_attention import rope_tables
    from etam_mobile.model.position import sine_position_encoding

    def tokens(channels, h):
        return lambda: sine_position_encoding(channels, h, h).flatten(2).transpose(1, 2)

    found = []
    for mod in module.modules():
        cfg = getattr(mod, "cfg", None) or getattr(getattr(mod, "attn", None), "cfg", None)
        if cfg is None:
            continue
        h = cfg.feat_size
        def rope(i, d=cfg.d_model, h=h, t=cfg.rope_theta, pairs=False):  # no caching: a cached tensor would be traced as a constant
            if pairs:  # the graph-ops form's tables: each angle repeated for both members of its pair
                return lambda: rope_tables(d, h, h, t)[i].repeat_interleave(2, dim=-1)
            return lambda: rope_tables(d, h, h, t)[i]

        for name, fn in (("curr_pos", tokens(cfg.d_model, h)), ("mem_pos", tokens(cfg.mem_dim, h)),
                         ("rope_cos", rope(0)), ("rope_sin", rope(1)),
                         ("rope_cos2", rope(0, pairs=True)), ("rope_sin2", rope(1, pairs=True))):
            if name in mod._buffers and mod._buffers[name] is not None:
                found.append((mod, name, fn))
    return found


class _TablesInGraph(torch.nn.Module):
    """Runs a stage with its size-only tables computed at the start of each call (once per call:
    every use inside reads the same traced tensor)."""

    def __init__(self, stage: torch.nn.Module, tables: list):
        super().__init__()
        self.stage, self._tables = stage, tables

    def forward(self, *args):
        for mod, name, fn in self._tables:
            mod.__dict__[name] = fn()  # shadows nothing: the buffer was removed
        try:
            return self.stage(*args)
        finally:
            for mod, name, _ in self._tables:
                mod.__dict__.pop(name, None)


def compute_tables_in_graph(module: torch.nn.Module) -> tuple:
    """(module to export, names of the tables it now computes); `module` is modified (pass a copy)."""
    tables, names = [], []
    for mod, name, fn in _size_tables(module):
        with torch.no_grad():
            same = torch.allclose(fn(), mod._buffers[name], rtol=0, atol=1e-6)
        if same:
            nbytes = mod._buffers[name].numel() * mod._buffers[name].element_size()
            del mod._buffers[name]
            tables.append((mod, name, fn))
            names.append(f"{name} ({nbytes / 2**20:.2f} MiB)")
    return (_TablesInGraph(module, tables) if tables else module), names


def quantized_program(module: torch.nn.Module, inputs: list, scheme: str, stage: str,
                      skip_fp32: tuple = (), tables: bool = True) -> tuple:
    """Export `module` quantised with `scheme`; returns (ExportedProgram, report).

    `skip_fp32`: module-name prefixes to leave in fp32 (the per-stage plan's exceptions).
    """
    check_scheme(scheme)
    args = torch_inputs(inputs)
    module = copy.deepcopy(module).eval()
    report = {"scheme": scheme, "description": SCHEME_DESCRIPTION[scheme]}
    try:
        with quiet_converters():
            skip = tuple(skip_fp32)
            if tables:
                module, report["tables_computed_in_graph"] = compute_tables_in_graph(module)
                if isinstance(module, _TablesInGraph):  # module names gain the wrapper's "stage."
                    skip = tuple(f"stage.{p}" for p in skip)
            if scheme == "int8-4w":
                report["int4_linears"] = [n.removeprefix("stage.") for n in _apply_4bit(module, skip)]
            if scheme in ("int8", "int8-4w"):
                module = _pt2e_int8(module, args, [args], skip)
            ep = torch.export.export(module, args, strict=False)
    except Exception as exc:
        raise wrap_error(exc, stage, "executorch", f"{scheme} quantisation") from exc
    report.update(census(ep.graph_module))
    return ep, report


_WEIGHTED = {"linear": (torch.ops.aten.linear.default,),
             "conv": (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default,
                      torch.ops.aten.conv_transpose2d.input)}


def _source(node):
    """The dequantise op feeding a weight argument, if any (its name tells the scheme)."""
    w = node.args[1] if len(node.args) > 1 else None
    if isinstance(w, torch.fx.Node) and w.op == "call_function":
        return getattr(w.target, "__name__", str(w.target))
    return None


def census(gm: torch.fx.GraphModule) -> dict:
    """Count linear/conv layers by weight precision in a (quantised) exported graph."""
    counts = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        kind = next((k for k, ops in _WEIGHTED.items() if node.target in ops), None)
        if kind is None:
            continue
        src = _source(node) or ""
        if kind == "linear" and "dequantize" not in src and _tiny_weight(node):
            prec = "fp32-tiny"  # left unquantised on purpose (_tiny_weight)
        elif "dequantize_affine" in src or "dequantize_per_channel_group" in src:
            prec = "int4"
        elif "dequantize_per_channel" in src or "dequantize_per_tensor" in src:
            prec = "int8"
        else:
            prec = "fp32"
        counts.setdefault(kind, {}).setdefault(prec, 0)
        counts[kind][prec] += 1
    return {"layers": counts, "fp32_layers": fp32_layer_names(gm)}


def fp32_layer_names(gm: torch.fx.GraphModule) -> list:
    """Module names of the linear/conv layers whose weights stayed fp32 (plan exceptions, layer
    kinds the quantizer has no pattern for, tiny weights), so the manifest names them."""
    names = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or not any(node.target in ops for ops in _WEIGHTED.values()):
            continue
        if "dequantize" in (_source(node) or ""):
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        name = str(stack[-1][0]) if stack else node.name
        name = name.removeprefix("stage.")  # the size-table wrapper (_TablesInGraph)
        if name not in names:
            names.append(name)
    return names


def partitioners():
    """Dynamically-quantised ops first (one partition each), then the float remainder."""
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner(config_precisions=ConfigPrecisionType.DYNAMIC_QUANT),
            XnnpackPartitioner()]


def write(module: torch.nn.Module, inputs: list, path: Path, stage: str, scheme: str, skip_fp32: tuple = (),
          tables: bool = True) -> dict:
    """Quantise, decompose for XNNPACK, lower and write the .pte; returns the report. The per-stage
    precision fp16 (not a quantisation) is written by export/half.py."""
    from executorch.exir import to_edge_transform_and_lower

    if scheme == "fp16":
        from . import half

        return half.write(module, inputs, path, stage)

    from .executorch import XNNPACK_DECOMPOSITIONS, _delegation

    ep, report = quantized_program(module, inputs, scheme, stage, skip_fp32, tables)
    try:
        with quiet_converters():
            ep = ep.run_decompositions(XNNPACK_DECOMPOSITIONS)
            edge = to_edge_transform_and_lower(ep, partitioner=partitioners())
            report.update(_delegation(edge.exported_program().graph_module))
            program = edge.to_executorch()
            Path(path).write_bytes(program.buffer)
    except Exception as exc:
        raise wrap_error(exc, stage, "executorch", f"lowering the {scheme} graph to XNNPACK") from exc
    report["precision"] = scheme
    return report


def write_methods(module: torch.nn.Module, inputs: dict, path: Path, stage: str, scheme: str,
                  skip_fp32: tuple = (), tables: bool = True, log=None) -> dict:
    """Quantise the stage for every {method: example inputs} (the memory attention and its slot
    buckets) and lower them as methods of ONE .pte (executorch.write_methods): their int8
    weights are identical (per-channel scales from the weights alone), so the program stores
    them once instead of once per bucket file. Returns {method: report} (census + delegation).
    `log`: progress lines (a full-size program takes many minutes)."""
    from . import executorch

    if scheme == "fp16":
        from . import half

        return half.write_methods(module, inputs, path, stage)
    eps, reports = {}, {}
    for i, (name, arrays) in enumerate(inputs.items(), 1):
        t0 = time.perf_counter()
        eps[name], reports[name] = quantized_program(module, arrays, scheme, stage, skip_fp32, tables)
        if log is not None:
            log(f"        {scheme} graph {i}/{len(inputs)} ({name}) {time.perf_counter() - t0:.0f} s")
    if log is not None:
        log(f"        lowering {len(eps)} method(s) to XNNPACK ...")
    info = executorch.write_methods(eps, path, stage, "executorch", scheme,
                                    decomposition=executorch.XNNPACK_DECOMPOSITIONS, partitioners=partitioners())
    per = info.get("methods") or {"forward": {k: info[k] for k in ("delegated_fraction", "delegated_nodes",
                                                                    "total_nodes")}}
    for name, rep in reports.items():
        rep.update(info if name == "forward" else per[name])
        rep.pop("methods", None)
        rep["precision"] = scheme
    return reports


__all__ = ["SCHEMES", "QUANTIZE_TARGETS", "check_scheme", "quantized_program", "write", "write_methods", "census",
           "partitioners"]
