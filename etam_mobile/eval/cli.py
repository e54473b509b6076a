"""The `etam-mobile eval` sub-command (registered by etam_mobile.cli)."""
from __future__ import annotations

import sys


def cmd_eval(args) -> int:
    from .run import run_eval

    if args.workers is not None and args.workers < 1:
        from . import EvalError

        raise EvalError(f"--workers {args.workers} must be at least 1")
    summary, missing = run_eval(
        args.dataset, args.out, [b.strip() for b in args.backends.split(",") if b.strip()], args.artifacts,
        config=args.config, checkpoint=args.checkpoint, seed=args.seed, split=args.split, protocol=args.protocol,
        reference=args.reference, ray=args.ray is not None, ray_address=args.ray or None, workers=args.workers,
        threads=args.threads, markdown_path=args.markdown, plot_path=args.plot, force=args.force, quiet=args.quiet,
    )
    for label, b in summary["backends"].items():
        jf = "–" if b["J&F"] is None else f"{100 * b['J&F']:.1f}"
        vs = b["vs_reference"]["J&F"]
        print(f"{label:24s} J&F {jf:>5}  vs {summary['reference']}: "
              f"{'–' if vs is None else f'{100 * vs:.1f}'}  min IoU {b['vs_reference']['min_iou']}")
    print(f"summary -> {args.out}/summary.json")
    if missing:
        for label, m in summary["missing"].items():
            for name, why in m.items():
                print(f"missing: {label}/{name}: {why}", file=sys.stderr)
        print(f"error: {missing} video result(s) missing (listed above and in summary.json); "
              "rerun the same command to retry only them", file=sys.stderr)
        return 1
    return 0


def register(sub, add_model_args=None) -> None:
    p = sub.add_parser("eval", help="J&F of backends on a DAVIS / SA-V-layout dataset (local processes or Ray)")
    p.add_argument("--config", help="official config name (default: the config of the first --artifacts folder)")
    p.add_argument("--checkpoint", help="official .pt checkpoint (default: synthetic weights, J&F vs GT meaningless)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights when no checkpoint is given")
    p.add_argument("--dataset", required=True, help="DAVIS (JPEGImages/480p, Annotations/480p) or SA-V "
                   "(JPEGImages_24fps, Annotations_6fps) folder")
    p.add_argument("--split", help="text file of video names, one per line (default: every annotated video)")
    p.add_argument("--backends", default="eager", help="comma-separated: eager,executorch,onnx,coreml")
    p.add_argument("--artifacts", nargs="+", default=[], metavar="EXPORT_DIR",
                   help="export folder(s); several folders = several variants, labelled BACKEND-FOLDERNAME")
    p.add_argument("--protocol", default="mask", choices=("mask", "box", "click"),
                   help="prompt from each object's first mask: the mask, its box, or its deepest interior point")
    p.add_argument("--reference", default="eager", help="backend label every other one is compared with (default eager)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: no value starts a local Ray, ADDRESS joins a cluster")
    p.add_argument("--workers", type=int, default=None, help="worker processes / Ray actors (default: CPU count)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: CPUs / workers)")
    p.add_argument("--out", required=True, help="RESULTS_DIR: <backend>/<video>/*.png, metrics, summary.json")
    p.add_argument("--markdown", help="write the Markdown report here")
    p.add_argument("--plot", help="write the per-video J&F plot (PNG) here")
    p.add_argument("--force", action="store_true", help="replace results of a different evaluation in --out")
    p.set_defaults(func=cmd_eval)
