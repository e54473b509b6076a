"""The streaming tracker: one frame in, masks out, bounded memory — what the phone apps do.

`StreamTracker` drives the same state machine as the offline tracker (runtime/tracker.py,
`Tracker` with no frame count): prompts for the current frame are decoded when that frame is
stepped, the frame is tracked with `Tracker.track_frame`, and nothing of the frame survives
the step except what the memory bank keeps (prompted frames, the recent frames upstream's
rules can reach). Offline `etam-mobile track` is a loop over this class plus atomic output.

    from etam_mobile import open_tracker
    with open_tracker("efficienttam_ti_512x512", backend="executorch", artifacts="exp/") as tr:
        for i, rgb in enumerate(source):
            if i == 0:
                tr.add_prompt(obj_id=1, points=[[210, 130]], labels=[1])
            result = tr.step(rgb)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..preprocess import preprocess_frame
from .outputs import label_map, to_video_res
from .tracker import PromptError, Tracker


class StreamError(ValueError):
    """A frame the stream cannot take (another size than the first, not an RGB uint8 array)."""


@dataclass
class StepResult:
    """What one `step()` produced. `low_res` are the model's (objects, lr, lr) mask logits;
    the frame-size views are computed on demand. An object predicted absent on this frame
    (object score <= 0) has all logits at -1024, so its mask is empty."""

    frame_index: int
    obj_ids: list
    low_res: np.ndarray
    obj_scores: list
    height: int
    width: int
    _logits: np.ndarray | None = field(default=None, repr=False)

    def logits(self) -> np.ndarray:
        """(objects, H, W) float32 logits at frame size (bilinear, like upstream's output)."""
        if self._logits is None:
            self._logits = to_video_res(self.low_res, self.height, self.width)
        return self._logits

    def masks(self) -> dict:
        """{obj_id: (H, W) bool}; an absent object gives an all-False mask."""
        lg = self.logits()
        return {obj_id: lg[i] > 0 for i, obj_id in enumerate(self.obj_ids)}

    def label_map(self) -> np.ndarray:
        """(H, W) uint8 object ids (0 = background), as the mask PNGs store them."""
        return label_map(self.logits(), self.obj_ids)

    @property
    def present(self) -> dict:
        """{obj_id: object score > 0}."""
        return {obj_id: s > 0 for obj_id, s in zip(self.obj_ids, self.obj_scores)}


class StreamTracker:
    """Frames one at a time, no frame count. See the module docstring for the API.

    Prompts (`add_prompt`) apply to the next frame to be stepped unless `frame` names a later
    one (then they wait for it). A prompt for a frame already stepped is an error: its
    features are gone. `add_prompt(..., frame=f, image=rgb)` with f's pixels decodes it now
    as a look-ahead conditioning frame, the way the offline tracker (and upstream) sees a
    prompt on a later frame before tracking starts (given for the next frame, it is decoded now
    too, so prompts keep their order; that frame's features are then computed twice).
    """

    def __init__(self, backend, trace: list | None = None):
        self.backend = backend
        self.cfg = backend.cfg
        self._inputs: dict[int, np.ndarray] = {}  # model inputs of frames whose features are needed now
        self.core = Tracker(backend, None, None, self._load, trace=trace)
        self._queued: list = []  # (frame, kwargs) of prompts waiting for their frame
        self.next_frame = 0
        self.frame_hw: tuple | None = None

    # ---- context manager: nothing to release for numpy backends, but the API reads well
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self._inputs.clear()
        self.core._forget_features(set())

    def _load(self, frame_idx: int) -> np.ndarray:
        return self._inputs[frame_idx]

    @property
    def obj_ids(self) -> list:
        return list(self.core.objects)

    def add_prompt(self, obj_id: int, points=None, labels=None, box=None, mask=None, frame: int | None = None,
                   image: np.ndarray | None = None) -> None:
        """Clicks/labels, a box, or a binary (H, W) mask for `obj_id` on `frame` (default: the
        next frame `step` will take). Coordinates are in frame pixels."""
        frame = self.next_frame if frame is None else int(frame)
        if frame < self.next_frame:
            raise PromptError(f"prompt for object {obj_id} on frame {frame}, but the stream is already at frame "
                              f"{self.next_frame}; a stream can only take prompts for the current or a later frame")
        if not isinstance(obj_id, (int, np.integer)) or isinstance(obj_id, bool) or not 0 < int(obj_id) < 256:
            raise PromptError(f"object id {obj_id!r} must be an integer 1..255 (mask PNGs store ids as 8-bit values)")
        if mask is not None and (points is not None or box is not None):
            raise PromptError(f"prompt for object {obj_id}: a mask prompt cannot be combined with clicks or a box; "
                              "give the mask alone, then correct with clicks on a later frame")
        if mask is not None and self.frame_hw is not None and np.shape(mask) != tuple(self.frame_hw):
            h, w = self.frame_hw
            raise PromptError(f"mask prompt for object {obj_id} has shape {np.shape(mask)}, the frames are {w}x{h}; "
                              "give a mask of the frame's size")
        kwargs = dict(points=points, labels=labels, box=box, mask=mask)
        if image is not None:
            self._check_frame_array(image)
            self._inputs[frame] = preprocess_frame(image, self.cfg.image_size).numpy()
            try:  # encoded now, while its features exist (same memory upstream's preflight makes)
                self.core.add_prompt(frame, int(obj_id), **kwargs)
                self.core.commit_prompts()
            finally:
                self._inputs.pop(frame, None)
                self.core._forget_features(set())
            return
        if self.frame_hw is not None and mask is None:
            self.core._check_prompt(frame, points, labels, box)  # fail now, not mid-stream
        self._queued.append((frame, int(obj_id), kwargs))

    def _check_frame_array(self, rgb) -> None:
        arr = np.asarray(rgb)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise StreamError(f"a frame must be an (H, W, 3) uint8 RGB array, got {arr.dtype} {arr.shape}")
        if self.frame_hw is None:
            self.frame_hw = arr.shape[:2]
            self.core.video_hw = self.frame_hw
        elif arr.shape[:2] != tuple(self.frame_hw):
            h, w = self.frame_hw
            raise StreamError(f"frame {self.next_frame} is {arr.shape[1]}x{arr.shape[0]} but the stream started at "
                              f"{w}x{h}; resize frames to one size (or open a new tracker)")

    def skip(self) -> None:
        """Advance past a frame without tracking it (frames before the first prompt offline)."""
        if any(f == self.next_frame for f, _, _ in self._queued):
            raise PromptError(f"frame {self.next_frame} has prompts; step it instead of skipping it")
        self.next_frame += 1

    def step(self, rgb: np.ndarray) -> StepResult:
        """Track one frame: apply its prompts, track every object, update the bank."""
        self._check_frame_array(rgb)
        idx = self.next_frame
        self._inputs[idx] = preprocess_frame(rgb, self.cfg.image_size).numpy()
        try:
            now = [q for q in self._queued if q[0] == idx]
            self._queued = [q for q in self._queued if q[0] != idx]
            for frame, obj_id, kwargs in now:
                self.core.add_prompt(frame, obj_id, **kwargs)
            self.core.commit_prompts()
            low = self.core.track_frame(idx)
            scores = self.core.obj_scores(idx)
        finally:
            self._inputs.clear()
            self.core._forget_features(set())
        self.next_frame += 1
        h, w = self.frame_hw
        return StepResult(idx, self.obj_ids, low, scores, h, w)

    def bank_sizes(self) -> dict:
        """{obj_id: (conditioning frames, recent frames, tracked-frame records)} — bounded."""
        return {o: (len(b.cond), len(b.non_cond), len(b.tracked)) for o, b in self.core.objects.items()}


def open_tracker(config: str | None = None, checkpoint=None, backend: str = "eager", artifacts=None, seed: int = 0,
                 threads: int | None = None, trace: list | None = None, quiet: bool = True) -> StreamTracker:
    """A StreamTracker on `backend`: "eager" (config + checkpoint, or seeded synthetic weights)
    or an exported one ("executorch", "onnx", "coreml") reading the `artifacts` folder."""
    if backend == "eager":
        from ..checkpoint import load_model
        from ..configs import get_config
        from .backends import EagerBackend

        if config is None:
            raise ValueError("open_tracker(backend='eager') needs a config name, e.g. 'efficienttam_ti_512x512'")
        model, _ = load_model(get_config(config), checkpoint, seed=seed, quiet=quiet)
        be = EagerBackend(model, threads=threads)
    else:
        from .exported import open_backend

        if artifacts is None:
            raise ValueError(f"open_tracker(backend={backend!r}) needs artifacts=EXPORT_DIR (made by etam-mobile export)")
        be = open_backend(backend, artifacts, config=config, checkpoint=checkpoint)
    return StreamTracker(be, trace=trace)


__all__ = ["StepResult", "StreamError", "StreamTracker", "open_tracker"]
