"""SAM-style prompt encoder and mask decoder, plus the export stage `mask_decoder`.

Parameter names follow the official checkpoint (`sam_prompt_encoder.*`, `sam_mask_decoder.*`),
so each module loads its checkpoint prefix unchanged.

Upstream semantics reproduced here (EfficientTAM == SAM 2 heads without high-res features):
- prompt points: +0.5 (pixel centre), divided by the model input size S, encoded with random
  Fourier features sin/cos(2*pi * (2c - 1) @ G), G = `pe_layer.positional_encoding_gaussian_matrix`;
  label -1 -> zero PE + `not_a_point_embed`; labels 0..3 add `point_embeddings[label]`
  (0 negative click, 1 positive click, 2/3 box corners). The tracker always calls the prompt
  encoder with boxes=None, so upstream always appends ONE pad point (label -1); when tracking
  without clicks it also feeds one (0, 0) point labelled -1, so there are TWO -1 tokens;
- dense prompt: `mask_downscaling(mask logits)` if a mask is given, else `no_mask_embed`
  broadcast over the grid; the image PE is the same Fourier features of the cell centres;
- decoder tokens are [obj_score_token, iou_token, mask_tokens x4, sparse prompts...];
  a depth-2 TwoWayTransformer (8 heads, MLP 2048, cross-attention at dim 128), whose first
  block has no PE and no residual on the token self-attention;
- masks = hypernetwork MLP(mask token) . upscaled image embedding (2 transposed convs, x4);
  iou = sigmoid(MLP(iou token)); object score logit = MLP(obj_score token).

The export stage takes a fixed number of prompt slots. Label -1 is a real not-a-point token
(the runtime writes as many as upstream would feed); label -2 (`EMPTY_LABEL`) is an empty slot
that gets `MASK_BIAS` on its attention logits wherever it is a key, which makes the result
equal to upstream's variable-length computation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..configs import ModelConfig
from ..contracts import EMPTY_LABEL, MASK_BIAS, NUM_MASK_TOKENS
from .common import MLP, LayerNorm2d


class RandomFourierPE(nn.Module):
    """Fourier features of 2-D points in [0, 1]^2 (upstream PositionEmbeddingRandom)."""

    def __init__(self, num_feats: int):
        super().__init__()
        # A checkpoint buffer: loaded with the weights, so it must stay persistent.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalized (x, y) -> (..., 2 * num_feats) as [sin, cos]."""
        c = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        c = 2 * math.pi * c
        return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)


class PromptEncoder(nn.Module):
    """Points / mask prompts -> sparse tokens (B, N, C) and dense embedding (B, C, h, w)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, h = cfg.d_model, cfg.feat_size
        self.image_size = cfg.image_size
        self.grid_size = h
        self.pe_layer = RandomFourierPE(C // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, C) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, C)
        mask_chans = 16  # SAM's mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_chans),
            nn.GELU(),
            nn.Conv2d(mask_chans, C, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, C)
        # Normalized (x, y) of the grid cell centres: depends on sizes only, so a constant.
        centres = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # (h, w, 2) x, y
        self.register_buffer("grid_coords", grid, persistent=False)

    def dense_pe(self) -> torch.Tensor:
        """(1, C, h, w) image positional encoding (upstream get_dense_pe).

        Recomputed from the loaded gaussian matrix on each call: a (h*w, 2) @ (2, C/2)
        product, cheap, and correct whenever the weights are (re)loaded.
        """
        return self.pe_layer(self.grid_coords).permute(2, 0, 1).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) pixel coords of the S x S input (before +0.5), (B, N) labels -> (B, N, C).

        No pad point is appended here; label -1 and -2 slots become `not_a_point_embed`.
        """
        lab = labels.unsqueeze(-1)
        pad = lab < 0
        # Zero the coordinates of pad slots so garbage there (even inf/NaN) cannot leak.
        pts = torch.where(pad, torch.zeros_like(points), points)
        pe = self.pe_layer((pts + 0.5) / self.image_size)
        emb = torch.where(pad, torch.zeros_like(pe) + self.not_a_point_embed.weight, pe)
        for i, table in enumerate(self.point_embeddings):
            emb = emb + (lab == i).to(emb.dtype) * table.weight
        return emb

    def embed_dense(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense prompt (B, C, h, w): mask_downscaling(mask) where has_mask_input, else no_mask_embed.

        Both branches are computed (static graph); `where` keeps garbage in an unused mask
        input from leaking through as NaN.
        """
        from_mask = self.mask_downscaling(mask_input)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(from_mask)
        has = has_mask_input.reshape(-1, 1, 1, 1) > 0.5
        return torch.where(has, from_mask, no_mask)

    def forward(self, points: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None):
        """Upstream's call as the tracker makes it (boxes=None): appends one pad point.

        Returns (sparse (B, N+1, C), dense (B, C, h, w)). Variable-length reference path,
        used by tests; the export stage uses embed_points/embed_dense directly.
        """
        B = points.shape[0]
        points = torch.cat([points.float(), points.new_zeros(B, 1, 2).float()], dim=1)
        labels = torch.cat([labels, labels.new_full((B, 1), -1)], dim=1)
        sparse = self.embed_points(points, labels)
        if masks is None:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, self.grid_size, self.grid_size)
        else:
            dense = self.mask_downscaling(masks)
        return sparse, dense


class Attention(nn.Module):
    """Multi-head attention with q/k/v projections to `dim // downsample` (SAM decoder layout).

    `key_bias` (B, 1, 1, Nk) is added to the attention logits: MASK_BIAS removes a key.
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        return x.reshape(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        if key_bias is not None:
            logits = logits + key_bias
        out = torch.softmax(logits, dim=-1) @ v
        B, H, N, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, N, H * d))


class TwoWayBlock(nn.Module):
    """Token self-attn, token->image attn, token MLP, image->token attn (post-norm each)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample: int, first: bool):
        super().__init__()
        self.first = first  # upstream skip_first_layer_pe: no PE and no residual in self-attn
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, 2)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample)

    def forward(self, tokens, image, token_pe, image_pe, token_bias=None):
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens, token_bias)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens, token_bias)
        tokens = self.norm1(tokens)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        q, k = tokens + token_pe, image + image_pe
        image = self.norm4(image + self.cross_attn_image_to_token(k, q, tokens, token_bias))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048, downsample: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, downsample, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image, image_pe, tokens, token_bias=None):
        """image, image_pe (B, C, h, w); tokens (B, T, C) -> (tokens (B, T, C), image (B, hw, C))."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe, token_bias)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm_final_attn(tokens + self.final_attn_token_to_image(q, k, image))
        return tokens, image


class MaskDecoder(nn.Module):
    """Image + prompt embeddings -> all 4 mask logits, their IoU scores, the 4 mask tokens and
    the object score logit (upstream predict_masks, before any mask selection)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, T = cfg.d_model, NUM_MASK_TOKENS
        self.transformer = TwoWayTransformer(C)
        self.iou_token = nn.Embedding(1, C)
        self.mask_tokens = nn.Embedding(T, C)
        self.obj_score_token = nn.Embedding(1, C)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(C, C // 4, kernel_size=2, stride=2),
            LayerNorm2d(C // 4),
            nn.GELU(),
            nn.ConvTranspose2d(C // 4, C // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(C, C, C // 8, 3) for _ in range(T))
        self.iou_prediction_head = MLP(C, 256, T, 3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(C, C, 1, 3)

    def forward(self, image_embeddings, image_pe, sparse, dense, sparse_bias=None):
        """image_embeddings, image_pe, dense: (B, C, h, w); sparse (B, N, C);
        sparse_bias (B, N) added to the attention logits of the sparse tokens as keys.

        Returns masks (B, 4, 4h, 4w), iou (B, 4), mask_tokens (B, 4, C), obj_score (B, 1).
        """
        B, C, h, w = image_embeddings.shape
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        n_out = out_tokens.shape[0]
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(B, -1, -1), sparse], dim=1)
        token_bias = None
        if sparse_bias is not None:  # in the tokens' dtype (an fp16 stage: export/half.py Fp16Stage)
            sparse_bias = sparse_bias.to(tokens.dtype)
            token_bias = torch.cat([sparse_bias.new_zeros(B, n_out), sparse_bias], dim=1)[:, None, None, :]
        hs, src = self.transformer(image_embeddings + dense, image_pe.expand(B, -1, -1, -1), tokens, token_bias)
        iou_out, mask_out = hs[:, 1], hs[:, 2:n_out]
        up = self.output_upscaling(src.transpose(1, 2).reshape(B, C, h, w))
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, H, W = up.shape
        masks = (hyper @ up.reshape(b, c, H * W)).reshape(b, -1, H, W)
        return masks, self.iou_prediction_head(iou_out), mask_out, self.pred_obj_score_head(hs[:, 0])


def prompt_key_bias(labels: torch.Tensor) -> torch.Tensor:
    """(B, N) labels -> (B, N) attention bias: 0 for real tokens (label >= -1), MASK_BIAS for
    empty slots (label EMPTY_LABEL = -2)."""
    empty = (labels < -1).to(torch.float32)
    return empty * MASK_BIAS


def stability_scores(mask_logits: torch.Tensor, delta: float = 0.05) -> torch.Tensor:
    """Upstream's stability: area(logits > delta) / area(logits > -delta), 1 if the union is empty."""
    flat = mask_logits.flatten(-2)
    inter = (flat > delta).sum(-1).float()
    union = (flat > -delta).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class MaskDecoderStage(nn.Module):
    """Export stage `mask_decoder` (contracts.stage_specs):
    cond_feats (1, C, h, w), points (1, N, 2) in S x S pixels, labels (1, N) int32 padded with -2,
    mask_input (1, 1, 4h, 4w) logits, has_mask_input (1,) 0/1
    -> masks (1, 4, 4h, 4w) raw logits of all tokens, iou (1, 4), obj_ptr (1, 4, C) the object
    pointer each token would give (after the fixed no-object rule), obj_score (1, 1).
    Mask selection and NO_OBJ_SCORE masking are left to the runtime.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.obj_ptr_proj = model.obj_ptr_proj
        self.no_obj_ptr = model.no_obj_ptr

    def forward(self, cond_feats, points, labels, mask_input, has_mask_input):
        pe = self.prompt_encoder
        sparse = pe.embed_points(points, labels)
        dense = pe.embed_dense(mask_input, has_mask_input)
        masks, iou, tokens, obj_score = self.decoder(
            cond_feats, pe.dense_pe(), sparse, dense, prompt_key_bias(labels)
        )
        # Upstream fixed_no_obj_ptr with a hard (not soft) object decision.
        appear = (obj_score > 0).to(tokens.dtype).unsqueeze(-1)  # (1, 1, 1)
        obj_ptr = appear * self.obj_ptr_proj(tokens) + (1 - appear) * self.no_obj_ptr
        return masks, iou, obj_ptr, obj_score


__all__ = [
    "MaskDecoder",
    "MaskDecoderStage",
    "PromptEncoder",
    "TwoWayTransformer",
    "prompt_key_bias",
    "stability_scores",
]
