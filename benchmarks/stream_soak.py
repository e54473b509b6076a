"""Resident memory of a long ExecuTorch stream (StreamTracker, two objects), sampled as it runs.

    python benchmarks/stream_soak.py --config efficienttam_ti_512x512 --frames 1000 --every 50 \
        --minutes 15 --json benchmarks/results/stream_soak_ti512.json

Exports the config's synthetic weights (seed 5) to ExecuTorch fp32 in a temporary folder, streams a
drifting random 320x240 pattern (the soak test's input), and records RSS (after gc) every
`--every` frames. `--minutes` stops early on a wall-clock budget (the run says how far it got).
The pass/fail gate is tests/test_streaming.py::test_10000_frames_two_objects_executorch.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--every", type=int, default=50, help="sample RSS every N frames")
    ap.add_argument("--minutes", type=float, default=None, help="stop after this much wall-clock time")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the samples here")
    ap.add_argument("--artifacts", help="use this export folder (ExecuTorch) instead of exporting the config")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from etam_export import export_model
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.runtime.exported import open_backend
    from etam_mobile.runtime.stream import StreamTracker

    if args.threads:
        torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="etam-stream-soak-")
    samples, t_start = [], None
    try:
        folder = args.artifacts or f"{root}/exp"
        if not args.artifacts:
            model = load_model(get_config(args.config), None, seed=5, quiet=True)[0]
            export_model(model, folder, targets=("executorch",), precision="fp32",
                         weights_info={"synthetic_seed": 5}, quiet=True, verify=False)
            del model
        tr = StreamTracker(open_backend("executorch", folder))
        args.config = tr.cfg.name
        tiny = args.config.startswith("test_")
        (h, w), points, box = ((96, 128), [[60, 40]], [10, 10, 50, 50]) if tiny else \
            ((240, 320), [[100, 80]], [150, 100, 260, 200])
        base = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        tr.add_prompt(1, points=points, labels=[1])
        tr.add_prompt(2, box=box)
        t_start = time.monotonic()
        done = 0
        for t in range(args.frames):
            tr.step(np.roll(base, t % w, axis=1))
            done = t + 1
            bank = max(sum(b) for b in tr.bank_sizes().values())
            if t % args.every == 0 or done == args.frames:
                gc.collect()
                samples.append({"frame": t, "rss_mb": round(rss_mb(), 1), "bank_entries_max": bank,
                                "seconds": round(time.monotonic() - t_start, 1)})
                print(f"frame {t}: RSS {samples[-1]['rss_mb']} MB, {samples[-1]['seconds']} s", file=sys.stderr, flush=True)
            if args.minutes and time.monotonic() - t_start > 60 * args.minutes:
                break
        if samples[-1]["frame"] != done - 1:
            gc.collect()
            samples.append({"frame": done - 1, "rss_mb": round(rss_mb(), 1), "bank_entries_max": bank,
                            "seconds": round(time.monotonic() - t_start, 1)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    after300 = [s for s in samples if s["frame"] >= 300]
    summary = {"config": args.config, "backend": "executorch", "frames_done": samples[-1]["frame"] + 1,
               "frames_asked": args.frames, "samples": samples,
               "rss_growth_after_300_mb": round(after300[-1]["rss_mb"] - after300[0]["rss_mb"], 1) if after300 else None,
               "note": "loaded shared 2-core machine; seconds are not a speed measurement"}
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
