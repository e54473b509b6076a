"""Memory attention and memory encoder: parity with upstream's recorded calls, and proof that
the padded slot contract (garbage in invalid slots) equals the variable-length computation."""
import numpy as np
import pytest
import torch

from etam_mobile.checkpoint import load_model
from etam_mobile.configs import TEST_CONFIGS
from etam_mobile.contracts import Capacities, stage_specs
from etam_mobile.model.position import sine_position_encoding

from pathlib import Path

CASE = Path(__file__).parent / "fixtures" / "upstream_parity" / "ti512_two_objects"

REL_TOL = 1e-2  # fixture tensors are float16: relative to the tensor's mean magnitude


@pytest.fixture(scope="module")
def stages():
    z = np.load(CASE / "stages.npz")
    return {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files if k.startswith("memory_")}


def _rel(a, b):
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.parametrize("call", [0, 1])
def test_memory_attention_matches_upstream(ti512_model, stages, call):
    p = f"memory_attention/{call}/kwargs."
    with torch.no_grad():
        out = ti512_model.memory_attention(
            stages[p + "curr.0"], stages[p + "curr_pos.0"], stages[p + "memory"], stages[p + "memory_pos"],
            int(stages[p + "num_obj_ptr_tokens"]),
        )
    ref = stages[f"memory_attention/{call}/out"]
    assert out.shape == ref.shape
    assert _rel(out, ref) < REL_TOL


@pytest.mark.parametrize("call", [0, 1])
def test_memory_encoder_matches_upstream(ti512_model, stages, call):
    p = f"memory_encoder/{call}/"
    with torch.no_grad():
        out = ti512_model.memory_encoder(stages[p + "args.0"], stages[p + "args.1"])
    ref = stages[p + "out.vision_features"]
    assert _rel(out, ref) < REL_TOL
    # The position encoding upstream returns is the constant the stages bake in.
    pos = sine_position_encoding(64, 32, 32)
    assert torch.allclose(pos, stages[p + "out.vision_pos_enc.0"], atol=2e-3)


def _reference_call(model, feats, mem, tpos, ptrs):
    """The variable-length upstream-style call for the given valid memories."""
    cfg = model.cfg
    h = cfg.feat_size
    C, M = cfg.d_model, cfg.mem_dim
    curr = feats.flatten(2).permute(2, 0, 1)
    curr_pos = sine_position_encoding(C, h, h).flatten(2).permute(2, 0, 1)
    mpos = sine_position_encoding(M, h, h).flatten(2).permute(2, 0, 1)
    memory = [m[None].flatten(2).permute(2, 0, 1) for m in mem]
    pos = [mpos + model.maskmem_tpos_enc[int(t)] for t in tpos]
    memory.append(ptrs.reshape(-1, 1, M))
    pos.append(torch.zeros(ptrs.shape[0] * (C // M), 1, M))
    out = model.memory_attention(curr, curr_pos, torch.cat(memory), torch.cat(pos), ptrs.shape[0] * (C // M))
    return out.permute(1, 2, 0).reshape(1, C, h, h)


@pytest.fixture(scope="module", params=sorted(TEST_CONFIGS))
def small_model(request):
    model, _ = load_model(TEST_CONFIGS[request.param], None, seed=3, quiet=True)
    return model


@pytest.mark.parametrize("for_export", [False, True], ids=["eager_form", "export_form"])
@pytest.mark.parametrize("n_mem,n_ptr", [(1, 1), (2, 3), (4, 9), (8, 17)])
def test_padded_slots_equal_variable_length(small_model, n_mem, n_ptr, for_export):
    """Both forms of the stage (export form: v_proj after attention) against upstream's
    variable-length computation, for plain and both pooled variants, 1 to 8 valid slots."""
    cfg = small_model.cfg
    caps = Capacities()
    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    g = torch.Generator().manual_seed(n_mem * 31 + n_ptr)
    feats = torch.randn(1, C, h, h, generator=g)
    # Garbage everywhere, including invalid slots: they must not matter.
    mem = torch.randn(K, M, h, h, generator=g) * 3
    tpos = torch.randint(0, cfg.num_maskmem, (K,), generator=g, dtype=torch.int32)
    ptrs = torch.randn(P, C, generator=g)
    mem_valid = (torch.arange(K) < n_mem).float()
    ptr_valid = (torch.arange(P) < n_ptr).float()
    stage = small_model.stages(for_export=for_export)["memory_attention"]
    with torch.no_grad():
        got = stage(feats, mem, tpos, mem_valid, ptrs, ptr_valid)
        ref = _reference_call(small_model, feats, mem[:n_mem], tpos[:n_mem], ptrs[:n_ptr])
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_pooled_branch_depends_on_valid_slots_not_tensor_length():
    """One valid memory among 8 slots must take upstream's unpooled branch."""
    model, _ = load_model(TEST_CONFIGS["test_tiny_pool1"], None, seed=3, quiet=True)
    cfg = model.cfg
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    g = torch.Generator().manual_seed(0)
    feats, mem = torch.randn(1, C, h, h, generator=g), torch.randn(8, M, h, h, generator=g)
    ptrs = torch.randn(17, C, generator=g)
    tpos = torch.full((8,), 6, dtype=torch.int32)
    valid = torch.zeros(8)
    valid[3] = 1.0  # the only valid slot, not even the first
    pvalid = torch.zeros(17)
    pvalid[0] = 1.0
    with torch.no_grad():
        got = model.stages()["memory_attention"](feats, mem, tpos, valid, ptrs, pvalid)
        unpooled = _reference_call(model, feats, mem[3:4], tpos[3:4], ptrs[:1])
        pooled_twice = _reference_call(model, feats, mem[[3, 3]], tpos[[3, 3]], ptrs[:1])
    assert torch.allclose(got, unpooled, atol=1e-4)
    assert not torch.allclose(got, pooled_twice, atol=1e-3)


@pytest.mark.parametrize("for_export", [False, True], ids=["eager_form", "export_form"])
def test_empty_bank_gives_no_mem_embed_and_no_nans(tiny_model, for_export):
    cfg = tiny_model.cfg
    spec = stage_specs(cfg, Capacities())["memory_attention"]
    ins = [torch.randn(t.shape).to(t.dtype) if t.dtype.is_floating_point else torch.zeros(t.shape, dtype=t.dtype)
           for t in spec.inputs]
    ins[3].zero_()
    ins[5].zero_()
    with torch.no_grad():
        out = tiny_model.stages(for_export=for_export)["memory_attention"](*ins)
    assert torch.isfinite(out).all()
    expected = ins[0] + tiny_model.no_mem_embed.reshape(1, -1, 1, 1)
    assert torch.allclose(out, expected)


def test_memory_encoder_stage_binarize_switch(tiny_model):
    cfg = tiny_model.cfg
    lr, h = cfg.low_res_size, cfg.feat_size
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1, cfg.d_model, h, h, generator=g)
    mask = torch.randn(1, 1, lr, lr, generator=g) * 4
    stage = tiny_model.stages()["memory_encoder"]
    hi = torch.nn.functional.interpolate(mask, size=(cfg.image_size,) * 2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        for flag, m in ((1.0, (hi > 0).float()), (0.0, torch.sigmoid(hi))):
            got = stage(feats, mask, torch.tensor([flag]))
            ref = tiny_model.memory_encoder(feats, m * 20 - 10)
            assert torch.allclose(got, ref, atol=1e-5)
