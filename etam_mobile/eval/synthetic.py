"""Small synthetic DAVIS- and SA-V-layout datasets: moving, occluding shapes with exact masks.

For tests and the throughput benchmark (never real data): each video has 2-3 shapes moving
in straight lines over a noisy background; later shapes are drawn over earlier ones, so
the ground truth holds occlusions. `python -m etam_mobile.eval.synthetic OUT --layout davis`.
`void_band` (DAVIS layout) marks a vertical band of every annotation as void (palette 255),
over objects and background alike, as DAVIS marks pixels nobody is scored on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ..runtime.outputs import davis_palette

_COLOURS = [(230, 60, 40), (40, 200, 80), (60, 90, 240), (240, 220, 40)]


def _scene(rng, n_obj, frames, w, h, late_from=None):
    """Per frame (label map, RGB) with objects 1..n_obj (object n_obj appears at late_from if set)."""
    objs = []
    for k in range(n_obj):
        r = int(rng.integers(max(4, h // 8), max(6, h // 4)))
        x0, y0 = rng.uniform(r, w - r), rng.uniform(r, h - r)
        vx, vy = rng.uniform(-w / (2 * frames), w / (2 * frames)), rng.uniform(-h / (2 * frames), h / (2 * frames))
        objs.append((r, x0, y0, vx, vy, k % 2))
    bg = rng.integers(60, 120, size=(h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(frames):
        labels = np.zeros((h, w), np.uint8)
        rgb = bg.copy()
        for k, (r, x0, y0, vx, vy, square) in enumerate(objs):
            if late_from is not None and k == n_obj - 1 and t < late_from:
                continue
            cx = np.clip(x0 + vx * t, r, w - r)
            cy = np.clip(y0 + vy * t, r, h - r)
            m = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r) if square else (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            labels[m] = k + 1
            rgb[m] = _COLOURS[k % len(_COLOURS)]
        out.append((labels, rgb))
    return out


def void_columns(size) -> slice:
    """The x range of the void band of a (w, h) frame: 6 columns left of the centre."""
    w = size[0]
    return slice(w // 2 - 6, w // 2)


def make_davis(root, videos=3, frames=6, size=(96, 64), objects=2, seed=0, void_band=False) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    pal = davis_palette()
    for v in range(videos):
        name = f"shapes{v:02d}"
        fdir, adir = root / "JPEGImages/480p" / name, root / "Annotations/480p" / name
        fdir.mkdir(parents=True)
        adir.mkdir(parents=True)
        for t, (labels, rgb) in enumerate(_scene(rng, objects + v % 2, frames, *size)):
            Image.fromarray(rgb).save(fdir / f"{t:05d}.jpg", quality=95)
            if void_band:
                labels[:, void_columns(size)] = 255
            im = Image.fromarray(labels, mode="P")
            im.putpalette(pal)
            im.save(adir / f"{t:05d}.png")
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("".join(f"shapes{v:02d}\n" for v in range(videos)))
    return root


def make_sav(root, videos=2, frames=9, size=(96, 64), objects=2, every=2, seed=1) -> Path:
    """SA-V layout; annotated every `every` frames; in video 1 the last object appears late."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for v in range(videos):
        name = f"sav_{v:06d}"
        fdir = root / "JPEGImages_24fps" / name
        fdir.mkdir(parents=True)
        late = every if v % 2 == 1 else None
        for t, (labels, rgb) in enumerate(_scene(rng, objects, frames, *size, late_from=late)):
            Image.fromarray(rgb).save(fdir / f"{t:05d}.jpg", quality=95)
            if t % every:
                continue
            for k in range(objects):
                odir = root / "Annotations_6fps" / name / f"{k:03d}"
                odir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.where(labels == k + 1, 255, 0).astype(np.uint8), mode="L").save(odir / f"{t:05d}.png")
    return root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layout", choices=("davis", "sav"), default="davis")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--size", default="96x64", help="WxH")
    ap.add_argument("--void-band", action="store_true", help="DAVIS layout: mark a vertical band void (255)")
    a = ap.parse_args(argv)
    w, h = (int(x) for x in a.size.split("x"))
    if a.layout == "davis":
        make_davis(a.out, videos=a.videos, frames=a.frames, size=(w, h), void_band=a.void_band)
    else:
        make_sav(a.out, videos=a.videos, frames=a.frames, size=(w, h))
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
