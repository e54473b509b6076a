"""Image encoder stage: preprocessing and encoder parity with upstream fixtures, and export."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from etam_mobile.checkpoint import official_key_layout, synthetic_state_dict
from etam_mobile.configs import get_config, tiny_test_config
from etam_mobile.contracts import Capacities, stage_specs
from etam_mobile.model.image_encoder import (
    ImageEncoder,
    ImageEncoderStage,
    window_partition,
    window_unpartition,
)
from etam_mobile.preprocess import preprocess_frame

CASE = Path(__file__).parent / "fixtures" / "upstream_parity" / "ti512_two_objects"
PREFIX = "image_encoder."


@pytest.fixture(scope="module")
def stages():
    z = np.load(CASE / "stages.npz")
    return {k: z[k] for k in z.files if k.startswith("image_encoder/")}


@pytest.fixture(scope="module")
def ti512_encoder():
    cfg = get_config("efficienttam_ti_512x512")
    sd = synthetic_state_dict(official_key_layout(cfg.name), 5)
    enc = ImageEncoder(cfg).eval()
    enc.load_state_dict({k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}, strict=True)
    return enc


def _frame(i):
    with Image.open(CASE / "frames" / f"{i:05d}.png") as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("call", [0, 1])
def test_preprocess_matches_upstream_bitwise(stages, call):
    # Fixture inputs are float16; our float32 must round to exactly the same float16
    # values, which only holds if the float32 arithmetic is the same as upstream's.
    ours = preprocess_frame(_frame(call), 512)
    assert ours.shape == (1, 3, 512, 512) and ours.dtype == torch.float32
    ref = stages[f"image_encoder/{call}/args.0"]
    assert np.array_equal(ours.numpy().astype(np.float16), ref)


def test_preprocess_rejects_bad_frames():
    with pytest.raises(ValueError):
        preprocess_frame(np.zeros((4, 4, 3), np.float32), 64)
    with pytest.raises(ValueError):
        preprocess_frame(np.zeros((4, 4), np.uint8), 64)


def test_pos_embed_is_bicubic_resize_without_cls_token(ti512_encoder):
    trunk = ti512_encoder.trunk
    grid = trunk.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(32, 32), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    err = (trunk.abs_pos() - ref).abs().max().item()
    assert err < 1e-6 * ref.abs().max().item() + 1e-9, err


@pytest.mark.parametrize("call", [0, 1])
def test_encoder_matches_upstream(stages, ti512_encoder, call):
    image = torch.from_numpy(stages[f"image_encoder/{call}/args.0"].astype(np.float32))
    with torch.no_grad():
        feats = ti512_encoder(image)
    assert feats.shape == (1, 256, 32, 32)
    for key in ("vision_features", "backbone_fpn.0"):
        ref = torch.from_numpy(stages[f"image_encoder/{call}/out.{key}"].astype(np.float32))
        rel = ((feats - ref).abs().max() / ref.abs().max()).item()
        # float16 storage of the reference alone gives ~4e-4; a bilinear pos-embed resize
        # gives ~1.6e-3, an unpadded window ~0.6.
        assert rel < 1e-3, (key, rel)


@pytest.mark.parametrize("hw", [(8, 8), (6, 6), (5, 7)])
def test_window_roundtrip(hw):
    x = torch.randn(1, *hw, 3)
    w = window_partition(x, 4)
    assert w.shape[1:] == (4, 4, 3)
    assert torch.equal(window_unpartition(w, 4, hw), x)


class _Container(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)


@pytest.mark.parametrize("image_size", [128, 96])  # 96: 6x6 grid, padded to 8x8 windows
def test_stage_export_matches_eager(image_size):
    cfg = tiny_test_config(image_size=image_size)
    model = _Container(cfg).eval()
    layout = tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
    model.load_state_dict(synthetic_state_dict(layout, 3), strict=True)
    stage = ImageEncoderStage(model).eval()
    spec = stage_specs(cfg, Capacities())["image_encoder"]
    (inp,), (out,) = spec.inputs, spec.outputs
    image = torch.randn(inp.shape, generator=torch.Generator().manual_seed(0), dtype=inp.dtype)
    with torch.no_grad():
        eager = stage(image)
    assert eager.shape == out.shape and eager.dtype == out.dtype
    ep = torch.export.export(stage, (image,))
    exported = ep.module()(image)
    err = (exported - eager).abs().max().item()
    assert err < 1e-4, err
