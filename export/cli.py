"""`etam-mobile export`: the exporter on the command line (registered by etam_mobile.cli)."""
from __future__ import annotations

from pathlib import Path

from etam_mobile.argtypes import positive_int
from etam_mobile.contracts import Capacities
from etam_mobile.manifest import TARGETS

from .common import ExportError
from .exporter import PRECISIONS, parse_targets

DEFAULT_TARGETS = "executorch,coreml,onnx"


def cmd_export(args) -> int:
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    from .exporter import check_coreml_plan, check_destination, check_precision, export_model
    from .variants import Variant

    # Everything the user typed is checked before the model is built.
    if not args.config:
        raise ExportError("--config is required (e.g. --config efficienttam_ti_512x512; `etam-mobile configs` lists them)")
    if args.targets is None:  # a quantised variant is an ExecuTorch folder unless told otherwise
        args.targets = ("coreml" if args.compress not in (None, "fp16") else
                        DEFAULT_TARGETS if args.quantize in (None, "none") else "executorch")
    targets = parse_targets(args.targets)
    precision = check_precision(args.precision)
    if args.max_points < 3:
        raise ExportError(f"--max-points must be at least 3 (a box is 2 points, plus upstream's not-a-point token), "
                          f"got {args.max_points}; the default {Capacities().points} takes 7 clicks or a box and 5")
    if args.cond_frames < 2:
        raise ExportError("--cond-frames must be at least 2 (the closest-frame rule keeps 2 conditioning frames)")
    check_destination(Path(args.out), args.force)
    try:
        cfg = get_config(args.config)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    variant_args = dict(quantize=args.quantize, stage_precision=args.stage_precision, calibration=args.calibration,
                        allow_failing_gates=args.allow_failing_gates, compress=args.compress)
    Variant.create(targets, args.quantize, args.stage_precision, args.calibration, args.allow_failing_gates, None,
                   args.compress)
    check_coreml_plan(targets, args.stage_precision, precision)
    model, weights = load_model(cfg, args.checkpoint, seed=args.seed, quiet=args.quiet)
    caps = Capacities(points=args.max_points, cond_frames=args.cond_frames)
    doc = export_model(model, args.out, targets=targets, precision=precision, capacities=caps, weights_info=weights,
                       quiet=args.quiet, force=args.force, verify=not args.no_verify, **variant_args)
    n = sum(len(s["artifacts"]) for s in doc["stages"].values())
    status = doc.get("variant", {}).get("status")
    what = doc.get("variant", {}).get("name", precision)
    print(f"exported {n} artifacts of {cfg.name} ({', '.join(targets)}; {what}"
          f"{'; gates ' + status if status and status != 'not gated' else ''}) -> {args.out}")
    return 0


def register(sub, add_model_args) -> None:
    """Add the `export` sub-command (called by etam_mobile.cli.make_parser)."""
    p = sub.add_parser("export", help="export every stage to ExecuTorch / Core ML / ONNX with a manifest")
    add_model_args(p)
    p.add_argument("--targets", default=None,
                   help=f"comma-separated, from {', '.join(TARGETS)} (default: {DEFAULT_TARGETS}; executorch with "
                        "--quantize)")
    p.add_argument("--precision", default="fp16",
                   help=f"{' or '.join(PRECISIONS)}: compute precision of the Core ML targets (fp16: all ops "
                        "fp16 except those the overflow guard measures at risk on the calibration frames); "
                        "ExecuTorch-XNNPACK and ONNX are fp32 (default: fp16)")
    caps = Capacities()
    p.add_argument("--max-points", type=positive_int, default=caps.points,
                   help=f"prompt-point slots per decoder call (default {caps.points})")
    p.add_argument("--cond-frames", type=positive_int, default=caps.cond_frames,
                   help=f"conditioning-frame memory slots (default {caps.cond_frames})")
    p.add_argument("--out", required=True, help="export folder to create (manifest.json + one artifact per stage/target)")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quantize", default="none",
                   help="ExecuTorch-XNNPACK variant: int8 (dynamic int8 activations, per-channel int8 weights), "
                        "int8-4w (4-bit group-wise linear weights) or none (default: none)")
    p.add_argument("--compress", default="fp16",
                   help="Core ML variant: fp16 (default), int8 (int8 weights), palettize6 / palettize4 (k-means "
                        "palettes per 16 channels, iOS 18), w8a8 (int8 activations: refused, README says why)")
    p.add_argument("--stage-precision", default=None, metavar="STAGE=PREC,...",
                   help="per-stage override of the variant's plan, e.g. image_encoder=int8,memory_attention=fp32; "
                        "ExecuTorch: fp32, int8, int8-4w, fp16 (fp16 weights and compute, fp32 inputs/outputs; "
                        "for ExecuTorch when coreml is not exported); "
                        "Core ML plans: fp16 (guarded, default), fp16-islands (layer norms, softmax, norm "
                        "statistics and adds in fp32: the fallback), fp16-unguarded, fp32")
    p.add_argument("--calibration", default=None, metavar="FRAMES_DIR",
                   help="frames (one size) for calibration, the fp16 overflow guard and the real-frame gates "
                        "(default: the built-in clip)")
    p.add_argument("--allow-failing-gates", action="store_true",
                   help="write a variant that misses an accuracy gate, marked failing in the manifest")
    p.add_argument("--no-verify", action="store_true", help="skip reading artifacts back and comparing with eager")
    p.set_defaults(func=cmd_export)
