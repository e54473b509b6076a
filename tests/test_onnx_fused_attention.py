"""The fused attention option of the ONNX export (export/onnx.py `fused_attention`: SDPA as ONNX
Runtime's com.microsoft::MultiHeadAttention, the per-key bias as an extra key column): equal to
PyTorch's SDPA at fp32 noise for every shape the memory attention produces, torchlib's translation
for the rest, and the memory-attention graph matches the eager stage in ONNX Runtime."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from etam_mobile.checkpoint import load_model
from etam_mobile.configs import TEST_CONFIGS
from etam_mobile.contracts import MASK_BIAS, Capacities, StageSpec, TensorSpec, memory_attention_spec

from etam_export import onnx as onnx_export
from etam_export.artifact import torch_export
from etam_export.buckets import bucket_inputs
from etam_export.common import example_inputs, run_eager


CASES = [  # (queries, keys, key width, value width, bias)
    (64, 300, 32, 32, None),         # self/cross attention, no bias
    (64, 300, 32, 8, "slots"),       # export form: narrower values, masked slots
    (64, 40, 32, 8, "slots"),        # fewer keys than queries (pooled one-slot buckets)
    (64, 300, 32, 8, "boost"),       # pooled-logits variant: +2 ln 2 on some keys
    (64, 300, 32, 8, "all_masked"),  # empty bank: no NaN
]


class Attentions(torch.nn.Module):
    """One SDPA per case (one export for all: exports are the slow part); `heads` > 1 is no
    memory-attention form."""

    def __init__(self, cases, heads: int = 1):
        super().__init__()
        self.cases, self.heads = cases, heads

    def forward(self, *arrays):
        outs = []
        for i, case in enumerate(self.cases):
            q, k, v, mask = arrays[4 * i:4 * i + 4]
            q, k, v = (t.reshape(1, self.heads, t.shape[-2], -1) for t in (q, k, v))
            outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=None if case[4] is None else mask.reshape(1, 1, 1, -1)))
        return tuple(outs)


def _case_arrays(n, m, d, dv, bias, seed):
    g = np.random.default_rng(seed)
    q, k = (g.standard_normal((n, d)) * 2).astype(np.float32), (g.standard_normal((m, d)) * 2).astype(np.float32)
    v = g.standard_normal((m, dv)).astype(np.float32)
    mask = np.zeros((m,), np.float32)
    if bias == "slots":
        mask = np.where(np.arange(m) % 7 < 4, 0.0, MASK_BIAS).astype(np.float32)
    elif bias == "boost":
        mask = np.where(np.arange(m) < m // 2, 1.3862944, 0.0).astype(np.float32)
    elif bias == "all_masked":
        mask = np.full((m,), MASK_BIAS, np.float32)
    return [q, k, v, mask]


def _run(module, arrays, path):
    """Export `module` with fused_attention and run it in ONNX Runtime: (info, got, ref)."""
    ep = torch.export.export(module, tuple(torch.from_numpy(a) for a in arrays), strict=False)
    ref = [o.numpy() for o in module(*[torch.from_numpy(a) for a in arrays])]
    spec = StageSpec("memory_attention", tuple(TensorSpec(f"in{i}", a.shape, torch.float32) for i, a in enumerate(arrays)),
                     tuple(TensorSpec(f"out{i}", o.shape, torch.float32) for i, o in enumerate(ref)))
    info = onnx_export.write(ep, path, spec, fused_attention=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    used = {x.name for x in sess.get_inputs()}  # unused masks are dropped from the graph
    return info, sess.run(None, {f"in{i}": a for i, a in enumerate(arrays) if f"in{i}" in used}), ref


def test_fused_sdpa_equals_torch_sdpa(tmp_path):
    arrays = [a for i, case in enumerate(CASES) for a in _case_arrays(*case, seed=i)]
    info, got, ref = _run(Attentions(CASES), arrays, tmp_path / "a.onnx")
    assert info["fused_attention_nodes"] == len(CASES)
    assert "Softmax" not in [n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node]
    for case, g, r in zip(CASES, got, ref):
        assert g.shape == r.shape and np.isfinite(g).all(), case
        # All keys masked happens only with an empty bank, whose output the stage discards; the
        # -1e4 logits then lose ~1e-3 to rounding, in every form (as in the ExecuTorch variant).
        tol = 1e-2 if case[4] == "all_masked" else 1e-5
        assert np.abs(g - r).max() < tol * max(1.0, np.abs(r).max()), case


def test_other_attention_forms_keep_torchlibs_translation(tmp_path):
    """Two heads is no memory-attention form: exported as before (no contrib op), same values."""
    case = (64, 64, 32, 32, "slots")
    info, got, ref = _run(Attentions([case], heads=2), _case_arrays(*case, seed=0), tmp_path / "b.onnx")
    assert not info["fused_attention"]
    assert np.abs(got[0] - ref[0]).max() < 1e-5 * max(1.0, np.abs(ref[0]).max())


def _program_cases():
    """Every config's full graph and the pooled configs' one-slot bucket (no pooling branch) in the
    default suite; the rest (smaller graphs of the same form; fewer keys than queries is covered
    by test_fused_sdpa_equals_torch_sdpa) are slow."""
    for i, slots in enumerate([(8, 17), (2, 2), (1, 1)]):
        for config in sorted(TEST_CONFIGS):
            fast = slots == (8, 17) or (slots == (1, 1) and TEST_CONFIGS[config].pooled)
            yield pytest.param(config, slots, id=f"slots{i}-{config}", marks=[] if fast else [pytest.mark.slow])


@pytest.mark.parametrize("config,slots", list(_program_cases()))
def test_fused_memory_attention_graph_matches_eager_stage(config, slots, tmp_path):
    """Plain and both pooled variants, full graph and slot buckets (the one-slot pooled graph skips
    pooling; 2-slot pooled keys are fewer than queries), run in ONNX Runtime."""
    model, _ = load_model(TEST_CONFIGS[config], None, seed=3, quiet=True)
    full = example_inputs(model.cfg, Capacities(), model.stages(), seed=2)["memory_attention"]
    inputs = bucket_inputs(full, *slots)
    ref = run_eager(model.stages()["memory_attention"], inputs)
    stage = model.stages(for_export=True)["memory_attention"]
    ep = onnx_export.prepare(stage, torch_export(stage, inputs, "memory_attention"), inputs, "memory_attention")
    spec = memory_attention_spec(model.cfg, *slots)
    info = onnx_export.write(ep, tmp_path / "ma.onnx", spec, fused_attention=True)
    graph = onnx.load(str(tmp_path / "ma.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    # every attention is fused: self-attention and 1 or 2 cross-attentions per layer, no Softmax left
    assert info["fused_attention_nodes"] == ops.count("MultiHeadAttention") >= 2 * model.cfg.mem_attn_layers
    assert "Softmax" not in ops
    res = onnx_export.verify(tmp_path / "ma.onnx", spec, inputs, ref)
    assert res["ok"]
    got = onnx_export.session(tmp_path / "ma.onnx").run(None, {t.name: a for t, a in zip(spec.inputs, inputs)})[0]
    assert np.abs(got - ref[0]).max() < 1e-4 * np.abs(ref[0]).max()


def test_onnx_backend_names_the_artifact_a_runtime_cannot_load(tmp_path):
    """An ONNX Runtime without an op the graph uses (e.g. a build without contrib ops) gives one
    ArtifactError naming the file and the fix, not ONNX Runtime's multi-line error."""
    from onnx import TensorProto, helper

    from etam_mobile.runtime.exported import ArtifactError, OnnxBackend

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.microsoft")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "memory_attention.onnx"))
    backend = OnnxBackend.__new__(OnnxBackend)  # only _open is exercised
    with pytest.raises(ArtifactError, match=r"memory_attention\.onnx cannot be loaded by this ONNX Runtime .*"
                                            r"contrib op com\.microsoft::MultiHeadAttention.*re-export") as info:
        backend._open(tmp_path / "memory_attention.onnx")
    assert "\n" not in str(info.value)
