"""One backend's raw measurements -> its result record (per-stage stats, FLOP rates, agreement)."""
from __future__ import annotations

import math

import numpy as np

from ..contracts import STAGES
from .common import LOGIT_CLIP, summarize
from .flops import FlopTable

# ---- analysis -----------------------------------------------------------------------------

def _mask_agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """IoU of the > 0 masks (mean and worst over frames x objects) and PSNR of clipped logits."""
    r = np.clip(ref.astype(np.float64), -LOGIT_CLIP, LOGIT_CLIP)
    g = np.clip(got.astype(np.float64), -LOGIT_CLIP, LOGIT_CLIP)
    ious = []
    for a, b in zip((r > 0).reshape(-1, *r.shape[-2:]), (g > 0).reshape(-1, *g.shape[-2:])):
        union = np.logical_or(a, b).sum()
        ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    rmse = float(np.sqrt(np.mean((r - g) ** 2)))
    psnr = 200.0 if rmse == 0 else 20 * math.log10(2 * LOGIT_CLIP / rmse)
    return {"mask_iou_mean": round(float(np.mean(ious)), 5), "mask_iou_min": round(float(np.min(ious)), 5),
            "logits_psnr_db": round(min(psnr, 200.0), 2), "logits_max_abs_err": round(float(np.abs(r - g).max()), 5),
            "compared": "low-res mask logits of every tracked frame and object, clipped to +-32; "
                        "PSNR peak = 64 (the clipped range)"}


def analyse(raw: dict, flops: FlopTable, peak_gflops: float | None, sizes: dict) -> dict:
    """Turn one backend's raw measurements into the result record of the JSON."""
    tracked = [ms for ms, idx in raw["frames"][1:]]  # frame 0 is the prompted (conditioning) frame
    calls = [c for c in raw["calls"] if c["phase"] == "track"]
    stages = {}
    for stage in STAGES:
        cs = [c for c in calls if c["stage"] == stage]
        if not cs:
            continue
        fl = [flops.flops(stage, c["shapes"]) for c in cs]
        total_ms = sum(c["ms"] for c in cs)
        s = summarize([c["ms"] for c in cs])
        gflop = float(np.mean(fl)) / 1e9
        rate = sum(fl) / 1e9 / (total_ms / 1e3) if total_ms > 0 else None
        stages[stage] = {
            "median_ms": s["median"], "p90_ms": s["p90"], "mean_ms": s["mean"], "min_ms": s["min"], "calls": s["n"],
            "gflop": round(gflop, 4), "achieved_gflops": None if rate is None else round(rate, 2),
            "fraction_of_matmul_peak": None if not (rate and peak_gflops) else round(rate / peak_gflops, 4),
            "artifact_bytes": sizes.get(stage),
        }
    fm = summarize(tracked)
    return {
        "backend": raw["backend"], "target": raw["target"], "precision": "fp32",
        "frame_ms": {"median": fm["median"], "p90": fm["p90"], "mean": fm["mean"], "min": fm["min"]},
        "tracked_frames": fm["n"], "prompt_ms": raw["prompt_ms"], "load_s": raw["load_s"],
        "first_frame_ms": round(raw["frames"][0][0], 3) if raw["frames"] else None,
        "stages": stages,
        "memory": {"peak_rss_mb": raw["peak_rss_mb"], "rss_before_backend_mb": raw["rss_before_backend_mb"],
                   "rss_after_mb": raw["rss_after_mb"],
                   "note": "peak RSS of this backend's own process (python + torch + runtime + clip), "
                           "rss_before_backend_mb = the same process before the backend was loaded"},
        "torch_threads": raw["torch_threads"], "runtime_threads": raw.get("runtime_threads"),
        "artifact_bytes_total": sum(v for v in sizes.values() if v) or None,
        "slot_bucket_calls": raw.get("slot_bucket_calls"),
    }


