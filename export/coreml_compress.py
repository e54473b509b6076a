"""Core ML compressed variants: `--compress fp16 | int8 | palettize6 | palettize4 | w8a8`.

Weights are compressed by coremltools.optimize on the converted fp16 program:
- int8: `linear_quantize_weights`, symmetric per-channel int8;
- palettize6 / palettize4: `palettize_weights`, k-means look-up tables of 2^n fp16 values,
  grouped per channel (16 output channels share a table). Grouped palettes are an iOS 18
  feature, so compressed packages target iOS 18 (the A17 Pro runs it).
- w8a8 is refused (W8A8_REFUSAL): coremltools' `linear_quantize_activations` calibrates
  with Core ML predictions (macOS only), and its PyTorch-side CoreMLQuantizer does not
  import under torch 2.13.

Core ML cannot predict on Linux, so the gate here is an EMULATION: the decompressed weights
are read back from the saved package (the `constexpr_*` ops' materialised values), put into
the exported PyTorch stage, and the stage runs with the fp16/fp32 ops read back from the
converted program (precision.py).
"""
from __future__ import annotations

import copy
import platform
from pathlib import Path

import numpy as np
import torch

from .common import ExportError, import_quietly, quiet_converters

SCHEMES = ("fp16", "int8", "w8a8", "palettize6", "palettize4")
COMPRESS_TARGETS = ("coreml",)
GROUP_SIZE = 16  # output channels per palette
WEIGHT_THRESHOLD = 2048  # tensors with fewer elements stay fp16 (coremltools' default)

DESCRIPTION = {
    "fp16": "fp16 compute, fp32 only where the overflow guard measured a risk (precision.py)",
    "int8": "coremltools linear_quantize_weights: int8 symmetric per-channel weights, fp16 compute",
    "palettize6": f"coremltools palettize_weights: 6-bit k-means LUT per {GROUP_SIZE} output channels, fp16 compute",
    "palettize4": f"coremltools palettize_weights: 4-bit k-means LUT per {GROUP_SIZE} output channels, fp16 compute",
    "w8a8": "int8 weights and calibrated int8 activations (refused: W8A8_REFUSAL)",
}


# Why w8a8 is refused on every platform (README "Compressed variants" has what was tried).
W8A8_REFUSAL = ("--compress w8a8 is not available in this exporter: coremltools 9.0 calibrates activations either "
                "with Core ML predictions (linear_quantize_activations, macOS only"
                + ("" if platform.system() == "Darwin" else ", and this is " + platform.system()) +
                ") or with its PyTorch CoreMLQuantizer, which imports torch.ao.quantization.quantizer that "
                "torch 2.13 removed; choose int8, palettize6 or palettize4 (compressed weights, fp16 activations)")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ExportError(f"unknown --compress scheme {scheme!r}; choose {', '.join(SCHEMES)}")
    if scheme == "w8a8":
        raise ExportError(W8A8_REFUSAL)
    return scheme


def minimum_target(scheme: str):
    ct = import_quietly("coremltools")
    return ct.target.iOS17 if scheme == "fp16" else ct.target.iOS18


def compress(mlmodel, scheme: str):
    """The compressed model (coremltools.optimize); fp16 returns the model unchanged."""
    if scheme == "fp16":
        return mlmodel
    cto = import_quietly("coremltools.optimize")
    # Constant tables from buffers (RoPE cos/sin, position encodings: exported names start with
    # "b_") are not weights: compressing them moves every position. Only parameters ("p_").
    ops = mlmodel._mil_program.functions["main"].operations
    skip = {op.name: None for op in ops if op.op_type == "const" and not op.name.startswith("p_")}
    skip.update({name: None for name in conv_bias_fusion_weights(ops)})
    with quiet_converters():
        if scheme == "int8":
            op = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                                    weight_threshold=WEIGHT_THRESHOLD)
            return cto.coreml.linear_quantize_weights(
                mlmodel, cto.coreml.OptimizationConfig(global_config=op, op_name_configs=skip))
        nbits = int(scheme[len("palettize"):])
        op = cto.coreml.OpPalettizerConfig(nbits=nbits, mode="kmeans", granularity="per_grouped_channel",
                                           group_size=GROUP_SIZE, weight_threshold=WEIGHT_THRESHOLD)
        return cto.coreml.palettize_weights(mlmodel,
                                            cto.coreml.OptimizationConfig(global_config=op, op_name_configs=skip))


def conv_bias_fusion_weights(ops) -> list:
    """Weights of convs whose output goes through a transpose into an add/sub (the ViT patch
    embedding + position embedding). coremltools 9.0's fuse_conv_bias pass reads such a conv's
    weight value and fails with "'NoneType' object has no attribute 'dtype'" when the weight is
    compressed (a constexpr op has no value), so these weights stay fp16."""
    names = []
    for op in ops:
        if op.op_type not in ("conv", "conv_transpose") or op.weight.op is None or op.weight.op.op_type != "const":
            continue
        kids = list(op.outputs[0].child_ops)
        if len(kids) == 1 and kids[0].op_type == "transpose":
            after = list(kids[0].outputs[0].child_ops)
            if len(after) == 1 and after[0].op_type in ("add", "sub"):
                names.append(op.weight.op.name)
    return names


def decompressed_weights(path: Path) -> dict:
    """{MIL weight name: float32 array} of every compressed weight in a saved .mlpackage."""
    ct = import_quietly("coremltools")
    from coremltools.converters.mil.frontend.milproto.load import load as load_mil

    with quiet_converters():
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
        prog = load_mil(spec, spec.specificationVersion, model.weights_dir)
    out = {}
    for op in prog.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            out[op.outputs[0].name] = np.asarray(op.materialized_val_inference(), np.float32)
    return out


def _param_for(mil_name: str, placeholders: dict) -> str | None:
    """'p_blocks_0_attn_qkv_weight_to_fp16_palettized' -> the torch parameter it came from."""
    base = mil_name.split("_to_fp16")[0]
    for suffix in ("_palettized", "_quantized"):
        base = base.split(suffix)[0]
    return placeholders.get(base)


class EmulatedStage:
    """A compressed Core ML stage as PyTorch runs it: the prepared graph with the package's
    decompressed weights, the fp16/fp32 ops of the converted program (an emulation)."""

    def __init__(self, plan, module, scheme: str):
        self.plan, self.module, self.scheme = plan, module, scheme
        self.mode = f"{scheme} weights + {plan.mode} plan"

    def emulate(self, inputs: tuple) -> list:
        with quiet_converters():
            return self.plan.emulate(inputs, module=self.module)


def load_emulated(ep, path: Path, scheme: str, plan=None) -> tuple:
    """(EmulatedStage, {"compressed_weights": n, "unmatched": [...]}) of a saved package:
    `plan` from fp16_guard, as converted; without one every op is fp16, like coreml.write
    without a plan."""
    if plan is None:
        from . import fp16_guard

        plan = fp16_guard.plan_stage("stage", ep, "fp16-unguarded", [], "nothing")
        plan.precisions = {name: "fp16" for name in plan.handles.values()}
    weights = decompressed_weights(path)
    placeholders = dict(plan.ep.graph_signature.inputs_to_parameters)
    ep = copy.deepcopy(plan.ep)
    unmatched, n = [], 0
    for name, value in weights.items():
        param = _param_for(name, placeholders)
        if param is None or param not in ep.state_dict:
            unmatched.append(name)
            continue
        old = ep.state_dict[param]
        ep.state_dict[param] = torch.nn.Parameter(torch.from_numpy(value.reshape(old.shape)), requires_grad=False)
        n += 1
    return EmulatedStage(plan, ep.module(), scheme), {"compressed_weights": n, "unmatched": unmatched}


def emulate(ep, path: Path, inputs: tuple, plan=None, scheme: str = "compressed") -> tuple:
    """Run the exported stage with the package's decompressed weights and the fp16 plan.

    Returns (outputs, {"compressed_weights": n, "unmatched": [...]}) — an emulation, not Core ML."""
    stage, info = load_emulated(ep, path, scheme, plan)
    return stage.emulate(inputs), info
