"""The tracker state machine: upstream video-predictor semantics over any stage backend.

One object per bank, objects independent of each other (as upstream's per-object
inference). A backend only runs stages (`backend.run(stage, inputs) -> outputs`, numpy
in and out); every decision — which memories, which mask, when a frame is a
conditioning frame — is made here, the same for eager PyTorch and every exported format.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contracts import Capacities, choose_slot_bucket, slot_buckets
from .decisions import BOX_LABELS, apply_object_score, build_prompt, choose_mask
from .ids import check_obj_id
from .memory_bank import FrameMemory, ObjectBank, round_to_bf16, select_memory


class PromptError(ValueError):
    """A prompt that cannot be applied (outside the frame, unknown frame, bad labels...)."""


@dataclass
class FrameTrace:
    """One conformance-trace record: what was decided for one object on one frame."""

    frame: int
    obj_id: int
    kind: str  # "prompt" (decoder run on clicks/box), "mask" (a mask prompt) or "track" (propagation)
    is_init_cond: bool
    selection: dict
    num_points: int
    multimask: bool
    mask_index: int
    ptr_index: int
    iou: list
    stability: float
    obj_score: float
    mask_area: int  # pixels > 0 in the chosen low-res mask
    mask_sum: float  # sum of the chosen low-res logits, clipped to [-32, 32]
    slot_bucket: list  # [memory_slots, ptr_slots] of the memory-attention graph that runs (choose_slot_bucket)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Tracker:
    """The tracker state machine for any number of objects on frames of size `video_hw`.

    `frame_loader(i)` returns the model input (1, 3, S, S) float32 for frame i. `num_frames`
    is the video length for an interactive session over a known video (prompts on any frame,
    corrections, `propagate()`), or None for a stream (see runtime/stream.py), where the
    state machine only ever sees the current frame. Both run the same per-frame step,
    `track_frame`, so the offline and streaming paths make the same decisions.
    """

    def __init__(self, backend, num_frames: int | None, video_hw: tuple | None, frame_loader, trace: list | None = None):
        self.backend = backend
        self.cfg = backend.cfg
        self.caps: Capacities = backend.capacities
        # (memory_slots, ptr_slots) of the backend's memory-attention graphs, the full one last;
        # a backend without them (eager) is traced with the exporter's default buckets.
        self.slot_buckets = list(getattr(backend, "slot_buckets", None) or [
            *slot_buckets(self.cfg, self.caps), (self.caps.memory_slots(self.cfg), self.caps.ptr_slots(self.cfg))])
        self.num_frames = num_frames
        self.video_hw = video_hw
        self.frame_loader = frame_loader
        self.objects: dict[int, ObjectBank] = {}
        self.trace = trace
        self._feat_cache: dict[int, np.ndarray] = {}

    # ---- stages ---------------------------------------------------------------
    def _features(self, frame_idx: int) -> np.ndarray:
        feats = self._feat_cache.get(frame_idx)
        if feats is None:
            (feats,) = self.backend.run("image_encoder", [self.frame_loader(frame_idx)])
            self._feat_cache[frame_idx] = feats
        return feats

    def _forget_features(self, keep: set) -> None:
        for t in [t for t in self._feat_cache if t not in keep]:
            del self._feat_cache[t]

    def _pending_frames(self) -> set:
        return {t for bank in self.objects.values() for t in bank.pending}

    def _condition(self, bank: ObjectBank, frame_idx: int, feats: np.ndarray, is_init_cond: bool):
        cfg = self.cfg
        if is_init_cond:
            sel = select_memory(frame_idx, [], [], self.num_frames, cfg, self.caps)
        else:
            sel = select_memory(frame_idx, list(bank.cond), bank.non_cond.keys(), self.num_frames, cfg, self.caps)
        K, P = self.caps.memory_slots(cfg), self.caps.ptr_slots(cfg)
        h = cfg.feat_size
        arrays = bank.gather(sel, (K, P), ((cfg.mem_dim, h, h), cfg.d_model))
        (cond_feats,) = self.backend.run("memory_attention", [feats, *arrays])
        return cond_feats, sel

    def _decode(self, cond_feats, points, labels, num_points, mask_input):
        lr = self.cfg.low_res_size
        has = np.array([0.0 if mask_input is None else 1.0], np.float32)
        mask = np.zeros((1, 1, lr, lr), np.float32) if mask_input is None else mask_input.reshape(1, 1, lr, lr)
        masks, iou, ptrs, score = self.backend.run("mask_decoder", [cond_feats, points, labels, mask, has])
        choice = choose_mask(masks[0], iou[0], num_points, self.cfg)
        obj_score = float(score.reshape(-1)[0])
        low_res = apply_object_score(masks[0, choice.mask_index], obj_score)
        mem = FrameMemory(low_res=low_res, obj_ptr=ptrs[0, choice.ptr_index].copy(), obj_score=obj_score)
        return mem, choice, iou[0]

    def _encode_memory(self, mem: FrameMemory, feats: np.ndarray, binarize: bool) -> None:
        lr = self.cfg.low_res_size
        flag = np.array([1.0 if binarize else 0.0], np.float32)
        (mf,) = self.backend.run("memory_encoder", [feats, mem.low_res.reshape(1, 1, lr, lr), flag])
        mem.mem_feats = round_to_bf16(mf[0])

    def _record(self, frame_idx, bank, kind, is_init, sel, num_points, choice, iou, mem):
        if self.trace is None:
            return
        self.trace.append(
            FrameTrace(
                frame=frame_idx,
                obj_id=bank.obj_id,
                kind=kind,
                is_init_cond=is_init,
                selection=sel.to_dict(),
                num_points=num_points,
                multimask=choice.multimask,
                mask_index=choice.mask_index,
                ptr_index=choice.ptr_index,
                iou=[float(v) for v in iou],
                stability=choice.stability,
                obj_score=mem.obj_score,
                mask_area=int(np.count_nonzero(mem.low_res > 0)),
                mask_sum=float(np.clip(mem.low_res, -32, 32).astype(np.float64).sum()),
                slot_bucket=list(self.slot_buckets[choose_slot_bucket(
                    self.slot_buckets, len(sel.mem_frames), len(sel.ptr_frames))]),
            ).to_dict()
        )

    # ---- public API -------------------------------------------------------------
    def add_prompt(self, frame_idx: int, obj_id: int, points=None, labels=None, box=None, mask=None) -> np.ndarray:
        """Clicks and/or a box for one object on one frame (upstream add_new_points_or_box,
        clear_old_points=True), or a binary (H, W) `mask` (upstream add_new_mask).
        Returns that object's low-res mask logits on the frame."""
        check_obj_id(obj_id, f"prompt on frame {frame_idx}")
        if mask is not None:
            if points is not None or box is not None:
                raise PromptError(f"prompt on frame {frame_idx}: a mask prompt cannot be combined with clicks or a "
                                  "box; give the mask alone, then correct with clicks in a later prompt")
            return self._add_mask(frame_idx, obj_id, mask)
        self._check_prompt(frame_idx, points, labels, box)
        bank = self.objects.setdefault(obj_id, ObjectBank(obj_id))
        is_init = frame_idx not in bank.tracked
        prev = bank.lookup(frame_idx)
        mask_input = None if prev is None else np.clip(prev.low_res, -32.0, 32.0)
        pts, labs, num_points = build_prompt(
            points, labels, box, self.video_hw, self.cfg.image_size, self.backend.point_capacity
        )
        feats = self._features(frame_idx)
        cond_feats, sel = self._condition(bank, frame_idx, feats, is_init)
        mem, choice, iou = self._decode(cond_feats, pts, labs, num_points, mask_input)
        # A frame seen for the first time becomes a conditioning frame; a correction on an
        # already tracked frame stays non-conditioning (upstream add_all_frames_to_correct_as_cond=False).
        bank.pending[frame_idx] = (mem, is_init)
        self._record(frame_idx, bank, "prompt", is_init, sel, num_points, choice, iou, mem)
        return mem.low_res

    def _add_mask(self, frame_idx: int, obj_id: int, mask) -> np.ndarray:
        """Upstream add_new_mask (see runtime/mask_prompt.py): the mask is the frame's output."""
        from .mask_prompt import MASK_OBJ_SCORE, MaskPromptError, prepare_mask_prompt

        self._check_frame(frame_idx)
        mask = np.asarray(mask)
        if mask.ndim != 2 or (self.video_hw is not None and mask.shape != tuple(self.video_hw)):
            h, w = self.video_hw or ("?", "?")
            raise PromptError(f"mask prompt on frame {frame_idx} has shape {mask.shape}, the frames are {w}x{h}; "
                              "give a mask of the frame's size")
        consts = getattr(self.backend, "mask_prompt", None)
        if consts is None:
            raise PromptError("this export folder predates mask prompts (its manifest.json has no 'mask_prompt'); "
                              "re-export it with this version of etam-mobile")
        try:
            low, mask_input = prepare_mask_prompt(mask.astype(bool), self.cfg.image_size, self.cfg.low_res_size,
                                                  consts)
        except MaskPromptError as exc:
            raise PromptError(f"mask prompt for object {obj_id} on frame {frame_idx}: {exc}") from None
        bank = self.objects.setdefault(obj_id, ObjectBank(obj_id))
        is_init = frame_idx not in bank.tracked
        lr = self.cfg.low_res_size
        pts, labs, _ = build_prompt(None, None, None, self.video_hw or (1, 1), self.cfg.image_size,
                                    self.backend.point_capacity)
        feats = self._features(frame_idx)  # raw features: upstream skips memory attention here
        _, iou, ptrs, score = self.backend.run(
            "mask_decoder", [feats, pts, labs, mask_input.reshape(1, 1, lr, lr), np.ones((1,), np.float32)]
        )
        mem = FrameMemory(low_res=low, obj_ptr=ptrs[0, 0].copy(), obj_score=MASK_OBJ_SCORE)
        bank.pending[frame_idx] = (mem, is_init)
        if self.trace is not None:
            self.trace.append(
                FrameTrace(
                    frame=frame_idx, obj_id=obj_id, kind="mask", is_init_cond=is_init,
                    selection={"mem_frames": [], "mem_tpos": [], "ptr_frames": []}, num_points=0,
                    multimask=False, mask_index=-1, ptr_index=0, iou=[float(v) for v in iou[0]],
                    stability=1.0, obj_score=mem.obj_score,
                    mask_area=int(np.count_nonzero(low > 0)),
                    mask_sum=float(np.clip(low, -32, 32).astype(np.float64).sum()),
                    slot_bucket=[0, 0],  # no memory attention runs on a mask prompt
                ).to_dict()
            )
        return low

    def commit_prompts(self) -> None:
        """Encode the memories of prompted frames (binarized masks) and file them in the bank
        (upstream propagate_in_video_preflight)."""
        for bank in self.objects.values():
            for frame_idx, (mem, is_cond) in bank.pending.items():
                self._encode_memory(mem, self._features(frame_idx), binarize=True)
                (bank.cond if is_cond else bank.non_cond)[frame_idx] = mem
            bank.pending.clear()
            for t in bank.cond:
                bank.non_cond.pop(t, None)

    def _preflight(self) -> None:
        """Encode the memories of prompted frames (binarized masks) and file them in the bank."""
        if not self.objects:
            raise PromptError("no prompts were given for any object; add a prompt first")
        self.commit_prompts()
        self._forget_features(set())

    def track_frame(self, frame_idx: int) -> np.ndarray:
        """The per-frame step for every object (one state machine for offline and streams):
        a conditioning frame returns its stored output; any other frame is tracked from memory,
        its memory encoded and filed, and the bank pruned. Returns (objects, lr, lr) logits."""
        feats = None
        out = []
        for bank in self.objects.values():
            if frame_idx in bank.cond:
                mem = bank.cond[frame_idx]
            else:
                if feats is None:
                    feats = self._features(frame_idx)
                cond_feats, sel = self._condition(bank, frame_idx, feats, is_init_cond=False)
                pts, labs, _ = build_prompt(
                    None, None, None, self.video_hw, self.cfg.image_size, self.backend.point_capacity
                )
                mem, choice, iou = self._decode(cond_feats, pts, labs, 0, None)
                self._encode_memory(mem, feats, binarize=False)
                bank.non_cond[frame_idx] = mem
                self._record(frame_idx, bank, "track", False, sel, 0, choice, iou, mem)
            bank.tracked.add(frame_idx)
            bank.prune(frame_idx, self.cfg, forget_tracked=self.num_frames is None)
            out.append(mem.low_res)
        self._forget_features(set())
        return np.stack(out) if out else np.zeros((0, self.cfg.low_res_size, self.cfg.low_res_size), np.float32)

    def obj_scores(self, frame_idx: int) -> list:
        """Object score logit of every object on a frame it has an output for (NaN otherwise)."""
        out = []
        for bank in self.objects.values():
            mem = bank.lookup(frame_idx)
            out.append(float("nan") if mem is None else mem.obj_score)
        return out

    def propagate(self, start: int | None = None):
        """Track forward from the earliest conditioning frame (or `start`) to the last frame.

        Yields (frame_idx, obj_ids, low_res) with low_res (objects, lr, lr) mask logits.
        """
        if self.num_frames is None:
            raise RuntimeError("propagate() needs a video of known length; a stream is driven by StreamTracker.step()")
        self._preflight()
        obj_ids = list(self.objects)
        if start is None:
            start = min(t for bank in self.objects.values() for t in bank.cond)
        for frame_idx in range(start, self.num_frames):
            yield frame_idx, obj_ids, self.track_frame(frame_idx)

    # ---- validation -------------------------------------------------------------
    def _check_frame(self, frame_idx) -> None:
        if self.num_frames is None:
            if frame_idx < 0:
                raise PromptError(f"prompt on frame {frame_idx}: frame numbers start at 0")
        elif not 0 <= frame_idx < self.num_frames:
            raise PromptError(f"prompt on frame {frame_idx}, but the video has frames 0..{self.num_frames - 1}")

    def _check_prompt(self, frame_idx, points, labels, box) -> None:
        h, w = self.video_hw
        self._check_frame(frame_idx)
        if points is None and box is None:
            raise PromptError(f"prompt on frame {frame_idx} has neither points nor a box")
        if (points is None) != (labels is None) or (points is not None and len(points) != len(labels)):
            raise PromptError(f"prompt on frame {frame_idx}: points and labels must have the same length")
        capacity = self.backend.point_capacity
        used = len(points or []) + (len(BOX_LABELS) if box is not None else 0)
        if capacity is not None and used > capacity - 1:
            raise PromptError(f"prompt on frame {frame_idx} has {used} points (a box counts 2), the export takes at "
                              f"most {capacity - 1}; use fewer clicks or re-export with --max-points {used + 1}")
        for p, lab in zip(points or [], labels or []):
            if lab not in (0, 1):
                raise PromptError(f"prompt on frame {frame_idx}: label {lab!r} must be 1 (positive) or 0 (negative)")
            if not all(np.isfinite(v) for v in p[:2]):
                raise PromptError(f"prompt on frame {frame_idx}: point {list(p)} must be finite numbers")
            if not (0 <= p[0] <= w and 0 <= p[1] <= h):
                raise PromptError(f"prompt on frame {frame_idx}: point {list(p)} is outside the {w}x{h} frame")
        if box is not None:
            x0, y0, x1, y1 = box
            if not all(np.isfinite(v) for v in box):
                raise PromptError(f"prompt on frame {frame_idx}: box {list(box)} must be finite numbers")
            if x1 < x0 or y1 < y0:
                raise PromptError(f"prompt on frame {frame_idx}: box {list(box)} needs x0 <= x1 and y0 <= y1")
            if not (0 <= x0 <= w and 0 <= x1 <= w and 0 <= y0 <= h and 0 <= y1 <= h):
                raise PromptError(f"prompt on frame {frame_idx}: box {list(box)} is outside the {w}x{h} frame")
