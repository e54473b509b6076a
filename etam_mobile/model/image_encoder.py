"""EfficientTAM image encoder: a plain ViTDet-style ViT trunk plus a one-level neck.

Parameter names follow the official checkpoint (`image_encoder.trunk.*`, `image_encoder.neck.*`),
so `ImageEncoder.load_state_dict` takes the checkpoint's `image_encoder.` keys unchanged.

Upstream semantics reproduced here:
- patch embed: Conv2d(3, dim, 16, stride 16), tokens kept as (B, H, W, C);
- absolute position embedding (1, 1 + 14*14, dim) from 224-px pretraining: the cls-token
  row is dropped and the 14x14 grid is resized bicubically (align_corners=False, A=-0.75)
  to the feature grid. Bicubic resizing is separable and linear, so we apply it as two
  matmuls with constant interpolation matrices built at construction (by running PyTorch's
  own bicubic kernel on identity matrices): same weights as `F.interpolate`, but only
  matmul in the graph, which every export target supports, and it still reads the loaded
  `pos_embed` parameter at run time;
- blocks: pre-norm LayerNorm(eps 1e-6) -> attention -> residual, LayerNorm -> GELU MLP ->
  residual; no rel-pos, no layer scale. Blocks outside `global_blocks` attend inside
  window x window tiles of the zero-padded grid (padding happens after norm1, and the padded
  zero tokens take part in attention as keys, exactly as upstream);
- only the output of the last global block is used (upstream's return_interm_layers=False);
- neck: conv1x1 (no bias) -> LayerNorm2d -> conv3x3 pad 1 (no bias) -> LayerNorm2d, one level.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModelConfig
from .common import MLP, LayerNorm2d


def bicubic_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) matrix M with M @ v == 1-D bicubic resize of v (align_corners=False).

    Built by resizing an identity with PyTorch's own bicubic kernel, so border clamping and
    the cubic coefficient (-0.75) are exactly what upstream's F.interpolate uses.
    """
    eye = torch.eye(src, dtype=torch.float32).reshape(src, 1, src, 1)
    out = F.interpolate(eye, size=(dst, 1), mode="bicubic", align_corners=False)
    return out[:, 0, :, 0].t().contiguous()


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nH * nW, window, window, C), zero-padding H, W up to multiples."""
    B, H, W, C = x.shape
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.reshape(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C)


def window_unpartition(windows: torch.Tensor, window: int, hw: tuple) -> torch.Tensor:
    """Inverse of window_partition, cropping the padding away."""
    H, W = hw
    Hp, Wp = H + (-H) % window, W + (-W) % window
    C = windows.shape[-1]
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.reshape(B, Hp // window, Wp // window, window, window, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :]
    return x


class Attention(nn.Module):
    """Multi-head self-attention over the tokens of a (B, H, W, C) grid."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.permute(0, 2, 1, 3).reshape(B, H, W, C)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block; window > 0 means windowed attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int):
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, 2, activation=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window > 0:
            hw = (x.shape[1], x.shape[2])
            y = window_unpartition(self.attn(window_partition(y, self.window)), self.window, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, H, W, C)


class ViTTrunk(nn.Module):
    """Plain ViT with absolute position embedding; returns the last global block's output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.pretrain_grid = cfg.pretrain_img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pretrain_grid**2 + 1, dim))  # + cls token
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, 0 if i in cfg.global_blocks else cfg.window_size)
            for i in range(cfg.depth)
        )
        globals_ = [i for i in range(cfg.depth) if i in cfg.global_blocks]
        if not globals_:
            raise ValueError("the ViT trunk needs at least one global-attention block")
        # Upstream runs later blocks too but discards them; their output never reaches the neck.
        self.num_run = globals_[-1] + 1
        grid = cfg.feat_size
        self.resize = grid != self.pretrain_grid
        if self.resize:
            m = bicubic_matrix(self.pretrain_grid, grid)
            self.register_buffer("pos_resize", m, persistent=False)

    def abs_pos(self) -> torch.Tensor:
        """(1, h, w, C) position embedding resized from the loaded parameter."""
        g, C = self.pretrain_grid, self.pos_embed.shape[-1]
        pos = self.pos_embed[0, 1:].reshape(g, g, C)  # drop the cls token
        if not self.resize:
            return pos.unsqueeze(0)
        m = self.pos_resize  # (h, g)
        rows = torch.matmul(m, pos.reshape(g, g * C)).reshape(m.shape[0], g, C)  # resize H
        return torch.matmul(m, rows).unsqueeze(0)  # resize W, batched over rows -> (1, h, w, C)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image) + self.abs_pos()
        for blk in self.blocks[: self.num_run]:
            x = blk(x)
        return x.permute(0, 3, 1, 2)  # (B, C, h, w)


class ViTDetNeck(nn.Module):
    def __init__(self, in_dim: int, d_model: int):
        super().__init__()
        level = nn.Sequential(
            OrderedDict(
                conv_1x1=nn.Conv2d(in_dim, d_model, kernel_size=1, bias=False),
                norm_0=LayerNorm2d(d_model),
                conv_3x3=nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=False),
                norm_1=LayerNorm2d(d_model),
            )
        )
        self.convs = nn.ModuleList([level])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs[0](x)


class ImageEncoder(nn.Module):
    """Image (B, 3, S, S), normalized -> vision features (B, d_model, S/16, S/16).

    The output is upstream's `vision_features` (== `backbone_fpn[0]`; scalp 0, one level).
    Upstream's `vision_pos_enc` is a constant: see model/position.sine_position_encoding.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.trunk = ViTTrunk(cfg)
        self.neck = ViTDetNeck(cfg.embed_dim, cfg.d_model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.neck(self.trunk(image))


class ImageEncoderStage(nn.Module):
    """Export stage `image_encoder`: image (1, 3, S, S) float32 -> feats (1, 256, h, w)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.image_encoder = model.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


__all__ = ["ImageEncoder", "ImageEncoderStage", "bicubic_matrix", "window_partition", "window_unpartition"]
