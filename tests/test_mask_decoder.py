"""Prompt encoder / mask decoder: parity with upstream fixtures, padded-prompt equivalence, export."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from etam_mobile.checkpoint import official_key_layout, synthetic_state_dict
from etam_mobile.configs import get_config, tiny_test_config
from etam_mobile.contracts import MASK_BIAS, Capacities, stage_specs
from etam_mobile.model.common import MLP
from etam_mobile.model.mask_decoder import (
    MaskDecoder,
    MaskDecoderStage,
    PromptEncoder,
    prompt_key_bias,
    stability_scores,
)

CASE = Path(__file__).parent / "fixtures" / "upstream_parity" / "ti512_two_objects"
TI512 = "efficienttam_ti_512x512"


@pytest.fixture(scope="module")
def stages():
    z = np.load(CASE / "stages.npz")
    return {k: torch.from_numpy(z[k].astype(np.float32)) for k in z.files if k.startswith("sam_")}


@pytest.fixture(scope="module")
def weights():
    return synthetic_state_dict(official_key_layout(TI512), 5)


class Heads(nn.Module):
    """Stand-in for the EfficientTAM container: just what MaskDecoderStage reads."""

    def __init__(self, cfg, sd):
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder(cfg)
        self.sam_mask_decoder = MaskDecoder(cfg)
        self.obj_ptr_proj = MLP(256, 256, 256, 3)
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, 256))
        prefixes = ("sam_prompt_encoder.", "sam_mask_decoder.", "obj_ptr_proj.", "no_obj_ptr")
        self.load_state_dict({k: v for k, v in sd.items() if k.startswith(prefixes)}, strict=True)
        self.eval()


@pytest.fixture(scope="module")
def ti512(weights):
    return Heads(get_config(TI512), weights)


@pytest.fixture(scope="module")
def tiny(weights):
    # The heads' parameter shapes do not depend on the image size, so the official weights fit.
    return Heads(tiny_test_config(), weights)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# ---- upstream fixtures ------------------------------------------------------------------


@pytest.mark.parametrize("call", [0, 1])  # call 0: clicks (1, 0); call 1: a box (labels 2, 3)
def test_prompt_encoder_matches_upstream(stages, ti512, call):
    pe = ti512.sam_prompt_encoder
    p = f"sam_prompt_encoder/{call}/"
    with torch.no_grad():
        sparse, dense = pe(stages[p + "kwargs.points.0"], stages[p + "kwargs.points.1"].to(torch.int32))
        image_pe = pe.dense_pe()
    ref = stages[p + "out.0"]
    assert sparse.shape == ref.shape == (1, 3, 256)  # 2 points + the appended pad point
    assert (sparse - ref).abs().max().item() < 1e-5 * ref.abs().max().item()
    assert _rel(dense, stages[p + "out.1"]) < 1e-3  # reference stored as float16
    assert _rel(image_pe, stages[f"sam_mask_decoder/{call}/kwargs.image_pe"]) < 1e-3


@pytest.mark.parametrize("call", [0, 1])
def test_mask_decoder_matches_upstream(stages, ti512, call):
    p = f"sam_mask_decoder/{call}/"
    with torch.no_grad():
        masks, iou, tokens, score = ti512.sam_mask_decoder(
            stages[p + "kwargs.image_embeddings"],
            stages[p + "kwargs.image_pe"],
            stages[p + "kwargs.sparse_prompt_embeddings"],
            stages[p + "kwargs.dense_prompt_embeddings"],
        )
    assert masks.shape == (1, 4, 128, 128) and iou.shape == (1, 4) and tokens.shape == (1, 4, 256)
    # Upstream returned one mask (multimask_output False) after dynamic selection: token 0 if
    # its stability >= 0.98, else the best-IoU multimask token. Reproduce that choice.
    stable = stability_scores(masks[:, :1], 0.05)[0, 0].item() >= 0.98
    pick = 0 if stable else 1 + int(iou[0, 1:].argmax())
    assert _rel(masks[:, pick : pick + 1], stages[p + "out.0"]) < 2e-3  # float16 inputs
    assert abs(iou[0, pick].item() - stages[p + "out.1"].item()) < 1e-3
    assert _rel(tokens[:, :1], stages[p + "out.2"]) < 2e-3  # token 0 always, multimask off
    assert abs(score.item() - stages[p + "out.3"].item()) < 1e-3
    # Another token's mask must not pass: the check can fail.
    other = 1 if pick == 0 else 0
    assert _rel(masks[:, other : other + 1], stages[p + "out.0"]) > 0.1


def test_stage_matches_upstream_fixture(stages, ti512):
    """The padded stage on the fixture's cond feats + clicks gives upstream's decoder outputs."""
    stage = MaskDecoderStage(ti512)
    pts = torch.zeros(1, 8, 2)
    pts[:, :2] = stages["sam_prompt_encoder/0/kwargs.points.0"]
    labels = torch.full((1, 8), -2, dtype=torch.int32)
    labels[:, :3] = -1
    labels[:, :2] = stages["sam_prompt_encoder/0/kwargs.points.1"].to(torch.int32)
    with torch.no_grad():
        masks, iou, ptr, score = stage(
            stages["sam_mask_decoder/0/kwargs.image_embeddings"], pts, labels, torch.zeros(1, 1, 128, 128), torch.zeros(1)
        )
    assert _rel(masks[:, :1], stages["sam_mask_decoder/0/out.0"]) < 2e-3
    assert abs(iou[0, 0].item() - stages["sam_mask_decoder/0/out.1"].item()) < 1e-3
    assert abs(score.item() - stages["sam_mask_decoder/0/out.3"].item()) < 1e-3


# ---- padded prompts ---------------------------------------------------------------------


def test_prompt_key_bias():
    lab = torch.tensor([[1, 0, -1, -2], [2, 3, -1, -2], [-1, -1, -2, -2], [2, 3, 1, 0]], dtype=torch.int32)
    want = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.float32) * MASK_BIAS
    assert torch.equal(prompt_key_bias(lab), want)


def _reference(heads, feats, pts, labels, mask):
    """Upstream's variable-length path: real points only, pad point appended, no masking."""
    pe, dec = heads.sam_prompt_encoder, heads.sam_mask_decoder
    sparse, dense = pe(pts, labels, mask)
    masks, iou, tokens, score = dec(feats, pe.dense_pe(), sparse, dense)
    appear = (score > 0).float().unsqueeze(-1)
    ptr = appear * heads.obj_ptr_proj(tokens) + (1 - appear) * heads.no_obj_ptr
    return masks, iou, ptr, score


def _cases():
    """1..6 clicks without a box; a box (2 corner points) plus 0..5 clicks; mask or not."""
    for box in (False, True):
        for clicks in range(0, 6) if box else range(1, 7):
            for has in (0, 1):
                yield box, clicks, has


def test_padded_stage_equals_variable_length(tiny):
    cfg = tiny_test_config()
    h, lr, S, N = cfg.feat_size, cfg.low_res_size, cfg.image_size, 8
    stage = MaskDecoderStage(tiny)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 256, h, h, generator=g)
    worst = 0.0
    n_cases = 0
    for box, clicks, has in _cases():
        real_pts = [torch.rand(2, 2, generator=g).sort(0).values * S] if box else []
        real_lab = [2, 3] if box else []
        real_pts.append(torch.rand(clicks, 2, generator=g) * S)
        real_lab += torch.randint(0, 2, (clicks,), generator=g).tolist()
        real_pts = torch.cat(real_pts)[None]
        real_lab = torch.tensor([real_lab], dtype=torch.int32)
        K = real_pts.shape[1]
        assert K < N
        mask = 5 * torch.randn(1, 1, lr, lr, generator=g)
        # Garbage in unused slots: wild coordinates (one NaN), and a garbage mask when has=0.
        pts = torch.cat([real_pts, 1e4 * torch.randn(1, N - K, 2, generator=g)], dim=1)
        pts[0, -1, 0] = float("nan")
        labels = torch.cat([real_lab, torch.full((1, N - K), -2, dtype=torch.int32)], dim=1)
        labels[0, K] = -1  # upstream's appended pad point
        with torch.no_grad():
            ref = _reference(tiny, feats, real_pts, real_lab, mask if has else None)
            got = stage(feats, pts, labels, mask, torch.tensor([float(has)]))
            wrong = _reference(tiny, feats, real_pts, real_lab, None if has else mask)
        for r, o in zip(ref, got):
            assert r.shape == o.shape and torch.isfinite(o).all()
            err = ((r - o).abs().max() / r.abs().max().clamp(min=1)).item()
            worst = max(worst, err)
            assert err < 1e-5, (box, clicks, has, err)
        assert _rel(got[0], wrong[0]) > 1e-2  # has_mask_input really switches the dense prompt
        n_cases += 1
    assert n_cases == 24, n_cases
    # Counter-check: without masking, extra pad slots change the result (so the test can fail).
    labels = torch.tensor([[1, -1, -2, -2, -2, -2, -2, -2]], dtype=torch.int32)
    pts = torch.rand(1, 8, 2, generator=g) * S
    with torch.no_grad():
        pe, dec = tiny.sam_prompt_encoder, tiny.sam_mask_decoder
        unmasked = dec(feats, pe.dense_pe(), pe.embed_points(pts, labels), pe.embed_dense(mask, torch.zeros(1)))[0]
        masked = stage(feats, pts, labels, mask, torch.zeros(1))[0]
    assert _rel(unmasked, masked) > 1e-3


def test_no_object_pointer(weights):
    """A negative object score swaps every pointer for no_obj_ptr (upstream fixed_no_obj_ptr)."""
    sd = dict(weights)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] = torch.full((1,), -40.0)
    sd["no_obj_ptr"] = torch.randn(1, 256)
    heads = Heads(tiny_test_config(), sd)
    cfg = tiny_test_config()
    feats = torch.randn(1, 256, cfg.feat_size, cfg.feat_size)
    labels = torch.tensor([[1, -1, -2, -2]], dtype=torch.int32)
    lr = cfg.low_res_size
    with torch.no_grad():
        _, _, ptr, score = MaskDecoderStage(heads)(feats, torch.rand(1, 4, 2) * 100, labels, torch.zeros(1, 1, lr, lr), torch.zeros(1))
    assert score.item() < 0
    assert torch.allclose(ptr, sd["no_obj_ptr"].expand(1, 4, 256), atol=1e-6)


def test_fully_padded_prompt_is_finite_and_matches_no_points(tiny):
    cfg = tiny_test_config()
    h, lr = cfg.feat_size, cfg.low_res_size
    feats = torch.randn(1, 256, h, h)
    labels = torch.full((1, 8), -2, dtype=torch.int32)
    labels[0, :2] = -1
    pts = torch.full((1, 8, 2), float("inf"))
    with torch.no_grad():
        got = MaskDecoderStage(tiny)(feats, pts, labels, torch.zeros(1, 1, lr, lr), torch.zeros(1))
        # Upstream tracking without clicks feeds a (0, 0) point labelled -1, then appends a pad.
        ref = _reference(tiny, feats, torch.zeros(1, 1, 2), torch.full((1, 1), -1, dtype=torch.int32), None)
    for r, o in zip(ref, got):
        assert torch.isfinite(o).all()
        assert ((r - o).abs().max() / r.abs().max().clamp(min=1)).item() < 1e-5


# ---- export -----------------------------------------------------------------------------


def test_stage_exports_and_matches_eager(tiny):
    cfg = tiny_test_config()
    spec = stage_specs(cfg, Capacities())["mask_decoder"]
    g = torch.Generator().manual_seed(1)
    N = spec.inputs[1].shape[1]
    labels = torch.full((1, N), -2, dtype=torch.int32)
    labels[0, :4] = torch.tensor([2, 3, 1, -1], dtype=torch.int32)
    example = (
        torch.randn(spec.inputs[0].shape, generator=g),
        torch.rand(spec.inputs[1].shape, generator=g) * cfg.image_size,
        labels,
        torch.randn(spec.inputs[3].shape, generator=g),
        torch.ones(1),
    )
    for t, x in zip(spec.inputs, example):
        assert tuple(x.shape) == tuple(t.shape) and x.dtype == t.dtype, t.name
    stage = MaskDecoderStage(tiny).eval()
    ep = torch.export.export(stage, example, strict=False)
    # Different values (other labels / no mask) through the same exported graph.
    labels2 = torch.full((1, N), -2, dtype=torch.int32)
    labels2[0, :3] = torch.tensor([1, 0, -1], dtype=torch.int32)
    example2 = (example[0], example[1], labels2, example[3], torch.zeros(1))
    for ex in (example, example2):
        with torch.no_grad():
            eager = stage(*ex)
            exported = ep.module()(*ex)
        assert len(exported) == len(spec.outputs)
        for t, e, x in zip(spec.outputs, eager, exported):
            assert tuple(x.shape) == tuple(t.shape) and x.dtype == t.dtype, t.name
            assert (e - x).abs().max().item() < 1e-4, t.name
