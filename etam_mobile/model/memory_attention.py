"""Memory attention (4 layers of self-attention + cross-attention to the memory bank) and
the export stage `memory_attention`.

Parameter names follow the official checkpoint (`memory_attention.layers.{i}.*`).

Upstream semantics reproduced here:
- input tokens = image features + 0.1 * their 256-ch sine position encoding;
- each layer: x += SelfAttn(norm1 x); x += CrossAttn(norm2 x, memory + memory_pos -> keys,
  memory -> values); x += MLP(norm3 x); then a final LayerNorm. One head of width 256.
- RoPE (axial, theta 10000) on queries and on the spatial memory keys of every frame;
  object-pointer tokens are not rotated. Written with cos/sin tables instead of complex
  numbers so every backend can run it; the tables depend only on sizes.
- pooled variants (configs `*_1`, `*_2`): spatial memory keys/values are 2x2 average pooled
  per memory frame after RoPE; variant 1 adds 2 ln 2 to the pooled logits, variant 2 adds
  2 ln 2 to the pooled keys themselves. Upstream skips pooling while only one memory frame
  exists; here the number of valid slots (not the tensor length) drives that switch, and
  both branches are computed and blended arithmetically so the graph has no control flow.

Padding rule: invalid memory slots / pointer slots get MASK_BIAS on their logits, which makes
the result equal to upstream's variable-length computation (see tests/test_memory_stages.py).

Export form (`values_after_attention`): softmax rows sum to 1, so attending to the 64-d memory
tokens and applying v_proj to the result equals attending to v_proj(memory). Exported graphs
run attention as matmul-softmax-matmul, where this makes the probabilities-times-values product
4x smaller (and pools 64-d instead of 256-d values). Eager keeps the reference form: PyTorch's
fused CPU attention kernel is fastest with equal key and value widths.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import CROSS_ATTN_POOL_KEYS, CROSS_ATTN_POOL_LOGITS, ModelConfig
from ..contracts import MASK_BIAS
from .position import sine_position_encoding

POOL = 2  # upstream's s_kernel_size
POOL_BOOST = 2 * math.log(POOL)


def rope_tables(dim: int, h: int, w: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (h*w, dim/2) of upstream's axial RoPE: first dim/4 pairs rotate with x, rest with y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(h * w, dtype=torch.float32)
    tx, ty = t % w, torch.div(t, w, rounding_mode="floor")
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of the last axis; x (..., n, D) with n == len(cos)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def apply_rope_graph(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """apply_rope with ops XNNPACK takes whole (no select/stack/unsqueeze): x * cos + swap(x) * sin,
    where cos2/sin2 repeat each angle for both members of a pair and swap(a, b) = (-b, a) is
    sliced and concatenated on a 2-D view. Bit-equal to apply_rope: the same products, only
    added in the other order."""
    shape = x.shape
    pairs = x.reshape(-1, 2)
    rot = torch.cat([-pairs[:, 1:2], pairs[:, 0:1]], dim=1).reshape(shape)
    return x * cos2 + rot * sin2


class Projections(nn.Module):
    """q/k/v/out projections of upstream's Attention (one head, internal dim = d_model)."""

    def __init__(self, dim: int, kv_dim: int):
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)


class MemoryAttentionLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.d_model
        self.self_attn = Projections(C, C)
        self.cross_attn_image = Projections(C, cfg.mem_dim)
        self.linear1 = nn.Linear(C, cfg.mem_attn_ffn)
        self.linear2 = nn.Linear(cfg.mem_attn_ffn, C)
        self.norm1 = nn.LayerNorm(C)
        self.norm2 = nn.LayerNorm(C)
        self.norm3 = nn.LayerNorm(C)


class MemoryAttention(nn.Module):
    """Checkpoint-layout memory attention, with a variable-length reference `forward`
    (upstream's call signature in token-first layout) used by the parity tests."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(MemoryAttentionLayer(cfg) for _ in range(cfg.mem_attn_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        h = cfg.feat_size
        cos, sin = rope_tables(cfg.d_model, h, h, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # The graph form's tables (apply_rope_graph): angles repeated per pair member.
        self.register_buffer("rope_cos2", cos.repeat_interleave(2, dim=-1), persistent=False)
        self.register_buffer("rope_sin2", sin.repeat_interleave(2, dim=-1), persistent=False)
        self.graph_ops = False  # set per call by forward_slots

    # --- shared pieces --------------------------------------------------------------
    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        if self.graph_ops:
            return apply_rope_graph(x, self.rope_cos2, self.rope_sin2)
        return apply_rope(x, self.rope_cos, self.rope_sin)

    def _self_attn(self, layer: MemoryAttentionLayer, x: torch.Tensor) -> torch.Tensor:
        p = layer.self_attn
        y = layer.norm1(x)
        q = self._rope(p.q_proj(y))
        k = self._rope(p.k_proj(y))
        return x + p.out_proj(self._attend(q, k, p.v_proj(y), None))

    def _mlp(self, layer: MemoryAttentionLayer, x: torch.Tensor) -> torch.Tensor:
        return x + layer.linear2(F.relu(layer.linear1(layer.norm3(x))))

    def _memory_kv(self, p: Projections, mem: torch.Tensor, mem_pos: torch.Tensor, project_values: bool = True):
        """mem, mem_pos (1, F, nq, 64) -> rotated keys (1, F, nq, D) and values (projected to D,
        or left 64-d for the export form)."""
        k = self._rope(p.k_proj(mem + mem_pos))
        return k, p.v_proj(mem) if project_values else mem

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        """(1, F, h*w, D) -> (1, F, h*w/4, D): 2x2 average pool of each frame's token grid."""
        _, Fr, n, D = t.shape
        h = w = self.cfg.feat_size
        # Rows then columns, never above 4-D: XNNPACK rejects higher-rank tensors at load time.
        t = t.reshape(Fr * (h // POOL), POOL, w, D).mean(dim=1)
        t = t.reshape(Fr * (h // POOL) * (w // POOL), POOL, D).mean(dim=1)
        return t.reshape(1, Fr, (h // POOL) * (w // POOL), D)

    def _pooled_keys_bias(self, k: torch.Tensor, slot_bias: torch.Tensor):
        """Pooled memory keys and their per-key logit bias, per the config's variant."""
        k = self._pool(k)
        n = k.shape[2]
        bias = self._per_token(slot_bias, n)
        if self.cfg.cross_attn == CROSS_ATTN_POOL_KEYS:
            k = k + POOL_BOOST
        elif self.cfg.cross_attn == CROSS_ATTN_POOL_LOGITS:
            bias = bias + POOL_BOOST
        return k, bias

    def _per_token(self, per_slot: torch.Tensor, n: int) -> torch.Tensor:
        """(S,) -> (S * n,): each slot's value repeated for its n tokens. The graph form
        broadcasts against ones (XNNPACK multiply) instead of expand (left to portable kernels)."""
        if self.graph_ops:
            return (per_slot.reshape(-1, 1) * torch.ones(1, n, dtype=per_slot.dtype)).reshape(-1)
        return per_slot[:, None].expand(-1, n).reshape(-1)

    def _attend(self, q, k, v, bias):
        """Single-head attention on (1, n, D) tensors with a per-key additive logit bias (N,)
        or None. Runs as 4-D (batch, heads, n, D), the form every exporter lowers (the graph
        form reshapes instead of indexing, so no unsqueeze/select copies outside the delegate)."""
        if self.graph_ops:
            mask = None if bias is None else bias.to(q.dtype).reshape(1, 1, 1, -1)
            out = F.scaled_dot_product_attention(q.reshape(1, 1, *q.shape[1:]), k.reshape(1, 1, *k.shape[1:]),
                                                 v.reshape(1, 1, *v.shape[1:]), attn_mask=mask)
            return out.reshape(1, *out.shape[2:])
        mask = None if bias is None else bias.to(q.dtype)[None, None, None, :]
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=mask)
        return out[:, 0]

    # --- reference (variable-length, upstream signature) ---------------------------------
    def forward(self, curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens: int = 0):
        """Upstream MemoryAttention.forward on (seq, 1, C) tensors, unpadded.

        Memory holds F frames of h*w spatial tokens followed by `num_obj_ptr_tokens`."""
        nq = curr.shape[0]
        x = (curr + 0.1 * curr_pos).transpose(0, 1)
        mem, pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        n_sp = mem.shape[1] - num_obj_ptr_tokens
        frames = n_sp // nq
        sp, sp_pos = mem[:, :n_sp].reshape(1, frames, nq, -1), pos[:, :n_sp].reshape(1, frames, nq, -1)
        ptr, ptr_pos = mem[:, n_sp:], pos[:, n_sp:]
        self.graph_ops = False
        for layer in self.layers:
            x = self._self_attn(layer, x)
            p = layer.cross_attn_image
            q = self._rope(p.q_proj(layer.norm2(x)))
            k, v = self._memory_kv(p, sp, sp_pos)
            bias = None
            if self.cfg.pooled and frames > 1:
                k, bias = self._pooled_keys_bias(k, torch.zeros(frames))
                v = self._pool(v)
                bias = torch.cat([bias, torch.zeros(ptr.shape[1])])
            k = torch.cat([k.flatten(1, 2), p.k_proj(ptr + ptr_pos)], dim=1)
            v = torch.cat([v.flatten(1, 2), p.v_proj(ptr)], dim=1)
            x = x + p.out_proj(self._attend(q, k, v, bias))
            x = self._mlp(layer, x)
        return self.norm(x).transpose(0, 1)

    # --- padded slots (the export contract) ------------------------------------------
    def forward_slots(self, x, mem, mem_pos, slot_valid, ptr_tokens, ptr_token_valid,
                      values_after_attention: bool = False, graph_ops: bool = False):
        """x (1, nq, C) with input pos already added; mem, mem_pos (1, K, nq, 64) (mem_pos may
        be (1, K, 1, 64) + (1, 1, nq, 64) broadcast); slot_valid (K,) 0/1; ptr_tokens (1, T, 64)
        zero-pos pointer tokens; ptr_token_valid (T,) 0/1.
        values_after_attention: the export form (module docstring); same values.
        graph_ops: write every step with ops the XNNPACK delegate takes (RoPE as multiply-add
        with a sliced pair swap, reshapes instead of index/unsqueeze/expand, slot sums as
        matmuls, thresholds of 0/1 counts as clamps); same values for 0/1 validity inputs."""
        self.graph_ops = graph_ops
        slot_bias = (1.0 - slot_valid) * MASK_BIAS
        ptr_bias = (1.0 - ptr_token_valid) * MASK_BIAS
        nq = x.shape[1]
        if self.cfg.pooled:
            if graph_ops:  # valid counts are whole numbers: (n > 1.5) == clamp(n - 1, 0, 1)
                n_valid = F.linear(slot_valid.reshape(1, -1), torch.ones(1, slot_valid.shape[0])).reshape(1)
                use_pool = torch.clamp(n_valid - 1.0, 0.0, 1.0)
            else:
                n_valid = slot_valid.sum()
                use_pool = (n_valid > 1.5).to(x.dtype)
            # Weights that pick the one valid slot when exactly one exists (the unpooled branch).
            pick = slot_valid / torch.clamp(n_valid, min=1.0)
        for layer in self.layers:
            x = self._self_attn(layer, x)
            p = layer.cross_attn_image
            q = self._rope(p.q_proj(layer.norm2(x)))
            k, v = self._memory_kv(p, mem, mem_pos, project_values=not values_after_attention)
            kp, vp = p.k_proj(ptr_tokens), ptr_tokens if values_after_attention else p.v_proj(ptr_tokens)
            if self.cfg.pooled and graph_ops:
                K = k.shape[1]
                w = pick.reshape(1, 1, K)
                k1 = torch.bmm(w, k.reshape(1, K, -1)).reshape(1, nq, -1)
                v1 = torch.bmm(w, v.reshape(1, K, -1)).reshape(1, nq, -1)
            elif self.cfg.pooled:
                k1 = (pick[None, :, None, None] * k).sum(dim=1)
                v1 = (pick[None, :, None, None] * v).sum(dim=1)
            if self.cfg.pooled:
                single = self._attend(
                    q,
                    torch.cat([k1, kp], dim=1),
                    torch.cat([v1, vp], dim=1),
                    torch.cat([torch.zeros(nq, dtype=x.dtype), ptr_bias]),
                )
                if mem.shape[1] == 1:  # a one-slot graph (slot bucket) never pools: skip that branch
                    out = single
                else:
                    kpool, bpool = self._pooled_keys_bias(k, slot_bias)
                    vpool = self._pool(v)
                    pooled = self._attend(
                        q,
                        torch.cat([kpool.flatten(1, 2), kp], dim=1),
                        torch.cat([vpool.flatten(1, 2), vp], dim=1),
                        torch.cat([bpool, ptr_bias]),
                    )
                    out = use_pool * pooled + (1.0 - use_pool) * single
            else:
                bias = torch.cat([self._per_token(slot_bias, nq), ptr_bias])
                K = k.shape[1]
                out = self._attend(
                    q, torch.cat([k.reshape(1, K * nq, -1), kp], dim=1), torch.cat([v.reshape(1, K * nq, -1), vp], dim=1),
                    bias,
                )
            if values_after_attention:
                out = p.v_proj(out)
            x = x + p.out_proj(out)
            x = self._mlp(layer, x)
        return self.norm(x)


class MemoryAttentionStage(nn.Module):
    """Export stage `memory_attention` (contracts.stage_specs):
    feats (1, C, h, w), mem_feats (K, 64, h, w), mem_tpos (K,) int32 index into
    maskmem_tpos_enc, mem_valid (K,) 0/1, obj_ptrs (P, C), ptr_valid (P,) 0/1
    -> cond_feats (1, C, h, w).

    With no valid memory slot (an initial conditioning frame) the output is
    feats + no_mem_embed, as upstream does without running the attention.
    `for_export` selects the export form of the attention (module docstring).
    """

    def __init__(self, model: nn.Module, for_export: bool = False, graph_ops: bool | None = None):
        super().__init__()
        cfg = model.cfg
        self.for_export = for_export
        # graph_ops (default: with for_export): the delegate-friendly op forms (forward_slots).
        self.graph_ops = for_export if graph_ops is None else graph_ops
        self.attn = model.memory_attention
        self.maskmem_tpos_enc = model.maskmem_tpos_enc
        self.no_mem_embed = model.no_mem_embed
        self.num_maskmem = cfg.num_maskmem
        self.mem_dim = cfg.mem_dim
        h = cfg.feat_size
        curr_pos = sine_position_encoding(cfg.d_model, h, h).flatten(2).transpose(1, 2).contiguous()
        mem_pos = sine_position_encoding(cfg.mem_dim, h, h).flatten(2).transpose(1, 2).contiguous()
        self.register_buffer("curr_pos", curr_pos, persistent=False)  # (1, nq, C)
        self.register_buffer("mem_pos", mem_pos, persistent=False)  # (1, nq, 64)

    def forward(self, feats, mem_feats, mem_tpos, mem_valid, obj_ptrs, ptr_valid):
        _, C, h, w = feats.shape
        K, M = mem_feats.shape[0], self.mem_dim
        P = obj_ptrs.shape[0]
        nq = h * w
        n_tok = C // M  # each 256-d pointer becomes 4 tokens of 64, with zero position
        tokens = feats.flatten(2).transpose(1, 2)  # (1, nq, C)
        x = tokens + 0.1 * self.curr_pos
        ptr_tokens = obj_ptrs.reshape(1, -1, M)
        if self.graph_ops:
            mem = mem_feats.reshape(K, M, nq).transpose(1, 2).reshape(1, K, nq, M)
            # Row lookup (one gather) instead of a one-hot compare; the temporal encoding is
            # broadcast-added to the spatial one inside k_proj's input, never expanded.
            tpos = F.embedding(mem_tpos, self.maskmem_tpos_enc.reshape(self.num_maskmem, M))  # (K, 64)
            pos = self.mem_pos.reshape(1, 1, nq, M) + tpos.reshape(1, K, 1, M)
            ptr_token_valid = (ptr_valid.reshape(P, 1) * torch.ones(1, n_tok, dtype=feats.dtype)).reshape(-1)
            # Valid flags are 0/1: (sum > 0.5) == clamp(sum, 0, 1), the sum as a matmul.
            has_mem = torch.clamp(F.linear(mem_valid.reshape(1, K), torch.ones(1, K, dtype=feats.dtype)), 0.0, 1.0)
            has_mem = has_mem.reshape(1, 1, 1, 1)
        else:
            mem = mem_feats.flatten(2).transpose(1, 2).unsqueeze(0)  # (1, K, nq, 64)
            onehot = (mem_tpos.to(torch.int32)[:, None] == torch.arange(self.num_maskmem, dtype=torch.int32)[None, :])
            tpos = onehot.to(feats.dtype) @ self.maskmem_tpos_enc.reshape(self.num_maskmem, M)  # (K, 64)
            pos = (self.mem_pos[:, None] + tpos[None, :, None, :]).expand(1, K, -1, -1)
            ptr_token_valid = ptr_valid[:, None].expand(-1, n_tok).reshape(-1)
            has_mem = (mem_valid.sum() > 0.5).to(feats.dtype)
        out = self.attn.forward_slots(x, mem, pos, mem_valid, ptr_tokens, ptr_token_valid, self.for_export,
                                      graph_ops=self.graph_ops)
        out = out.transpose(1, 2).reshape(1, C, h, w)
        no_mem = feats + self.no_mem_embed.reshape(1, C, 1, 1)
        return has_mem * out + (1.0 - has_mem) * no_mem


__all__ = ["MemoryAttention", "MemoryAttentionStage", "apply_rope", "rope_tables"]
