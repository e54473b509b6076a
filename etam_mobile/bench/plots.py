"""The PNG figure of a benchmark document (matplotlib, optional)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contracts import STAGES
from .common import CROSS_ATTN_VARIANTS


def plot(doc: dict, path: Path) -> bool:
    """Per-stage bars per backend and the memory-attention scaling curves; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sc = doc.get("memory_attention_scaling")
    fig, axes = plt.subplots(1, 2 if sc else 1, figsize=(12 if sc else 6, 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    names = [r.get("label", r["backend"]) for r in doc["results"]]
    bottom = np.zeros(len(names))
    for s in STAGES:
        calls_per_frame = 1 if s == "image_encoder" else doc["clip"]["objects"]
        vals = np.array([(r["stages"].get(s, {}).get("median_ms") or 0) * calls_per_frame for r in doc["results"]])
        ax.bar(names, vals, bottom=bottom, label=s)
        bottom += vals
    ax.plot(names, [r["frame_ms"]["median"] for r in doc["results"]], "k_", markersize=30, label="frame median")
    ax.set_ylabel("ms per tracked frame")
    ax.set_title(f"{doc['config']}: stage medians x calls per frame")
    ax.legend(fontsize=8)
    if sc:
        ax = axes[1]
        for v, color in zip(CROSS_ATTN_VARIANTS, ("C0", "C1", "C2")):
            rows = sorted((r for r in sc["rows"] if r["cross_attn"] == v), key=lambda r: r["memory_frames"])
            for b, style in zip(sc["backends"], ("-o", "--s")):
                ys = [r.get(f"{b}_ms") for r in rows]
                if any(y is not None for y in ys):
                    ax.plot([r["memory_frames"] for r in rows], ys, style, color=color, label=f"{v} ({b})")
        ax.set_xlabel("memory frames")
        ax.set_ylabel("ms per memory-attention call")
        ax.set_title(f"memory attention, {sc['config']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


