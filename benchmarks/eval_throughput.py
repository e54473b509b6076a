"""`etam-mobile eval` throughput with 1 and 2 workers, local pool (and Ray), alternated in one process.

    python benchmarks/eval_throughput.py --label "idle machine" [--ray]

writes benchmarks/results/eval_throughput.{json,md} (`--json`/`--markdown` to change).
`--ray` adds the same worker counts on a local Ray instance (each Ray run pays Ray's start-up).

Every round runs the same generated DAVIS-layout dataset once per configuration (scheduler x
workers), each into a fresh results folder, the order reversed on every other round so a
shared machine's load drifts onto all configurations alike. Frames/s = tracked frames / wall
time of the whole `run_eval` call, worker start-up and backend loading included (what a user
waits for); "tracking frames/s per worker" leaves start-up out. Every worker gets `--threads`
torch threads, so 2 workers use twice the cores: the 2-vs-1 ratio is the scaling measured.
Synthetic weights: only the speed means something here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _machine(label: str) -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"label": label, "host": platform.node(), "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_1_5_15_at_start": [round(x, 2) for x in load] if load else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="test_tiny")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--size", default="128x96", help="WxH of the generated frames")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (comma-separated)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ray", action="store_true", help="also measure on a local Ray instance")
    ap.add_argument("--protocol", default="box", choices=("mask", "box", "click"))
    ap.add_argument("--label", default="unlabelled", help='describe the machine, e.g. "loaded machine" or "idle"')
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/eval_throughput.json"))
    ap.add_argument("--markdown", type=Path, default=Path("benchmarks/results/eval_throughput.md"))
    args = ap.parse_args(argv)

    from etam_mobile.eval.run import run_eval
    from etam_mobile.eval.synthetic import make_davis

    workers = [int(w) for w in args.workers.split(",")]
    schedulers = ["local"]
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("error: --ray needs the ray package; pip install 'etam-mobile[eval]'", file=sys.stderr)
            return 2
        schedulers.append("ray")
    configs = [(s, w) for s in schedulers for w in workers]
    w, h = (int(x) for x in args.size.split("x"))
    machine = _machine(args.label)
    runs = []
    with tempfile.TemporaryDirectory(prefix="etam-eval-bench-") as tmp:
        data = make_davis(Path(tmp) / "data", videos=args.videos, frames=args.frames, size=(w, h))
        n = 0
        for r in range(args.rounds):
            for sched, nw in (configs if r % 2 == 0 else configs[::-1]):
                n += 1
                out = Path(tmp) / f"out{n}"
                t0 = time.perf_counter()
                summary, missing = run_eval(data, out, ["eager"], config=args.config, protocol=args.protocol,
                                            ray=sched == "ray", workers=nw, threads=args.threads, quiet=True)
                wall = time.perf_counter() - t0
                frames = summary["run"]["throughput"]["frames"]
                row = {"round": r, "scheduler": sched, "workers": nw, "frames": frames, "wall_s": round(wall, 2),
                       "frames_per_s": round(frames / wall, 3), "missing": missing,
                       "tracking_frames_per_s_per_worker": summary["backends"]["eager"]["frames_per_second_per_worker"]}
                runs.append(row)
                print(f"[{n}/{args.rounds * len(configs)}] {sched} {nw} worker(s): {frames} frames in {wall:.1f} s "
                      f"= {frames / wall:.2f} frames/s", file=sys.stderr, flush=True)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine["load_average_1_5_15_at_end"] = [round(x, 2) for x in load_end] if load_end else None
    results = {}
    for sched, nw in configs:
        rows = [x for x in runs if x["scheduler"] == sched and x["workers"] == nw]
        results[f"{sched}-{nw}"] = {
            "scheduler": sched, "workers": nw,
            "frames_per_s_median": round(statistics.median(x["frames_per_s"] for x in rows), 3),
            "wall_s_median": round(statistics.median(x["wall_s"] for x in rows), 2),
            "tracking_frames_per_s_per_worker_median": round(
                statistics.median(x["tracking_frames_per_s_per_worker"] for x in rows), 3)}
    base = min(workers)
    for key, v in results.items():
        ref = results[f"{v['scheduler']}-{base}"]["frames_per_s_median"]
        v[f"speedup_vs_{base}_worker"] = round(v["frames_per_s_median"] / ref, 3) if ref else None
    cmd = "python benchmarks/eval_throughput.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    doc = {"command": cmd.strip(), "config": args.config, "protocol": args.protocol, "backend": "eager",
           "dataset": {"layout": "davis (generated)", "videos": args.videos, "frames": args.frames, "size": args.size},
           "threads_per_worker": args.threads, "rounds": args.rounds, "machine": machine,
           "results": results, "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"# eval throughput: {args.label}", "",
             f"`{doc['command']}`", "",
             f"{args.videos} generated DAVIS-layout videos x {args.frames} frames ({args.size}), config "
             f"`{args.config}` on synthetic weights, eager backend, protocol {args.protocol}, "
             f"{args.threads} torch thread(s) per worker, {args.rounds} alternated rounds (medians). "
             f"Machine: {machine['system']}, {machine['cpus']} CPUs, load average {machine['load_average_1_5_15_at_start']} "
             f"at start, {machine['load_average_1_5_15_at_end']} at end.", "",
             f"| scheduler | workers | frames/s (wall, incl. start-up) | speedup vs {base} worker | wall s | "
             "tracking frames/s per worker |", "|---|---|---|---|---|---|"]
    for v in results.values():
        lines.append(f"| {v['scheduler']} | {v['workers']} | {v['frames_per_s_median']:.2f} | "
                     f"{v[f'speedup_vs_{base}_worker']:.2f}x | {v['wall_s_median']:.1f} | "
                     f"{v['tracking_frames_per_s_per_worker_median']:.2f} |")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
