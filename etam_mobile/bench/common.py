"""Shared constants and small helpers of the benchmark package."""
from __future__ import annotations

import sys

import numpy as np

SCHEMA = "etam-bench"
SCHEMA_VERSION = 1
BENCH_BACKENDS = ("eager", "executorch", "executorch-before", "onnx", "coreml")
# executorch-before: the ExecuTorch backend with the previous memory attention (full graph for
# every call, attention lowered as XNNPACK bmm-softmax-bmm), to show before / after in one run.
CROSS_ATTN_VARIANTS = ("plain", "pool_logits", "pool_keys")
# Mask logits are compared clipped to the range the tracker feeds back (upstream's clamp),
# so "no object" (-1024) frames do not swamp the PSNR.
LOGIT_CLIP = 32.0


class BenchError(ValueError):
    """Bad bench arguments; the message says how to fix them."""


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ---- statistics -------------------------------------------------------------------------

def summarize(ms: list) -> dict:
    """median / p90 / mean / min / n of a list of milliseconds (p90 by linear interpolation)."""
    if not ms:
        return {"median": None, "p90": None, "mean": None, "min": None, "n": 0}
    a = np.asarray(ms, np.float64)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3), "n": int(a.size)}

