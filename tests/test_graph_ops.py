"""The memory attention's graph-ops export form (MemoryAttentionStage(graph_ops=True), the default
with for_export): the same values as the previous op forms, and an ExecuTorch lowering that keeps
everything but a few tiny front ops (slot-position lookup, constants) inside XNNPACK."""
import numpy as np
import pytest
import torch

from etam_mobile.checkpoint import load_model
from etam_mobile.configs import TEST_CONFIGS
from etam_mobile.contracts import Capacities
from etam_mobile.model.memory_attention import MemoryAttentionStage, apply_rope, apply_rope_graph, rope_tables

from etam_export import executorch as et_export
from etam_export.artifact import torch_export
from etam_export.buckets import bucket_inputs
from etam_export.common import example_inputs, run_eager


def test_graph_rope_equals_rope():
    cos, sin = rope_tables(32, 4, 4, 10000.0)
    x = torch.randn(3, 16, 32)
    got = apply_rope_graph(x, cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1))
    assert torch.allclose(got, apply_rope(x, cos, sin), rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", sorted(TEST_CONFIGS))
@pytest.mark.parametrize("n_valid", [0, 1, 2, 8])
def test_graph_ops_form_equals_previous_export_form(config, n_valid):
    """Plain and both pooled variants; 0 valid slots (no_mem path), 1 (pooled: single branch), more."""
    model, _ = load_model(TEST_CONFIGS[config], None, seed=5, quiet=True)
    cfg = model.cfg
    g = torch.Generator().manual_seed(n_valid)
    h, C, M, K, P = cfg.feat_size, cfg.d_model, cfg.mem_dim, 8, 17
    feats, mem = torch.randn(1, C, h, h, generator=g), torch.randn(K, M, h, h, generator=g)
    tpos = torch.arange(K, dtype=torch.int32) % cfg.num_maskmem
    mem_valid = (torch.arange(K) < n_valid).float()
    ptrs, ptr_valid = torch.randn(P, C, generator=g), (torch.arange(P) < max(1, n_valid)).float()
    args = (feats, mem, tpos, mem_valid, ptrs, ptr_valid)
    with torch.no_grad():
        new = MemoryAttentionStage(model, for_export=True)(*args)
        old = MemoryAttentionStage(model, for_export=True, graph_ops=False)(*args)
        ref = MemoryAttentionStage(model)(*args)
    assert MemoryAttentionStage(model, for_export=True).graph_ops and not MemoryAttentionStage(model).graph_ops
    peak = float(ref.abs().max())
    assert float((new - old).abs().max()) <= 1e-6 * peak
    assert float((new - ref).abs().max()) <= 1e-5 * peak


@pytest.mark.parametrize("config,slots", [("test_tiny", (8, 17)), ("test_tiny_pool1", (2, 2))])
def test_bmm_lowering_is_delegated_and_matches_eager(config, slots, tmp_path):
    """Before the graph-ops form, 40 select_copy + 42 unsqueeze_copy + 6-10 expand_copy stayed
    outside XNNPACK (85 % of nodes delegated at 512 px); now only the front ops do."""
    model, _ = load_model(TEST_CONFIGS[config], None, seed=3, quiet=True)
    full = example_inputs(model.cfg, Capacities(), model.stages(), seed=2)["memory_attention"]
    inputs = bucket_inputs(full, *slots)
    ref = run_eager(model.stages()["memory_attention"], inputs)
    ep = torch_export(model.stages(for_export=True)["memory_attention"], inputs, "memory_attention")
    info = et_export.write(ep, tmp_path / "ma.pte", "memory_attention", "executorch", "fp32")
    outside = info["not_delegated_ops"]
    assert not {"select_copy", "unsqueeze_copy", "expand_copy", "eq"} & set(outside), outside
    assert sum(outside.values()) <= 10 and info["delegated_fraction"] > 0.95, info
    _, program = et_export.load(tmp_path / "ma.pte")
    got = program.load_method("forward").execute([torch.from_numpy(a) for a in inputs])[0].numpy()
    assert np.abs(got - ref[0]).max() < 1e-4 * np.abs(ref[0]).max()
