"""Tracked-frame time of eager vs exported backends over several alternated bench runs.

    python benchmarks/frame_rounds.py --config efficienttam_ti_512x512 --artifacts DIR \
        --backends eager,executorch --rounds 6 --frames 12 --threads 2 \
        --out benchmarks/results/frame_rounds_ti512

Why: one `etam-mobile bench` run measured eager's frame at 760 ms and, minutes later on the
same idle VM, at 1018 ms (ExecuTorch moved 10 %), so a single run cannot settle a 0.8x target.
This runs the bench `--rounds` times, reversing the backend order every round (each backend
still in its own process, as the bench does), and reports every round's frame medians and
per-call stage medians, the per-round ratios to the first backend, and their median, min and max.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _round(args, order: list, out: Path) -> dict:
    cmd = [sys.executable, "-m", "etam_mobile", "bench", "--config", args.config, "--backends", ",".join(order),
           "--frames", str(args.frames), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--scaling", "none", "--artifacts", str(args.artifacts), "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    row = {}
    for r in doc["results"]:
        row[r["backend"]] = {"frame_ms": r["frame_ms"]["median"],
                             **{f"{s}_ms": v["median_ms"] for s, v in r["stages"].items()}}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--backends", default="eager,executorch", help="the first is the reference of the ratios")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    ref = backends[0]
    work = args.out.parent / (args.out.name + ".rounds")
    work.mkdir(parents=True, exist_ok=True)
    rounds = []
    for i in range(args.rounds):
        order = backends if i % 2 == 0 else backends[::-1]
        t0 = time.perf_counter()
        row = _round(args, order, work / f"round{i}.json")
        rounds.append({"order": order, **row})
        ratios = ", ".join(f"{b} {row[b]['frame_ms'] / row[ref]['frame_ms']:.3f}x" for b in backends[1:])
        print(f"round {i + 1}/{args.rounds} ({','.join(order)}, {time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{b} {row[b]['frame_ms']:.1f} ms" for b in backends) + f"; {ratios}", file=sys.stderr,
              flush=True)
    keys = [k for k in rounds[0][ref] if k.endswith("_ms")]
    summary = {}
    for b in backends[1:]:
        summary[b] = {}
        for k in keys:
            r = np.array([x[b][k] / x[ref][k] for x in rounds])
            summary[b][k] = {"median_ratio": round(float(np.median(r)), 3), "min_ratio": round(float(r.min()), 3),
                             "max_ratio": round(float(r.max()), 3)}
    doc = {"command": "python benchmarks/frame_rounds.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": args.config, "threads": args.threads,
           "frames": args.frames, "reference": ref, "rounds": rounds, "ratios_to_reference": summary}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"# Tracked frame, {args.rounds} alternated bench rounds ({args.config}, {args.threads} threads)", "",
             f"Command: `{doc['command']}`", "",
             "| round | order | " + " | ".join(f"{b} frame ms" for b in backends) + " | "
             + " | ".join(f"{b} memory_attention ms" for b in backends) + " |",
             "|---" * (2 + 2 * len(backends)) + "|"]
    for i, x in enumerate(rounds):
        lines.append(f"| {i + 1} | {','.join(x['order'])} | " + " | ".join(f"{x[b]['frame_ms']:.1f}" for b in backends)
                     + " | " + " | ".join(f"{x[b].get('memory_attention_ms', float('nan')):.1f}" for b in backends) + " |")
    lines += ["", f"Ratios to {ref} over the rounds (median [min, max] of the per-round ratios):", ""]
    for b, per in summary.items():
        for k, v in per.items():
            lines.append(f"- {b} {k[:-3]}: **{v['median_ratio']}x** [{v['min_ratio']}, {v['max_ratio']}]")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(keys) * (len(backends) - 1):]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
