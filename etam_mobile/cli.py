"""`etam-mobile`: track, segment, export, benchmark, download, demo.

Known bad input ends in one line `error: <problem>; <fix>` and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import OneLineParser, positive_int, seed_int
from .atomic import OutputError
from .checkpoint import CheckpointError
from .configs import OFFICIAL_CONFIGS
from .signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, handle_signals

EXIT_BAD_INPUT = 2


def _user_errors():
    from .runtime.frames import FrameError
    from .runtime.tracker import PromptError

    from .eval import EvalError

    errors = [CheckpointError, FrameError, PromptError, OutputError, EvalError, FileExistsError, FileNotFoundError]
    try:
        from .runtime.exported import ArtifactError

        errors.append(ArtifactError)
    except ImportError:
        pass
    try:
        from etam_export import ExportError

        errors.append(ExportError)
    except ImportError:
        pass
    return tuple(errors)


def error_line(exc: Exception) -> str:
    """`error: <problem>; <fix>` as exactly one line, whatever the message quotes (a file name
    may hold a newline)."""
    text = str(exc).strip() or type(exc).__name__
    return "error: " + text.replace("\r", "\\r").replace("\n", "\\n")


def _config(name: str):
    from .configs import get_config

    try:
        return get_config(name)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def build_backend(args):
    """The backend a command asked for: eager from a config/checkpoint, or exported artifacts."""
    from .checkpoint import load_model
    from .runtime.backends import EagerBackend

    backend_name = getattr(args, "backend", "eager")
    if backend_name == "eager":
        if not args.config:
            raise CheckpointError("--config is required with --backend eager (e.g. --config efficienttam_ti_512x512)")
        model, _ = load_model(_config(args.config), args.checkpoint, seed=args.seed)
        return EagerBackend(model, threads=args.threads)
    from .runtime.exported import open_backend

    if not getattr(args, "artifacts", None):
        raise CheckpointError(f"--backend {backend_name} needs --artifacts EXPORT_DIR (made by `etam-mobile export`)")
    return open_backend(backend_name, args.artifacts, config=args.config, checkpoint=args.checkpoint)


def cmd_track(args) -> int:
    from .runtime.frames import FrameError
    from .runtime.live import check_live_options, check_live_out, is_live_source, track_live
    from .runtime.pipeline import check_outputs, track_video
    from .runtime.prompts import load_prompts

    if args.max_frames is not None and args.max_frames < 1:
        raise FrameError("--max-frames must be at least 1; give the number of frames to track")
    load_prompts(args.prompts)  # a bad prompt file fails before the model is loaded
    if is_live_source(args.frames):
        check_live_options(args.max_frames, args.overlay, args.trace)
        check_live_out(args.out)
        backend = build_backend(args)
        summary = track_live(backend, args.frames, args.prompts, args.out, max_frames=args.max_frames,
                             quiet=args.quiet, save_logits=args.save_logits, logits_dtype=args.logits_dtype,
                             overlay=args.overlay)
        print(f"tracked {len(summary['objects'])} object(s) over {summary['frames']} frames -> {summary['out']}")
        return 0
    if args.max_frames is not None:
        raise FrameError(f"--max-frames applies to live sources only and {args.frames} is a folder or video file; "
                         "drop --max-frames (or give a live source: a camera, a URL, or - for stdin)")
    check_outputs(args.out, args.trace, args.force)
    backend = build_backend(args)
    summary = track_video(
        backend, args.frames, args.prompts, args.out, save_logits=args.save_logits,
        overlay=args.overlay, trace=args.trace, quiet=args.quiet, force=args.force,
        logits_dtype=args.logits_dtype,
    )
    print(f"tracked {len(summary['objects'])} object(s) over {summary['frames']} frames -> {summary['out']}")
    return 0


def cmd_configs(args) -> int:
    from .configs import OFFICIAL_CONFIGS as cfgs

    for name, c in cfgs.items():
        print(f"{name:26s} ViT dim {c.embed_dim:3d}, heads {c.num_heads}, image {c.image_size}, memory cross-attention {c.cross_attn}")
    return 0


def cmd_download(args) -> int:
    from .checkpoint import download_checkpoint

    path = download_checkpoint(args.name, Path(args.dir), quiet=args.quiet)
    print(f"saved and verified {path}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quiet=args.quiet, export=not args.no_export)
    return 0


def _add_model_args(p, backend_choices=("eager", "executorch", "onnx", "coreml")):
    p.add_argument("--config", help=f"official config name: {', '.join(OFFICIAL_CONFIGS)}")
    p.add_argument("--checkpoint", help="official .pt checkpoint (default: synthetic weights, outputs meaningless)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the synthetic weights when no checkpoint is given")
    p.add_argument("--backend", default="eager", choices=backend_choices)
    p.add_argument("--artifacts", help="export folder with manifest.json (for exported backends)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")


def make_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="etam-mobile", description=__doc__.splitlines()[0])
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("track", help="track objects through a video from a prompt file")
    _add_model_args(p)
    p.add_argument("--frames", required=True, help="folder of .jpg/.png frames (numbered), a video file, or a live "
                   "source: a camera (/dev/video0), an rtsp:// or http:// URL, or - for a container on stdin")
    p.add_argument("--max-frames", type=int, default=None, help="stop a live source after N frames")
    p.add_argument("--prompts", required=True, help="PROMPTS.json (see README)")
    p.add_argument("--out", required=True, help="output folder (masks/*.png, logits.npz, overlay.gif)")
    p.add_argument("--save-logits", action="store_true",
                   help="write OUT/logits.npz at frame resolution (its size is printed before tracking); "
                   "a live source writes OUT/logits/NNNNN.npy per frame as it is tracked")
    p.add_argument("--logits-dtype", default="float32", choices=("float32", "float16"),
                   help="dtype of OUT/logits.npz; float16 halves the file (default float32)")
    p.add_argument("--overlay", action="store_true", help="write OUT/overlay.gif with coloured masks (a live source needs --max-frames)")
    p.add_argument("--trace", help="write a conformance trace JSON (see etam_mobile/runtime/TRACE.md)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier track output in --out (wholly) and an earlier --trace file")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("configs", help="list the official configs")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("download", help="download and verify an official checkpoint")
    p.add_argument("name", help="official config name, e.g. efficienttam_ti_512x512")
    p.add_argument("--dir", default="checkpoints", help="where to save it (default: ./checkpoints)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("demo", help="make the built-in clip, track it, export the demo model")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--no-export", action="store_true", help="skip exporting the demo model")
    p.set_defaults(func=cmd_demo)

    # Both ship in this package (export/ is installed as etam_export): a failing import is a bug
    # to see, not a command to hide.
    from etam_export import cli as export_cli

    from . import bench, segment
    from .bench import image as bench_image
    from .eval import cli as eval_cli

    for module in (export_cli, bench, segment, bench_image, eval_cli):
        module.register(sub, _add_model_args)
    return ap


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        with handle_signals():  # SIGTERM unwinds like Ctrl-C: partial output is removed
            return args.func(args)
    except _user_errors() as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        if getattr(exc, "kept", None):  # a live stream writes as it goes
            print(f"interrupted ({name}); {exc.kept}", file=sys.stderr)
        elif getattr(exc, "completed", False):
            print(f"interrupted ({name}) just after the output was completely written", file=sys.stderr)
        else:
            print(f"interrupted ({name}); nothing was written to the output folder", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
