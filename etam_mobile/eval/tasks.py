"""One task = one (video, backend variant), run inside a worker process or Ray actor.

Backends are built once per worker (`init_worker`) and reused for every video it gets.
A video's outputs are written into a hidden partial folder and renamed into place only
when complete (palette PNGs in dataset ids + metrics.json with each PNG's SHA-256), so a
worker killed mid-video leaves nothing that a rerun could take for a result.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .protocols import apply_prompt, make_prompt, write_prompt_file

METRICS_NAME = "metrics.json"
NO_OBJECT = -1024.0  # logits of an object on frames before its prompt (upstream's "no object" score)
_BACKENDS: dict = {}
_LOADS: dict = {}
# Fault injection for the tests only: "VIDEO:MARKER" makes the worker tracking VIDEO kill
# itself with SIGKILL after its first frame, once (the marker file records that it did);
# "VIDEO:always" kills every attempt.
KILL_ENV = "ETAM_EVAL_TEST_KILL"


@dataclass(frozen=True)
class Variant:
    """A backend to evaluate: `label` names its results folder."""

    label: str
    backend: str  # eager | executorch | onnx | coreml
    config: str
    artifacts: str | None = None
    checkpoint: str | None = None
    seed: int = 0


def build_backend(v: Variant):
    if v.backend == "eager":
        from ..checkpoint import load_model
        from ..configs import get_config
        from ..runtime.backends import EagerBackend

        model, _ = load_model(get_config(v.config), v.checkpoint, seed=v.seed, quiet=True)
        return EagerBackend(model)
    from ..runtime.exported import open_backend

    return open_backend(v.backend, v.artifacts, config=v.config, checkpoint=v.checkpoint)


def init_worker(variants, threads: int | None = None) -> None:
    """Load every backend this worker may run, once (process-pool initializer / actor init)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    for v in variants:
        get_backend(v)


def get_backend(v: Variant):
    if v.label not in _BACKENDS:
        _BACKENDS[v.label] = build_backend(v)
        _LOADS[v.label] = _LOADS.get(v.label, 0) + 1
    return _BACKENDS[v.label]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_palette_png(labels: np.ndarray, path: Path) -> None:
    from ..runtime.outputs import davis_palette

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(davis_palette())
    im.save(path)


def output_frames(video) -> list:
    """Frames whose masks are written: every frame (DAVIS), the annotated ones (SA-V)."""
    return list(range(len(video.frames))) if video.layout == "davis" else list(video.annotated)


def _maybe_die(video_name: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, marker = spec.partition(":")
    if name != video_name or not marker:
        return
    if marker != "always":
        if os.path.exists(marker):
            return
        Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def track(backend, video, protocol: str, prompt_dir: Path | None = None) -> tuple:
    """Track every object of `video` from its protocol prompt.

    Objects are grouped by the frame they first appear on; each group is tracked forward
    from there by its own Tracker (objects are independent, as upstream tracks them).
    Returns ({frame: (H, W) uint8 labels}, frames processed).
    """
    from ..preprocess import preprocess_frame
    from ..runtime.outputs import label_map, to_video_res
    from ..runtime.tracker import Tracker

    n, h, w = len(video.frames), video.height, video.width
    size = backend.cfg.image_size

    def load(i):
        with Image.open(video.frames[i]) as im:
            return preprocess_frame(np.asarray(im.convert("RGB")), size).numpy()

    prompts = []
    gt_cache = {}
    for pid in sorted(video.objects):
        f = video.first_frame[pid]
        if f not in gt_cache:
            gt_cache[f] = video.gt(f)
        prompts.append(make_prompt(protocol, pid, f, gt_cache[f][pid]))
    if prompt_dir is not None:
        prompt_dir.mkdir(parents=True, exist_ok=True)
        write_prompt_file(prompt_dir, prompts)
    wanted = set(output_frames(video))
    obj_ids = [p.obj_id for p in prompts]
    lr = backend.cfg.low_res_size
    logits = {}
    processed = 0
    for start in sorted({p.frame for p in prompts}):
        group = [p for p in prompts if p.frame == start]
        tracker = Tracker(backend, n, (h, w), load)
        for p in group:
            apply_prompt(tracker, p)
        for frame_idx, ids, low_res in tracker.propagate():
            processed += 1
            _maybe_die(video.name)
            if frame_idx in wanted:
                slot = logits.setdefault(frame_idx, np.full((len(obj_ids), lr, lr), NO_OBJECT, np.float32))
                for k, oid in enumerate(ids):
                    slot[obj_ids.index(oid)] = low_res[k]
    labels = {}
    for i in sorted(wanted):
        lo = logits.get(i)
        labels[i] = (np.zeros((h, w), np.uint8) if lo is None
                     else label_map(to_video_res(lo, h, w), obj_ids))
    return labels, processed


def run_task(task: dict) -> dict:
    """Track, write, score one video; returns the small metrics dict (also in metrics.json)."""
    from .metrics import score_video

    video, variant = task["video"], task["variant"]
    backend = get_backend(variant)
    final = Path(task["out"]) / variant.label / video.name
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".partial-{video.name}-*"):  # left by a worker killed on this video
        shutil.rmtree(old, ignore_errors=True)
    tmp = final.parent / f".partial-{video.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        labels, processed = track(backend, video, task["protocol"], tmp / "prompt")
        seconds = time.perf_counter() - t0
        files = {}
        for i, lab in labels.items():
            name = f"{video.stem(i)}.png"
            save_palette_png(lab, tmp / name)
            files[name] = sha256(tmp / name)
        anns = [video.annotation(i) for i in video.eval_frames]  # (masks, void) per scored frame
        scores = score_video([labels[i] for i in video.eval_frames], [a[0] for a in anns], sorted(video.objects),
                             [a[1] for a in anns])
        doc = {"video": video.name, "backend": variant.label, "protocol": task["protocol"], "key": task["key"],
               "complete": True, **scores, "frames_processed": processed, "seconds": round(seconds, 4),
               "frames_per_second": round(processed / max(seconds, 1e-9), 3), "files": files,
               "objects_palette": {str(k): v for k, v in video.objects.items()},
               "worker": {"pid": os.getpid(), "host": socket.gethostname(), "backend_loads": _LOADS[variant.label]}}
        (tmp / METRICS_NAME).write_text(json.dumps(doc, indent=1))
        if final.exists():  # an unverifiable leftover: the caller decided to redo it
            stale = final.parent / f".stale-{video.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
        return {"status": "ok", **{k: v for k, v in doc.items() if k != "files"}}
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def verified(folder: Path, key: dict, video) -> dict | None:
    """metrics.json of a finished video if it is complete, for this run, and every PNG checks out."""
    try:
        doc = json.loads((folder / METRICS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not doc.get("complete") or doc.get("key") != key:
        return None
    want = {f"{video.stem(i)}.png" for i in output_frames(video)}
    files = doc.get("files", {})
    if set(files) != want:
        return None
    for name, digest in files.items():
        p = folder / name
        if not p.is_file() or sha256(p) != digest:
            return None
    return doc
