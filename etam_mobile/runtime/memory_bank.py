"""The memory bank of one tracked object, and upstream's rules for what a frame attends to.

The rules are pure functions of frame indices (no tensors), so the Swift and Kotlin apps
port them line by line and replay the Python conformance traces to prove they agree.

Upstream keeps every frame's output in a dict for the whole video. We keep only what
its selection rules can still reach when tracking forward: all conditioning frames
(frames that received prompts) and the last `max(num_maskmem - 1, max_obj_ptrs - 1)`
non-conditioning frames. Everything older is dropped, so memory stays flat on long videos.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..configs import ModelConfig
from ..contracts import Capacities


@dataclass
class FrameMemory:
    """What one frame leaves behind for one object (upstream's compact frame output)."""

    low_res: np.ndarray  # (lr, lr) mask logits after object-score masking ("pred_masks")
    obj_ptr: np.ndarray  # (d_model,) object pointer
    obj_score: float
    mem_feats: np.ndarray | None = None  # (mem_dim, h, w), bf16-rounded like upstream's storage


@dataclass
class Selection:
    """Which stored frames feed the memory attention of one frame, in upstream token order."""

    mem_frames: list  # frame index per memory slot
    mem_tpos: list  # index into maskmem_tpos_enc per memory slot
    ptr_frames: list  # frame index per object-pointer slot

    def to_dict(self) -> dict:
        return {"mem_frames": self.mem_frames, "mem_tpos": self.mem_tpos, "ptr_frames": self.ptr_frames}


def select_closest_cond_frames(frame_idx: int, cond_frames: list, max_num: int) -> tuple[list, list]:
    """Upstream's rule: the closest conditioning frame before, the closest at-or-after,
    then the temporally closest others until `max_num`. Returns (selected, unselected),
    each in the bank's insertion order for the unlimited case like upstream."""
    if max_num < 0 or len(cond_frames) <= max_num:
        return list(cond_frames), []
    if max_num < 2:
        raise ValueError("at least 2 conditioning-frame slots are needed")
    selected = []
    before = [t for t in cond_frames if t < frame_idx]
    after = [t for t in cond_frames if t >= frame_idx]
    if before:
        selected.append(max(before))
    if after:
        selected.append(min(after))
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[: max_num - len(selected)]
    unselected = [t for t in cond_frames if t not in selected]
    return selected, unselected


def select_memory(
    frame_idx: int, cond_frames: list, non_cond_frames, num_frames: int | None, cfg: ModelConfig, caps: Capacities
) -> Selection:
    """Memory slots and pointer slots for tracking `frame_idx` forward (upstream's
    `_prepare_memory_conditioned_features` with memory stride 1, pointers only from the past).

    `num_frames` (None for a stream of unknown length) never changes the result when tracking
    forward: upstream's min(num_frames, max_obj_ptrs) only cuts pointer frames that are < 0."""
    selected, unselected = select_closest_cond_frames(frame_idx, cond_frames, caps.cond_frames)
    unselected_set = set(unselected)
    non_cond = set(non_cond_frames)
    mem_frames = list(selected)
    mem_tpos = [cfg.num_maskmem - 1] * len(selected)
    for t_pos in range(1, cfg.num_maskmem):  # oldest first, like upstream
        t_rel = cfg.num_maskmem - t_pos
        prev = frame_idx - t_rel
        if prev in non_cond or prev in unselected_set:
            mem_frames.append(prev)
            mem_tpos.append(t_rel - 1)
    ptr_frames = [t for t in selected if t <= frame_idx]
    max_ptrs = cfg.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, cfg.max_obj_ptrs_in_encoder)
    for t_diff in range(1, max_ptrs):
        t = frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        if t in non_cond or t in unselected_set:
            ptr_frames.append(t)
    return Selection(mem_frames, mem_tpos, ptr_frames)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 precision (nearest even), kept as float32.

    Upstream stores memory features as bfloat16; doing the same keeps parity."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    out = ((bits + rounding) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(np.isnan(x), x, out)


@dataclass
class ObjectBank:
    """Per-object tracking state: conditioning and recent frame outputs plus bookkeeping."""

    obj_id: int
    cond: dict = field(default_factory=dict)  # frame -> FrameMemory, insertion order kept
    non_cond: dict = field(default_factory=dict)  # frame -> FrameMemory (recent frames only)
    tracked: set = field(default_factory=set)  # frames with an output (upstream frames_tracked)
    pending: dict = field(default_factory=dict)  # frame -> (FrameMemory, is_cond) awaiting memory encoding

    def lookup(self, frame_idx: int) -> FrameMemory | None:
        """Most recent output on a frame, as upstream looks it up for correction clicks."""
        if frame_idx in self.pending:
            return self.pending[frame_idx][0]
        return self.cond.get(frame_idx) or self.non_cond.get(frame_idx)

    def memory_of(self, frame_idx: int) -> FrameMemory:
        return self.cond[frame_idx] if frame_idx in self.cond else self.non_cond[frame_idx]

    def prune(self, frame_idx: int, cfg: ModelConfig, forget_tracked: bool = False) -> None:
        """Drop non-conditioning frames that forward tracking past `frame_idx` can no longer reach.

        `forget_tracked` (streams, where no prompt can land on a passed frame) also drops the
        record of which old frames were tracked, so nothing grows with the stream's length."""
        keep = max(cfg.num_maskmem - 1, cfg.max_obj_ptrs_in_encoder - 1)
        for t in [t for t in self.non_cond if t <= frame_idx - keep]:
            del self.non_cond[t]
        if forget_tracked:
            self.tracked.intersection_update(range(frame_idx - 1, frame_idx + 1))

    def gather(self, sel: Selection, caps_slots: tuple, shapes: tuple):
        """Pack the selected memories into padded arrays with validity masks.

        `caps_slots` = (K, P) slot counts; `shapes` = ((mem_dim, h, w), d_model).
        Valid entries come first; the rest are zero and marked invalid."""
        K, P = caps_slots
        (M, h, w), C = shapes
        if len(sel.mem_frames) > K or len(sel.ptr_frames) > P:
            raise RuntimeError(f"memory selection exceeds capacity ({len(sel.mem_frames)}>{K} or {len(sel.ptr_frames)}>{P})")
        mem = np.zeros((K, M, h, w), np.float32)
        tpos = np.zeros((K,), np.int32)
        mem_valid = np.zeros((K,), np.float32)
        for i, (t, tp) in enumerate(zip(sel.mem_frames, sel.mem_tpos)):
            mem[i] = self.memory_of(t).mem_feats
            tpos[i] = tp
            mem_valid[i] = 1.0
        ptrs = np.zeros((P, C), np.float32)
        ptr_valid = np.zeros((P,), np.float32)
        for i, t in enumerate(sel.ptr_frames):
            ptrs[i] = self.memory_of(t).obj_ptr
            ptr_valid[i] = 1.0
        return mem, tpos, mem_valid, ptrs, ptr_valid
