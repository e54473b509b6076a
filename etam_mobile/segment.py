"""`etam-mobile segment`: image mode from the command line — one image, one query, K masks.

Inputs are checked before any model work; results are written into a temporary folder that
replaces OUT only when everything is done. OUT may be a new or empty folder or an earlier
segment output (recognised by its scores.json); anything else needs --force.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .runtime.frames import FrameError
from .runtime.tracker import PromptError

FORMAT = "etam-segment"
QUERY_FIELDS = ("points", "labels", "box")
OVERLAY_COLOURS = ((30, 144, 255), (255, 140, 0), (50, 205, 50))


def _note(msg: str) -> None:
    """Notes are not progress: they say what was done to the user's input, so -q keeps them."""
    print(f"note: {msg}", file=sys.stderr)


# ---- image ----------------------------------------------------------------------------------

def load_image(path) -> np.ndarray:
    """RGB uint8 (H, W, 3). 16-bit and CMYK images are converted (with a note), not refused:
    the model sees 8-bit RGB either way, and refusing would only push the same conversion onto
    the user. Unreadable files are refused."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"--image {path} does not exist; pass an image file (.png, .jpg, ...)")
    try:
        with Image.open(path) as im:
            # the decoder's raw mode (e.g. "RGB;16B") is the only trace of 16-bit RGB once loaded
            args = im.tile[0][3] if im.tile else ""
            rawmode = args if isinstance(args, str) else str(args[0]) if isinstance(args, tuple) and args else ""
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I") or ";16" in rawmode:
                _note(f"{path.name} has 16 bits per channel; converted to 8-bit (top 8 bits), the model takes 8-bit RGB")
                if mode.startswith("I"):
                    a = np.asarray(im).astype(np.int64)
                    im8 = Image.fromarray((np.clip(a, 0, 65535) >> 8).astype(np.uint8), mode="L")
                    return np.asarray(im8.convert("RGB"))
            if mode == "CMYK":
                _note(f"{path.name} is CMYK; converted to RGB without colour management "
                      "(save it as sRGB RGB for exact colours)")
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FrameError(f"--image {path} is not a readable image ({type(exc).__name__}); "
                         "pass a PNG or JPEG file") from None


# ---- query ----------------------------------------------------------------------------------

def parse_query(data, width: int, height: int):
    """(points, labels, box) from a query object, with the field rules and messages of `track`
    prompts (the same validators, called with a stand-in id/frame that is then dropped)."""
    from .runtime.prompts import check_against_video, parse_prompts

    if not isinstance(data, dict):
        raise PromptError(f'the query is a JSON {type(data).__name__}, not an object; write it as '
                          '{"points": [[x, y]], "labels": [1]} and/or {"box": [x0, y0, x1, y1]}')
    track_only = [k for k in ("id", "frame", "prompts") if k in data]
    if track_only:
        raise PromptError(f"the query has {', '.join(repr(k) for k in track_only)}, which belong to `etam-mobile "
                          "track` prompt files; an image query is one prompt: points/labels and/or box only")
    unknown = sorted(set(data) - set(QUERY_FIELDS))
    if unknown:
        raise PromptError(f"the query has unknown field(s) {unknown}; allowed: points, labels, box")
    if not data or (not data.get("points") and not data.get("labels") and "box" not in data):
        raise PromptError('the query is empty; give clicks {"points": [[x, y]], "labels": [1]} and/or a box '
                          '{"box": [x0, y0, x1, y1]} in image pixels')
    entry = {"id": 1, "frame": 0, **data}
    try:
        (p,) = parse_prompts({"prompts": [entry]})
        check_against_video([p], 1, width, height)
    except PromptError as exc:
        msg = re.sub(r"^prompt #0( \(object 1, frame 0\))?|^prompt for object 1 on frame 0", "query", str(exc))
        msg = msg.replace(f"{width}x{height} frame", f"{width}x{height} image")
        if ";" not in msg:
            msg += (f"; give x in 0..{width} and y in 0..{height} (image pixels)" if "outside" in msg
                    else "; see README 'Image mode' for the query format")
        raise PromptError(msg) from None
    return p.points, p.labels, p.box


def load_query(path, width: int, height: int):
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"query file {path} does not exist; write one like "
                          '{"points": [[x, y]], "labels": [1]}')
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"query file {path} is not valid JSON ({exc}); see README 'Image mode'") from None
    return parse_query(data, width, height)


# ---- output ---------------------------------------------------------------------------------

def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; choose another path")
    if out.is_dir() and any(out.iterdir()) and not force:
        try:
            previous = json.loads((out / "scores.json").read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            previous = False
        if not previous:
            raise FileExistsError(f"--out {out} is not empty and is not an earlier segment output; "
                                  "choose another folder or pass --force to replace it")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap the finished folder in; the old OUT is removed only after the new one is in place."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "out")
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def overlay_image(rgb: np.ndarray, result, points=None, labels=None, box=None) -> Image.Image:
    """The K candidates side by side, each tinted over the image with its score and prompts."""
    panels = []
    for k in range(len(result.scores)):
        colour = np.asarray(OVERLAY_COLOURS[k % len(OVERLAY_COLOURS)], np.float32)
        a = result.masks[k][..., None] * 0.5
        im = Image.fromarray((rgb.astype(np.float32) * (1 - a) + colour * a).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for (x, y), lab in zip(points or [], labels or []):
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(0, 255, 0) if lab == 1 else (255, 0, 0), outline=(0, 0, 0))
        if box is not None:
            d.rectangle(box, outline=(255, 255, 0), width=2)
        best = " (best)" if k == result.best else ""
        d.rectangle([0, 0, 150, 14], fill=(0, 0, 0))
        d.text((3, 2), f"mask {k}: score {result.scores[k]:.3f}{best}", fill=(255, 255, 255))
        panels.append(im)
    h, w = rgb.shape[:2]
    strip = Image.new("RGB", (w * len(panels), h))
    for k, im in enumerate(panels):
        strip.paste(im, (k * w, 0))
    return strip


def segment_image(predictor, image, query, out, multimask=False, save_logits=False, overlay=False,
                  force=False, image_name=None) -> dict:
    """What `etam-mobile segment` does; returns the scores.json document. `image` is a path or an
    RGB uint8 array, `query` a path or the query object."""
    out = Path(out)
    _check_out(out, force)
    rgb = image if isinstance(image, np.ndarray) else load_image(image)
    image_name = image_name or (None if isinstance(image, np.ndarray) else str(image))
    h, w = rgb.shape[:2]
    points, labels, box = load_query(query, w, h) if not isinstance(query, (dict, list)) else parse_query(query, w, h)
    if multimask and box is not None and points:
        _note("--multimask with a box and clicks: upstream advises one mask (no --multimask) for such "
              "unambiguous prompts; writing 3 candidates anyway")
    elif multimask and points and len(points) > 1 and box is None:
        _note("--multimask with several clicks: upstream advises one mask (no --multimask) for unambiguous "
              "prompts; writing 3 candidates anyway")
    predictor.set_image(rgb)
    result = predictor.predict(points, labels, box, multimask=multimask)
    doc = {
        "format": FORMAT, "version": 1, "config": predictor.cfg.name, "image": image_name, "image_size": [w, h],
        "multimask": bool(multimask), "order": "model",
        "scores": [round(float(s), 6) for s in result.scores], "best": result.best,
        "decoder_tokens": list(result.tokens), "object_score": round(result.object_score, 6),
        "query": {k: v for k, v in (("points", points), ("labels", labels), ("box", box)) if v is not None},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (tmp / "masks").mkdir()
        for k, m in enumerate(result.masks):
            Image.fromarray(np.where(m, 255, 0).astype(np.uint8), mode="L").save(tmp / "masks" / f"{k}.png")
        (tmp / "scores.json").write_text(json.dumps(doc, indent=1))
        if save_logits:
            np.savez(tmp / "logits.npz", logits=result.logits.astype(np.float32),
                     scores=result.scores.astype(np.float32))
        if overlay:
            overlay_image(rgb, result, points, labels, box).save(tmp / "overlay.png")
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return doc


def cmd_segment(args) -> int:
    from .cli import build_backend
    from .runtime.image_mode import ImagePredictor

    out = Path(args.out)
    _check_out(out, args.force)  # before loading a model
    rgb = load_image(args.image)
    load_query(args.prompts, rgb.shape[1], rgb.shape[0])  # fail before loading a model
    predictor = ImagePredictor(build_backend(args))
    doc = segment_image(predictor, rgb, args.prompts, out, multimask=args.multimask, save_logits=args.save_logits,
                        overlay=args.overlay, force=args.force, image_name=args.image)
    scores = ", ".join(f"{s:.3f}" for s in doc["scores"])
    print(f"{len(doc['scores'])} mask(s) in model order, scores {scores}, best {doc['best']} -> {out}")
    return 0


def register(sub, add_model_args) -> None:
    p = sub.add_parser("segment", help="image mode: masks for one image from clicks and/or a box")
    add_model_args(p)
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    p.add_argument("--prompts", required=True,
                   help='QUERY.json: {"points": [[x, y], ...], "labels": [1|0, ...]} and/or {"box": [x0, y0, x1, y1]}')
    p.add_argument("--multimask", action="store_true", help="three candidate masks with scores (default: one)")
    p.add_argument("--out", required=True, help="output folder (masks/K.png, scores.json)")
    p.add_argument("--save-logits", action="store_true", help="write OUT/logits.npz: logits (K, H, W), scores (K,)")
    p.add_argument("--overlay", action="store_true", help="write OUT/overlay.png: the candidates side by side")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT that is not a segment output")
    p.set_defaults(func=cmd_segment)
