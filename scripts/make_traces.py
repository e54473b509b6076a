"""Regenerate the conformance fixtures the Swift and Kotlin trackers replay in their unit tests.

    .venv/bin/python scripts/make_traces.py            # writes both app fixture folders
    .venv/bin/python scripts/make_traces.py --out DIR  # writes into DIR only (used by the tests)

The Python runtime (etam_mobile.runtime.tracker) tracks small synthetic videos on the tiny test
config with seeded synthetic weights, and every decision it makes is written out as a trace:

- `trace_<case>.json`: the trace (format of etam_mobile/runtime/TRACE.md) plus
  `script` (the prompt / propagate operations that produced it, in order), `manifest` (the
  config constants and capacities, with the same key names as manifest.json), and per record
  two numbers the ports need to re-derive the decision without the mask tensors:
  `stab_counts` = [pixels of mask 0 > +delta, pixels of mask 0 > -delta] and
  `has_mask_input` (whether the previous mask was fed back to the decoder).
- `vectors.json`: input -> output vectors for prompt padding and coordinate transforms
  (build_prompt), preprocessing (Pillow-bicubic resize, normalization), stability score and
  mask choice, bfloat16 rounding, bilinear mask upsampling and the object label map.
  Mask prompts are script ops with `mask_rle` (runs `[start, length]` of true pixels, row-major at
  `video_size`); their records also carry `mask_input_sum` (sum of the decoder's mask input, the
  `mask_downsample` conv of the resized mask) so a port can check its resize and conv.
- `trace_no_object.json`: weights whose object-score head bias is moved (`obj_score_bias`) so the
  scores cross zero: frames where the object is absent (mask of -1024, memory of that mask, the
  decoder graph's no-object pointer) next to frames where it is present.
- `image_mode.json`: image mode (etam_mobile/runtime/image_mode.py) on a small synthetic photo:
  per query the padded prompt, the decoder's IoUs and stability counts, the returned tokens
  and scores (model order), and per returned mask its area and clipped logit sum at photo size;
  for the first query also the full decoder output and the photo-size logits, so a port can
  replay a whole ImagePredictor call against a stub runner; and preprocessing vectors for upstream's
  image-predictor resize (float bilinear with antialiasing), which differs from the video path
  (format in TRACE.md).
- `manifest.json`: a manifest for the tiny config as etam_mobile.manifest writes it (artifact
  names and checksums are placeholders: no export is run).

Everything is deterministic (seeded weights and frames, no timestamps).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from etam_mobile.checkpoint import load_model  # noqa: E402
from etam_mobile.configs import tiny_test_config  # noqa: E402
from etam_mobile.contracts import STAGES, Capacities, choose_slot_bucket, slot_buckets  # noqa: E402
from etam_mobile.manifest import TARGET_SUFFIX, build_manifest  # noqa: E402
from etam_mobile.preprocess import preprocess_frame  # noqa: E402
from etam_mobile.runtime.backends import EagerBackend  # noqa: E402
from etam_mobile.runtime.decisions import build_prompt, choose_mask, stability_score  # noqa: E402
from etam_mobile.runtime.image_mode import ImagePredictor, preprocess_image  # noqa: E402
from etam_mobile.runtime.memory_bank import round_to_bf16  # noqa: E402
from etam_mobile.runtime.outputs import label_map, to_video_res  # noqa: E402
from etam_mobile.runtime.tracker import Tracker  # noqa: E402

OUT_DIRS = (
    ROOT / "android_demo" / "tracker-core" / "src" / "test" / "resources" / "traces",
    ROOT / "ios_demo" / "Tests" / "EtamKitTests" / "Fixtures",
)
SEED = 3
VIDEO_HW = (96, 128)  # frame height, width
CAPS = Capacities(points=8, cond_frames=2)
NO_OBJ_BIAS = -0.27  # object-score head bias of the no-object case (synthetic weights: 4.0)


def synthetic_frame(i: int, hw=VIDEO_HW) -> np.ndarray:
    """Two moving shapes on a gradient."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 60)], -1).astype(np.uint8)
    cx, cy = 30 + 4 * i, 40 + 2 * i
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < 15**2] = (230, 40, 40)
    x0, y0 = 80 - 3 * i, 20 + i
    img[y0:y0 + 25, x0:x0 + 30] = (40, 200, 60)
    return img


class RecordingBackend:
    """Wraps a backend and notes, per mask-decoder call, what a port needs besides the trace."""

    def __init__(self, inner):
        self.inner, self.cfg, self.capacities = inner, inner.cfg, inner.capacities
        self.point_capacity = inner.point_capacity
        self.mask_prompt = getattr(inner, "mask_prompt", None)
        self.calls = []

    def run(self, stage, inputs):
        out = self.inner.run(stage, inputs)
        if stage == "mask_decoder":
            m0 = out[0][0, 0]
            d = self.cfg.dynamic_multimask_stability_delta
            self.calls.append({"stab_counts": [int(np.count_nonzero(m0 > d)), int(np.count_nonzero(m0 > -d))],
                               "has_mask_input": bool(float(inputs[4][0]) > 0.5),
                               "mask_input_sum": float(np.asarray(inputs[3], np.float64).sum())})
        return out


def _round(x, nd=6):
    return float(f"{float(x):.{nd}g}")


def _buckets(cfg, targets) -> list:
    """The exporter's slot buckets with placeholder artifact names (no export is run): methods of
    memory_attention's program for the exporter's METHOD_TARGETS, one file each for the others."""
    from etam_export.buckets import METHOD_TARGETS, bucket_method

    out = []
    for k, p in slot_buckets(cfg, CAPS):
        arts = {t: f"memory_attention{TARGET_SUFFIX[t]}" if t in METHOD_TARGETS else
                f"memory_attention.k{k}p{p}{TARGET_SUFFIX[t]}" for t in targets}
        methods = {t: bucket_method(k, p) for t in targets if t in METHOD_TARGETS}
        out.append({"memory_slots": k, "ptr_slots": p, "artifacts": arts, **({"methods": methods} if methods else {})})
    return out


def manifest_block(cfg, mask_prompt: dict | None = None) -> dict:
    doc = build_manifest(cfg, CAPS, {"synthetic_seed": SEED}, "fp32", {}, {}, slot_buckets=_buckets(cfg, ("executorch",)),
                         mask_prompt=mask_prompt)
    keys = ("format_version", "config", "image_size", "capacities", "postprocessing") + (("mask_prompt",) if mask_prompt else ())
    out = {k: doc[k] for k in keys}
    out["stages"] = {"memory_attention": {"slot_buckets": doc["stages"]["memory_attention"]["slot_buckets"]}}
    return out


def mask_rle(mask: np.ndarray) -> list:
    """Runs [start, length] of true pixels in row-major order: a small, exact mask for a script op."""
    flat = np.concatenate([[0], np.asarray(mask, np.int8).reshape(-1), [0]])
    edges = np.flatnonzero(np.diff(flat))
    return [[int(a), int(b - a)] for a, b in zip(edges[::2], edges[1::2])]


def mask_from_rle(runs, hw) -> np.ndarray:
    flat = np.zeros(hw[0] * hw[1], bool)
    for start, length in runs:
        flat[start:start + length] = True
    return flat.reshape(hw)


def disc_mask(cx, cy, r, hw=VIDEO_HW) -> np.ndarray:
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 < r * r


def run_case(model, name, num_frames, script, obj_score_bias=None) -> dict:
    if obj_score_bias is not None:  # scores cross zero: objects that leave (see tests/test_no_object.py)
        model = copy.deepcopy(model)
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.data.fill_(obj_score_bias)
    backend = RecordingBackend(EagerBackend(model, CAPS))
    cfg = backend.cfg
    size = cfg.image_size
    frames = {}

    def loader(i):
        if i not in frames:
            frames[i] = preprocess_frame(synthetic_frame(i), size).numpy()
        return frames[i]

    records = []
    tracker = Tracker(backend, num_frames, VIDEO_HW, loader, trace=records)
    obj_ids = []
    for op in script:
        if op["op"] == "prompt":
            mask = mask_from_rle(op["mask_rle"], VIDEO_HW) if "mask_rle" in op else None
            tracker.add_prompt(op["frame"], op["obj_id"], op.get("points"), op.get("labels"), op.get("box"), mask=mask)
            if op["obj_id"] not in obj_ids:
                obj_ids.append(op["obj_id"])
        else:
            for _ in tracker.propagate(op.get("start")):
                pass
    assert len(records) == len(backend.calls), "one trace record per decoder call"
    for rec, extra in zip(records, backend.calls):
        rec.update(extra)
        if rec["kind"] == "mask":
            rec["mask_input_sum"] = _round(rec["mask_input_sum"])
        else:
            del rec["mask_input_sum"]
        rec["iou"] = [_round(v) for v in rec["iou"]]
        rec["stability"] = _round(rec["stability"])
        rec["obj_score"] = _round(rec["obj_score"])
        rec["mask_sum"] = _round(rec["mask_sum"])
    h, w = VIDEO_HW
    return {"format": "etam-trace", "version": 1, "case": name, "config": cfg.name,
            "capacities": CAPS.to_dict(cfg), "slot_buckets": [list(b) for b in tracker.slot_buckets],
            "num_frames": num_frames, "video_size": [w, h], "obj_ids": obj_ids,
            **({"obj_score_bias": obj_score_bias} if obj_score_bias is not None else {}),
            "manifest": manifest_block(cfg, backend.mask_prompt if any("mask_rle" in op for op in script) else None),
            "script": script, "records": records}


CASES = {
    # Two objects on frame 0: clicks (positive + negative) and a box.
    "two_objects": dict(num_frames=8, script=[
        {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[30.0, 40.0], [100.0, 80.0]], "labels": [1, 0]},
        {"op": "prompt", "frame": 0, "obj_id": 2, "box": [78.0, 18.0, 112.0, 47.0]},
        {"op": "propagate"}]),
    # One click, a refining negative click on the same frame, then a correction on a tracked
    # frame (non-conditioning, previous mask fed back), a new object mid-video, propagate again.
    "correction": dict(num_frames=9, script=[
        {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[30.0, 40.0]], "labels": [1]},
        {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[30.0, 40.0], [60.0, 20.0]], "labels": [1, 0]},
        {"op": "propagate"},
        {"op": "prompt", "frame": 4, "obj_id": 1, "points": [[46.0, 48.0]], "labels": [1]},
        {"op": "prompt", "frame": 2, "obj_id": 5, "box": [72.0, 20.0, 104.0, 48.0], "points": [[88.0, 34.0]],
         "labels": [1]},
        {"op": "propagate"}]),
    # Four conditioning frames for one object, 2 conditioning slots: the closest-frame rule
    # decides; 20 frames so the 16-pointer window and the recent-frame pruning are reached.
    "many_cond_frames": dict(num_frames=20, script=[
        {"op": "prompt", "frame": 0, "obj_id": 1, "points": [[30.0, 40.0]], "labels": [1]},
        {"op": "prompt", "frame": 3, "obj_id": 1, "points": [[42.0, 46.0]], "labels": [1]},
        {"op": "prompt", "frame": 6, "obj_id": 1, "box": [38.0, 37.0, 70.0, 67.0]},
        {"op": "prompt", "frame": 9, "obj_id": 1, "points": [[66.0, 58.0], [10.0, 10.0], [120.0, 90.0]],
         "labels": [1, 0, 0]},
        {"op": "propagate"}]),
    # A mask prompt (upstream add_new_mask) next to a box, propagated; then a mask correction on a
    # tracked frame (non-conditioning) and propagation again.
    "mask_prompt": dict(num_frames=6, script=[
        {"op": "prompt", "frame": 0, "obj_id": 1, "mask_rle": mask_rle(disc_mask(30, 40, 15))},
        {"op": "prompt", "frame": 0, "obj_id": 2, "box": [78.0, 18.0, 112.0, 47.0]},
        {"op": "propagate"},
        {"op": "prompt", "frame": 3, "obj_id": 1, "mask_rle": mask_rle(disc_mask(42, 46, 14))},
        {"op": "propagate"}]),
    # Object scores cross zero: a mask prompt (score +10, present), tracked frames where the
    # object is absent or present, a click prompt the decoder calls absent.
    "no_object": dict(num_frames=8, obj_score_bias=NO_OBJ_BIAS, script=[
        {"op": "prompt", "frame": 0, "obj_id": 1, "mask_rle": mask_rle(disc_mask(30, 40, 15))},
        {"op": "prompt", "frame": 0, "obj_id": 2, "points": [[92.0, 32.0]], "labels": [1]},
        {"op": "propagate"}]),
}


IMAGE_HW = (16, 20)  # photo height, width: not square, not the frame size, small enough for the fixture budget
IMAGE_QUERIES = [
    {"points": [[6.0, 4.5]], "labels": [1], "multimask": True},
    {"points": [[6.0, 4.5], [15.75, 11.125]], "labels": [1, 0], "multimask": False},
    {"box": [10.0, 2.0, 19.0, 10.0], "multimask": False},
    {"box": [1.0, 1.5, 12.5, 14.0], "points": [[5.0, 7.5]], "labels": [1], "multimask": True},
    {"points": [[0.0, 0.0], [20.0, 16.0], [10.0, 7.5]], "labels": [0, 0, 1], "multimask": False},
]


def image_mode_trace(model) -> dict:
    """Image mode on the tiny config: what ImagePredictor decided for each query (see TRACE.md)."""
    h, w = IMAGE_HW
    backend = RecordingBackend(EagerBackend(model, CAPS))
    backend.point_capacity = CAPS.points  # pad like an exported graph, so the trace is what a port feeds
    cfg = backend.cfg
    pred = ImagePredictor(backend)
    photo = synthetic_frame(2, IMAGE_HW)
    pred.set_image(photo)
    queries = []
    first = None
    for q in IMAGE_QUERIES:
        backend.calls.clear()
        decoder = {}

        def spy(stage, inputs, _run=backend.run):
            out = _run(stage, inputs)
            if stage == "mask_decoder":
                decoder.update(points=inputs[1], labels=inputs[2], masks=out[0], iou=out[1], obj_score=out[3])
            return out

        backend.run = spy
        r = pred.predict(q.get("points"), q.get("labels"), q.get("box"), multimask=q["multimask"])
        del backend.run
        entry = {k: q[k] for k in ("points", "labels", "box") if k in q}
        entry.update({
            "multimask": q["multimask"],
            "prompt": {"points": [float(x) for x in decoder["points"].reshape(-1)],
                       "labels": [int(x) for x in decoder["labels"].reshape(-1)],
                       "num_points": len(q.get("points", [])) + (2 if "box" in q else 0)},
            "iou": [_round(v) for v in decoder["iou"].reshape(-1)],
            "stab_counts": backend.calls[0]["stab_counts"],
            "obj_score": _round(decoder["obj_score"].reshape(-1)[0]),
            "tokens": list(r.tokens), "scores": [_round(v) for v in r.scores],
            "mask_area": [int(np.count_nonzero(m > 0)) for m in r.logits],
            "mask_sum": [_round(np.clip(m, -32, 32).astype(np.float64).sum()) for m in r.logits],
        })
        if first is None:
            first = {"decoder_masks": [_round(v, 7) for v in decoder["masks"].reshape(-1)],
                     "decoder_iou": [_round(v, 8) for v in decoder["iou"].reshape(-1)],
                     "logits": [_round(v, 7) for v in r.logits.reshape(-1)]}
        queries.append(entry)
    rng = np.random.default_rng(13)
    pre = []
    for (ph, pw), s in (((9, 13), 8), ((3, 5), 8), ((20, 7), 6)):  # down, up, mixed
        arr = rng.integers(0, 256, (ph, pw, 3), dtype=np.uint8)
        pre.append({"width": pw, "height": ph, "size": s, "rgb": arr.reshape(-1).tolist(),
                    "expect": [_round(v, 8) for v in preprocess_image(arr, s).reshape(-1)]})
    return {"format": "etam-image-trace", "version": 1, "config": cfg.name, "manifest": manifest_block(cfg),
            "image_size": [w, h], "low_res_size": cfg.low_res_size, "queries": queries, "first_query": first,
            "preprocess": pre}


def prompt_vectors(cfg) -> list:
    out = []
    cases = [
        dict(points=[[30.0, 40.0]], labels=[1], box=None, hw=(96, 128), capacity=8),
        dict(points=[[0.0, 0.0], [128.0, 96.0], [64.5, 12.25]], labels=[1, 0, 1], box=None, hw=(96, 128), capacity=8),
        dict(points=None, labels=None, box=[10.0, 20.0, 50.0, 60.0], hw=(96, 128), capacity=8),
        dict(points=[[5.0, 7.0]], labels=[0], box=[1.0, 2.0, 3.0, 4.0], hw=(480, 640), capacity=6),
        dict(points=None, labels=None, box=None, hw=(96, 128), capacity=8),  # tracking: no clicks
        dict(points=[[1.0, 1.0]] * 7, labels=[1] * 7, box=None, hw=(96, 128), capacity=8),  # exactly full
        dict(points=[[1.0, 1.0]] * 8, labels=[1] * 8, box=None, hw=(96, 128), capacity=8),  # overflow
        dict(points=[[33.3, 77.7]], labels=[1], box=None, hw=(1080, 1920), capacity=8),
    ]
    for c in cases:
        v = {"points": c["points"], "labels": c["labels"], "box": c["box"], "video_size": [c["hw"][1], c["hw"][0]],
             "image_size": cfg.image_size, "capacity": c["capacity"]}
        try:
            pts, labs, n = build_prompt(c["points"], c["labels"], c["box"], c["hw"], cfg.image_size, c["capacity"])
            v["expect"] = {"points": [float(x) for x in pts.reshape(-1)], "labels": [int(x) for x in labs.reshape(-1)],
                           "num_points": int(n)}
        except ValueError:
            v["expect"] = {"error": True}
        out.append(v)
    return out


def preprocess_vectors() -> dict:
    rng = np.random.default_rng(11)
    norm_in = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    norm = {"size": 4, "rgb": norm_in.reshape(-1).tolist(),
            "expect": [float(x) for x in preprocess_frame(norm_in, 4).numpy().reshape(-1)]}
    resize = []
    for (h, w), s in (((9, 13), 8), ((3, 5), 8), ((16, 16), 8), ((6, 20), 7)):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        res = np.asarray(Image.fromarray(arr).convert("RGB").resize((s, s)))
        resize.append({"width": w, "height": h, "size": s, "rgb": arr.reshape(-1).tolist(),
                       "expect": res.reshape(-1).tolist()})
    return {"normalize": norm, "resize_bicubic": resize}


def slot_bucket_vectors(cfg) -> list:
    """choose_slot_bucket on the default buckets (every count up to capacity and past it) and on
    unsorted / tied / non-fitting lists, so the ports agree on the order rule too."""
    K, P = CAPS.memory_slots(cfg), CAPS.ptr_slots(cfg)
    default = [list(b) for b in slot_buckets(cfg, CAPS)] + [[K, P]]
    lists = [default, [[8, 17], [2, 4], [2, 2], [4, 2], [1, 8]], [[3, 3], [3, 3], [2, 9], [9, 2]], [[2, 2]]]
    counts = [(m, p) for m in range(K + 2) for p in (0, 1, m, 9, P, P + 1)]
    out = []
    for buckets in lists:
        cases = sorted(set(counts)) if buckets is default else [(0, 0), (1, 1), (2, 2), (2, 3), (3, 2), (4, 2), (1, 9), (3, 9)]
        for m, p in cases:
            out.append({"buckets": buckets, "n_mem": m, "n_ptr": p,
                        "expect": choose_slot_bucket([tuple(b) for b in buckets], m, p)})
    return out


def decision_vectors(cfg) -> dict:
    rng = np.random.default_rng(12)
    stab = []
    for scale in (0.03, 0.2, 5.0, 0.0):
        masks = (rng.standard_normal((4, 8, 8)) * scale).astype(np.float32)
        masks[:, :2] += 1.0
        if scale == 0.0:  # a stable mask 0 (every pixel far from +-delta): dynamic rule keeps token 0
            masks[0] = np.where(np.arange(64).reshape(8, 8) % 3 == 0, 2.5, -2.5)
        iou = rng.random(4).astype(np.float32)
        entry = {"masks": [float(x) for x in masks.reshape(-1)], "side": 8, "iou": [float(x) for x in iou],
                 "stability": stability_score(masks[0], cfg.dynamic_multimask_stability_delta), "choices": []}
        for n in (0, 1, 2, 3):
            ch = choose_mask(masks, iou, n, cfg)
            entry["choices"].append({"num_points": n, "mask_index": ch.mask_index, "ptr_index": ch.ptr_index,
                                     "multimask": ch.multimask})
        stab.append(entry)
    vals = np.array([0.0, 1.0, -1.5, 3.14159265, 1.00390625, 1.01171875, 65504.0, 1e-30, -2.5e7, 0.1,
                     np.float32(1.0) + np.float32(2**-8) + np.float32(2**-20)], np.float32)
    bf16 = {"bits": [int(b) for b in vals.view(np.uint32)],
            "expect_bits": [int(b) for b in round_to_bf16(vals).view(np.uint32)]}
    low = (rng.standard_normal((2, 6, 6)) * 3).astype(np.float32)
    up = to_video_res(low, 7, 11)
    upsample = {"objects": 2, "side": 6, "height": 7, "width": 11, "low_res": [float(x) for x in low.reshape(-1)],
                "expect": [float(x) for x in up.reshape(-1)], "obj_ids": [3, 7],
                "label_map": label_map(up, [3, 7]).reshape(-1).tolist()}
    return {"stability": stab, "bf16": bf16, "upsample": upsample, "slot_buckets": slot_bucket_vectors(cfg),
            "constants": {"delta": cfg.dynamic_multimask_stability_delta,
                          "thresh": cfg.dynamic_multimask_stability_thresh,
                          "multimask_min_pt_num": cfg.multimask_min_pt_num,
                          "multimask_max_pt_num": cfg.multimask_max_pt_num}}


def sample_manifest(cfg) -> dict:
    artifacts, checksums = {}, {}
    for stage in STAGES:
        artifacts[stage] = {}
        for target in ("executorch", "coreml"):
            rel = stage + TARGET_SUFFIX[target]
            artifacts[stage][target] = rel
            checksums[rel] = hashlib.sha256(f"placeholder {rel}".encode()).hexdigest()
    buckets = _buckets(cfg, ("executorch", "coreml"))
    for b in buckets:
        for rel in b["artifacts"].values():  # (a shared program's checksum is the stage's own)
            checksums[rel] = hashlib.sha256(f"placeholder {rel}".encode()).hexdigest()
    return build_manifest(cfg, CAPS, {"synthetic_seed": SEED}, "fp16", artifacts, checksums,
                          {"etam_mobile": "fixture", "note": "sample manifest for reader tests; no artifacts exist"},
                          producers={"executorch": "1.4.1", "coremltools": "9.0"}, slot_buckets=buckets)


def generate() -> dict:
    """All fixture documents, by file name."""
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and never oversubscribes
    cfg = tiny_test_config()
    model, _ = load_model(cfg, None, seed=SEED, quiet=True)
    docs = {f"trace_{name}.json": run_case(model, name, **spec) for name, spec in CASES.items()}
    docs["image_mode.json"] = image_mode_trace(model)
    docs["vectors.json"] = {"prompts": prompt_vectors(cfg), "preprocess": preprocess_vectors(),
                            **decision_vectors(cfg)}
    docs["manifest.json"] = sample_manifest(cfg)
    docs["index.json"] = {"traces": sorted(f"trace_{n}.json" for n in CASES), "vectors": "vectors.json",
                          "manifest": "manifest.json", "image_traces": ["image_mode.json"], "generator": "scripts/make_traces.py"}
    return docs


def _fmt(x, depth: int) -> str:
    """JSON with one key per line but lists of numbers on one line (keeps the fixtures small)."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_fmt(v, depth + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        return "[\n" + ",\n".join(inner + _fmt(v, depth + 1) for v in x) + "\n" + pad + "]"
    return json.dumps(x)


def dump(doc) -> str:
    return _fmt(doc, 0) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, action="append", help="output folder (default: both app fixture folders)")
    args = ap.parse_args(argv)
    docs = generate()
    for folder in args.out or OUT_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (folder / name).write_text(dump(doc))
        total = sum((folder / n).stat().st_size for n in docs)
        print(f"wrote {len(docs)} fixtures ({total / 1024:.0f} KB) to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
