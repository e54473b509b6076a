"""`etam-mobile bench-image`: image-mode speed per backend — encoder once, decoder per tap.

What a mobile engineer asks: how long after picking a photo until the first mask (encoder +
first tap), and how many taps per second after that (decoder + resize to the photo). Each
backend answers the same taps on the same synthetic photos through the real ImagePredictor;
one warm-up image per backend is not counted. Backends run one after another in this process
(a shared machine makes absolute numbers noisy; the ratios within one run are the point).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMA = "etam-bench-image"


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _photos(n: int, width: int, height: int, seed: int = 0) -> list:
    """Smooth synthetic photos (gradients and blobs), so masks have structure; no real data."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for _ in range(n):
        img = np.zeros((height, width, 3), np.float32)
        for c in range(3):
            img[..., c] = 80 + 60 * np.sin(xx / rng.uniform(40, 200) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(40, 200))
        for _ in range(6):
            cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.2) * width
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _taps(n: int, width: int, height: int, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    return [[[float(rng.uniform(0, width)), float(rng.uniform(0, height))]] for _ in range(n)]


class _TimedBackend:
    """Wraps a backend to time each stage call (decoder time without the resize to the photo)."""

    def __init__(self, backend):
        self.inner = backend
        self.cfg, self.capacities, self.point_capacity = backend.cfg, backend.capacities, backend.point_capacity
        self.ms: dict = {}

    def run(self, stage, inputs):
        t0 = time.perf_counter()
        out = self.inner.run(stage, inputs)
        self.ms.setdefault(stage, []).append((time.perf_counter() - t0) * 1e3)
        return out


def bench_backend(backend, photos: list, taps: list, multimask: bool = True) -> dict:
    """Time one backend: setup (no_mem_embed read-out), per photo the encoder and first tap,
    then every further tap. The first photo is a warm-up and not counted."""
    from .common import summarize
    from ..runtime.image_mode import ImagePredictor

    timed = _TimedBackend(backend)
    pred = ImagePredictor(timed)
    t0 = time.perf_counter()
    pred._no_mem_embed()
    setup_ms = (time.perf_counter() - t0) * 1e3
    set_ms, first_ms, tap_ms, encoder_ms, decoder_ms = [], [], [], [], []
    for i, rgb in enumerate(photos):
        timed.ms.clear()
        t0 = time.perf_counter()
        pred.set_image(rgb)
        t1 = time.perf_counter()
        h, w = rgb.shape[:2]
        times = []
        for pts in taps:
            p = [[min(x, w), min(y, h)] for x, y in pts]
            ts = time.perf_counter()
            pred.predict(p, [1] * len(p), multimask=multimask)
            times.append((time.perf_counter() - ts) * 1e3)
        if i == 0:
            continue  # warm-up
        set_ms.append((t1 - t0) * 1e3)
        first_ms.append((t1 - t0) * 1e3 + times[0])
        tap_ms += times[1:]
        decoder_ms += timed.ms.get("mask_decoder", [])[1:]
        encoder_ms += timed.ms.get("image_encoder", [])
    tap = summarize(tap_ms)
    return {
        "setup_ms": round(setup_ms, 3), "encoder_ms": summarize(encoder_ms), "set_image_ms": summarize(set_ms),
        "first_mask_ms": summarize(first_ms), "tap_ms": tap, "decoder_call_ms": summarize(decoder_ms),
        "taps_per_second_after_first": round(1000.0 / tap["median"], 2) if tap["median"] else None,
    }


def run_bench_image(config: str, backends, photos: int = 3, taps: int = 10, size=(1280, 960), checkpoint=None,
                    seed: int = 0, artifacts=None, threads=None, quiet=False) -> dict:
    import torch

    from .artifacts import ensure_artifacts
    from .machine import machine_info
    from .running import _make_backend
    from ..checkpoint import load_model
    from ..configs import get_config

    if threads:
        torch.set_num_threads(threads)
    model, _ = load_model(get_config(config), checkpoint, seed=seed, quiet=True)
    w, h = size
    images = _photos(photos + 1, w, h)
    tap_list = _taps(taps, w, h)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="etam-bench-image-") as work:
        folder = ensure_artifacts(model, Path(artifacts) if artifacts else None, backends, quiet, Path(work))
        for name in backends:
            _log(quiet, f"bench-image: {name}: {photos} photo(s) of {w}x{h}, {taps} taps each (+1 warm-up photo)")
            backend = _make_backend({"backend": name, "config": config, "checkpoint": checkpoint, "seed": seed,
                                     "threads": threads, "artifacts": str(folder) if folder else None})
            rows[name] = bench_backend(backend, images, tap_list)
    return {"schema": SCHEMA, "version": 1, "config": config, "photo_size": [w, h], "photos": photos,
            "taps_per_photo": taps, "multimask": True, "machine": machine_info(measure=False, threads=threads),
            "backends": rows}


def render_markdown(doc: dict) -> str:
    def f(v):
        return "–" if v is None else f"{v:.1f}"

    lines = [f"Image mode, {doc['config']}, {doc['photo_size'][0]}x{doc['photo_size'][1]} photos, "
             f"{doc['taps_per_photo']} taps each (3 masks per tap); medians in ms.", "",
             "| backend | encoder | photo ready (encode) | first mask | tap (decoder + resize) | decoder call | taps/s after the first |",
             "|---|---|---|---|---|---|---|"]
    for name, r in doc["backends"].items():
        lines.append(f"| {name} | {f(r['encoder_ms']['median'])} | {f(r['set_image_ms']['median'])} | "
                     f"{f(r['first_mask_ms']['median'])} | {f(r['tap_ms']['median'])} | "
                     f"{f(r['decoder_call_ms']['median'])} | {f(r['taps_per_second_after_first'])} |")
    return "\n".join(lines) + "\n"


def cmd_bench_image(args) -> int:
    from .command import parse_backends
    from .common import BenchError

    try:
        backends = parse_backends(args.backends)
        try:
            w, h = (int(v) for v in args.photo_size.lower().split("x"))
        except ValueError:
            raise BenchError(f"--photo-size {args.photo_size!r} must be WxH, e.g. 1280x960") from None
        if not args.config:
            raise BenchError("--config is required (e.g. --config efficienttam_ti_512x512)")
        if args.photos < 1 or args.taps < 2:
            raise BenchError("--photos must be >= 1 and --taps >= 2 (taps after the first are what is measured)")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    doc = run_bench_image(args.config, backends, photos=args.photos, taps=args.taps, size=(w, h),
                          checkpoint=args.checkpoint, seed=args.seed, artifacts=args.artifacts,
                          threads=args.threads, quiet=args.quiet)
    md = render_markdown(doc)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)
    return 0


def register(sub, add_model_args) -> None:
    p = sub.add_parser("bench-image", help="image-mode speed: encoder once per photo, decoder per tap, per backend")
    add_model_args(p, backend_choices=("eager",))
    p.add_argument("--backends", default="eager,executorch,onnx", help="comma-separated (default eager,executorch,onnx)")
    p.add_argument("--photos", type=int, default=3, help="timed photos per backend, after one warm-up (default 3)")
    p.add_argument("--taps", type=int, default=10, help="single-click taps per photo (default 10)")
    p.add_argument("--photo-size", default="1280x960", help="WxH of the synthetic photos (default 1280x960)")
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--markdown", help="write the Markdown table here")
    p.set_defaults(func=cmd_bench_image)
