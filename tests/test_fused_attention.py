"""The fused attention option of the exported memory attention (ExecuTorch's llama::custom_sdpa,
export/executorch.py `_sdpa_fused`; off by default, measured slower than the bmm form here): equal to PyTorch's SDPA at fp32 noise for every shape the
stages produce, and the lowered memory-attention program matches the eager stage."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from etam_mobile.checkpoint import load_model
from etam_mobile.configs import TEST_CONFIGS
from etam_mobile.contracts import MASK_BIAS, Capacities

from etam_export import executorch as et_export
from etam_export.artifact import torch_export
from etam_export.buckets import bucket_inputs
from etam_export.common import example_inputs, run_eager

et_export.load_custom_ops()


@pytest.mark.parametrize("n,m,d,dv,bias", [
    (64, 300, 32, 32, None),        # self/cross attention, no bias
    (64, 300, 32, 8, "slots"),      # export form: narrower values, masked slots
    (64, 40, 32, 8, "slots"),       # fewer keys than queries (pooled one-slot buckets)
    (64, 20, 32, 32, None),         # fewer keys, no bias
    (64, 300, 32, 8, "boost"),      # pooled-logits variant: +2 ln 2 on some keys
    (64, 300, 32, 8, "all_masked"),  # empty bank: no NaN, uniform weights like the bmm form
])
def test_fused_sdpa_equals_torch_sdpa(n, m, d, dv, bias):
    g = torch.Generator().manual_seed(n + m + d + dv)
    q, k = torch.randn(1, 1, n, d, generator=g) * 2, torch.randn(1, 1, m, d, generator=g) * 2
    v = torch.randn(1, 1, m, dv, generator=g)
    mask = None
    if bias == "slots":
        mask = torch.where(torch.arange(m) % 7 < 4, 0.0, MASK_BIAS)
    elif bias == "boost":
        mask = torch.where(torch.arange(m) < m // 2, 1.3862944, 0.0)
    elif bias == "all_masked":
        mask = torch.full((m,), MASK_BIAS)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[None, None, None])
    got = et_export._sdpa_fused(q, k, v, None if mask is None else mask[None, None, None])
    assert got.shape == ref.shape
    assert torch.isfinite(got).all()
    # Every key masked happens only with an empty bank, whose output the stage discards
    # (no_mem_embed path); the -1e4 logits then lose ~1e-3 to rounding, in every form.
    tol = 1e-2 if bias == "all_masked" else 1e-5
    assert float((got - ref).abs().max()) < tol * max(1.0, float(ref.abs().max()))


def _program_cases():
    """Every config's full graph and the pooled configs' small buckets in the default suite; the
    plain config's small buckets (no branch of their own: a smaller plain graph) are slow."""
    for i, slots in enumerate([(8, 17), (2, 2), (1, 1)]):
        for config in sorted(TEST_CONFIGS):
            plain_bucket = slots != (8, 17) and not TEST_CONFIGS[config].pooled
            yield pytest.param(config, slots, id=f"slots{i}-{config}", marks=[pytest.mark.slow] if plain_bucket else [])


@pytest.mark.parametrize("config,slots", list(_program_cases()))
def test_fused_memory_attention_program_matches_eager_stage(config, slots, tmp_path):
    """Plain and both pooled variants, full graph and slot buckets (the one-slot pooled graph
    skips pooling; 2-slot pooled keys are fewer than queries), run in ExecuTorch's Python runtime."""
    model, _ = load_model(TEST_CONFIGS[config], None, seed=3, quiet=True)
    caps = Capacities()
    full = example_inputs(model.cfg, caps, model.stages(), seed=2)["memory_attention"]
    inputs = bucket_inputs(full, *slots)
    ref = run_eager(model.stages()["memory_attention"], inputs)
    ep = torch_export(model.stages(for_export=True)["memory_attention"], inputs, "memory_attention")
    info = et_export.write(ep, tmp_path / "ma.pte", "memory_attention", "executorch", "fp32", fused_attention=True)
    assert info["fused_attention"] and "llama.custom_sdpa.default" in info["not_delegated_ops"]
    _, program = et_export.load(tmp_path / "ma.pte")
    got = program.load_method("forward").execute([torch.from_numpy(a) for a in inputs])[0].numpy()
    assert np.abs(got - ref[0]).max() < 1e-4 * np.abs(ref[0]).max()


def test_default_lowering_is_the_measured_faster_bmm_form(tmp_path):
    model, _ = load_model(TEST_CONFIGS["test_tiny"], None, seed=3, quiet=True)
    inputs = example_inputs(model.cfg, Capacities(), model.stages(), seed=2)["memory_attention"]
    ep = torch_export(model.stages(for_export=True)["memory_attention"], inputs, "memory_attention")
    info = et_export.write(ep, tmp_path / "ma.pte", "memory_attention", "executorch", "fp32")
    assert not info["fused_attention"]
