"""`make demo`: a clip the project draws itself, prompts for it, tracking, and exports.

No third-party data: the clip is two shapes moving over a soft gradient. Without a
checkpoint the model runs on synthetic weights, so the masks show the pipeline works
end to end, not what a trained model would segment.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_CONFIG = "efficienttam_ti_512x512"
DEMO_FRAMES = 16
DEMO_SIZE = (320, 240)


def make_clip(folder: Path, num_frames: int = DEMO_FRAMES, size=DEMO_SIZE) -> dict:
    """Write numbered PNG frames; return the prompts that select the two shapes on frame 0."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([60 + 80 * xx / w, 90 + 60 * yy / h, 140 - 40 * xx / w], -1).astype(np.uint8)
    centres = []
    for t in range(num_frames):
        im = Image.fromarray(background.copy())
        d = ImageDraw.Draw(im)
        cx, cy = 80 + 8 * t, 120 + 30 * math.sin(t / 3)
        d.ellipse([cx - 35, cy - 35, cx + 35, cy + 35], fill=(230, 70, 60))
        sx, sy = 240 - 4 * t, 70 + 3 * t
        d.rectangle([sx - 25, sy - 25, sx + 25, sy + 25], fill=(250, 220, 60))
        im.save(folder / f"{t:05d}.png")
        centres.append(((cx, cy), (sx, sy)))
    (cx, cy), (sx, sy) = centres[0]
    return {"prompts": [
        {"id": 1, "frame": 0, "points": [[cx, cy]], "labels": [1]},
        {"id": 2, "frame": 0, "box": [sx - 30, sy - 30, sx + 30, sy + 30]},
    ]}


def run_demo(out: Path, quiet: bool = False, export: bool = True) -> None:
    """Track the clip on eager PyTorch, export every stage to every target, then track the
    same clip again through the exported ExecuTorch graphs and report mask agreement."""
    from .checkpoint import load_model
    from .configs import get_config
    from .runtime.backends import EagerBackend
    from .runtime.pipeline import track_video

    clip = out / "clip"
    prompts = make_clip(clip)
    (out / "prompts.json").write_text(json.dumps(prompts, indent=1))
    cfg = get_config(DEMO_CONFIG)
    model, weights = load_model(cfg, None, seed=0)
    summary = track_video(EagerBackend(model), clip, out / "prompts.json", out / "track",
                          save_logits=True, overlay=True, trace=str(out / "track" / "trace.json"), quiet=quiet,
                          force=True)
    print(f"demo: tracked {len(summary['objects'])} objects over {summary['frames']} frames -> {out / 'track'}")
    if not export:
        return
    from etam_export import export_model

    from .runtime.exported import open_backend

    export_model(model, out / "export", targets=("executorch", "onnx", "coreml"), weights_info=weights,
                 quiet=quiet, force=True)
    print(f"demo: exported all stages -> {out / 'export'}")
    track_video(open_backend("executorch", out / "export", config=cfg.name), clip, out / "prompts.json",
                out / "track_executorch", save_logits=True, quiet=quiet, force=True)
    eager = np.load(out / "track" / "logits.npz")["logits"] > 0
    exported = np.load(out / "track_executorch" / "logits.npz")["logits"] > 0
    inter = np.logical_and(eager, exported).sum(axis=(2, 3))
    union = np.logical_or(eager, exported).sum(axis=(2, 3))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    print(f"demo: tracked again on ExecuTorch -> {out / 'track_executorch'}; "
          f"mask IoU vs eager: min {iou.min():.4f}, mean {iou.mean():.4f}")
