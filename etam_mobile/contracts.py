"""Stage contracts: the one place that names every stage, its ordered inputs and outputs,
their shapes and dtypes, and the capacities of the padded inputs.

The model wrappers, the exporters, the example-input builders, the runtime and the
manifest all read this module; nothing else hard-codes a stage shape.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .configs import ModelConfig

STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")

# Added to attention logits of invalid slots. Large enough that exp() underflows to 0
# in fp32 and fp16, small enough to stay finite in fp16 (max 65504): no NaNs even when
# every slot is masked.
MASK_BIAS = -1.0e4

# Upstream's score for "no object here" written into masks when the object score <= 0.
NO_OBJ_SCORE = -1024.0

# Prompt labels: 0 negative click, 1 positive click, 2/3 box corners, -1 upstream's
# not-a-point token (a real token), EMPTY_LABEL an unused slot masked inside the graph.
NOT_A_POINT_LABEL = -1
EMPTY_LABEL = -2

NUM_MASK_TOKENS = 4  # SAM decoder: 1 single-mask token + 3 multimask tokens


@dataclass(frozen=True)
class Capacities:
    """Fixed slot counts of the padded graph inputs.

    points: prompt tokens per decoder call: clicks and box corners (a box is 2 points) plus
      upstream's not-a-point tokens (label -1: one after a prompt, two when tracking), the
      rest empty slots labelled EMPTY_LABEL.
    cond_frames: conditioning frames the memory attention can see at once. Upstream has no
      limit; past this, the closest-frame rule picks which ones (see runtime/memory_bank.py).
    The recent-frame slots (num_maskmem - 1) and object-pointer slots
    (cond_frames + max_obj_ptrs_in_encoder - 1) follow from the config.
    """

    points: int = 8
    cond_frames: int = 2

    def memory_slots(self, cfg: ModelConfig) -> int:
        return self.cond_frames + cfg.num_maskmem - 1

    def ptr_slots(self, cfg: ModelConfig) -> int:
        return self.cond_frames + cfg.max_obj_ptrs_in_encoder - 1

    def to_dict(self, cfg: ModelConfig) -> dict:
        d = asdict(self)
        d["memory_slots"] = self.memory_slots(cfg)
        d["ptr_slots"] = self.ptr_slots(cfg)
        d["recent_frames"] = cfg.num_maskmem - 1
        return d


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple
    dtype: torch.dtype

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": str(self.dtype).replace("torch.", "")}


@dataclass(frozen=True)
class StageSpec:
    name: str
    inputs: tuple
    outputs: tuple

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


def slot_buckets(cfg: ModelConfig, caps: Capacities) -> list[tuple[int, int]]:
    """(memory_slots, ptr_slots) of the smaller memory-attention graphs exported next to the
    full one (which is not listed), so the runtime does no work on empty slots.

    Every tracked frame adds one memory and one pointer, so with one conditioning frame frame t
    has min(t, num_maskmem) memories and min(t, max_obj_ptrs) pointers: equal counts until the
    memory window is full. Hence power-of-two buckets below the steady state with as many
    pointer slots as memory slots (the first frames), then the steady state of a one-prompt
    video (one conditioning frame + every recent frame, and its pointers), then the full graph
    (all conditioning slots) as the fallback for everything else.
    """
    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    steady = (cfg.num_maskmem, cfg.max_obj_ptrs_in_encoder)
    out, k = [], 1
    while k < steady[0]:
        out.append((k, k))
        k *= 2
    if steady[0] < K and steady[1] <= P:
        out.append(steady)
    return out


def choose_slot_bucket(buckets, n_mem: int, n_ptr: int) -> int:
    """Index of the memory-attention graph to run for n_mem valid memory slots and n_ptr valid
    pointer slots. `buckets` lists (memory_slots, ptr_slots) as the manifest does, the full
    graph last. The smallest that fits wins: fewest memory slots, then fewest pointer slots,
    then the earliest in the list. Valid entries come first in the padded arrays, so the chosen
    graph gets the first memory_slots / ptr_slots entries. -1 when none fits."""
    best = -1
    for i, (k, p) in enumerate(buckets):
        if k >= n_mem and p >= n_ptr and (best < 0 or (k, p) < tuple(buckets[best])):
            best = i
    return best


def stage_specs(cfg: ModelConfig, caps: Capacities) -> dict[str, StageSpec]:
    """Ordered I/O of every stage for a config and capacities (batch is always 1)."""
    K, P, N = caps.memory_slots(cfg), caps.ptr_slots(cfg), caps.points
    return _specs(cfg, K, P, N)


def memory_attention_spec(cfg: ModelConfig, memory_slots: int, ptr_slots: int) -> StageSpec:
    """The memory_attention contract at other slot counts (a slot bucket)."""
    return _specs(cfg, memory_slots, ptr_slots, 1)["memory_attention"]


def _specs(cfg: ModelConfig, K: int, P: int, N: int) -> dict[str, StageSpec]:
    f32, i32 = torch.float32, torch.int32
    S, h, C, M = cfg.image_size, cfg.feat_size, cfg.d_model, cfg.mem_dim
    lr = cfg.low_res_size
    T = NUM_MASK_TOKENS
    specs = [
        StageSpec(
            "image_encoder",
            (TensorSpec("image", (1, 3, S, S), f32),),
            (TensorSpec("feats", (1, C, h, h), f32),),
        ),
        StageSpec(
            "memory_attention",
            (
                TensorSpec("feats", (1, C, h, h), f32),
                TensorSpec("mem_feats", (K, M, h, h), f32),
                TensorSpec("mem_tpos", (K,), i32),
                TensorSpec("mem_valid", (K,), f32),
                TensorSpec("obj_ptrs", (P, C), f32),
                TensorSpec("ptr_valid", (P,), f32),
            ),
            (TensorSpec("cond_feats", (1, C, h, h), f32),),
        ),
        StageSpec(
            "mask_decoder",
            (
                TensorSpec("cond_feats", (1, C, h, h), f32),
                TensorSpec("points", (1, N, 2), f32),
                TensorSpec("labels", (1, N), i32),
                TensorSpec("mask_input", (1, 1, lr, lr), f32),
                TensorSpec("has_mask_input", (1,), f32),
            ),
            (
                TensorSpec("masks", (1, T, lr, lr), f32),
                TensorSpec("iou", (1, T), f32),
                TensorSpec("obj_ptr", (1, T, C), f32),
                TensorSpec("obj_score", (1, 1), f32),
            ),
        ),
        StageSpec(
            "memory_encoder",
            (
                TensorSpec("feats", (1, C, h, h), f32),
                TensorSpec("mask", (1, 1, lr, lr), f32),
                TensorSpec("binarize", (1,), f32),
            ),
            (TensorSpec("mem_feats", (1, M, h, h), f32),),
        ),
    ]
    return {s.name: s for s in specs}
