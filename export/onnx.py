"""ONNX target: torch.onnx.export(dynamo=True) of the exported stage, single file, opset 20,
checked by onnx.checker and run in ONNX Runtime (CPU) for parity."""
from __future__ import annotations

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


def write(ep, path: Path, spec: StageSpec) -> dict:
    try:
        import onnx
    except ImportError as exc:
        raise ExportError(f"onnx is not installed ({exc}); pip install onnx onnxscript", spec.name, "onnx") from None
    try:
        with quiet_converters():
            torch.onnx.export(
                ep, (), str(path), dynamo=True, opset_version=OPSET, external_data=False, optimize=True,
                input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            )
    except Exception as exc:
        raise wrap_error(exc, spec.name, "onnx", "ONNX export") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise wrap_error(exc, spec.name, "onnx", "onnx.checker") from exc
    model = onnx.load(str(path), load_external_data=False)
    return {"opset": OPSET, "nodes": len(model.graph.node), "precision": "fp32"}


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
