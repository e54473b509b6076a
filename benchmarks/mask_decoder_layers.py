#!/usr/bin/env python3
"""Which mask-decoder layers make its int8 version miss chained tracking: the decoder quantised
(export/quantize.py) with groups of layers kept fp32 (`--mode keep`) or with only one group
quantised (`--mode only`), every other stage eager fp32, replayed on the recorded cases against
eager fp32 (the exporter's gate, export/gates.py).

By default the decoder runs as the quantised PyTorch graph (Q/DQ reference form; fast, but its
dynamic activation quantisation is per tensor); `--lowered` writes and runs the real XNNPACK
program, whose dynamic quantisation is per token (row) — ExecuTorch lowers the per-tensor
pattern to XNNPACK's per-token convert (backends/xnnpack/operators/node_visitor.py).
`--ranges` prints, per linear, how much of its input's range per-tensor int8 wastes (the
largest row's max-abs over the median row's) and the int8 round-trip error of the input,
per tensor and per row, on the inputs of the two gate cases.

    python benchmarks/mask_decoder_layers.py [--config test_tiny] [--mode keep|only] \
        [--candidates A,B] [--scheme int8|int8-4w] [--lowered] [--ranges] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

T = "decoder.transformer"
BLOCKS = (f"{T}.layers.0", f"{T}.layers.1")
GROUPS = {
    "nothing": (),
    "prompt-encoder convs": ("prompt_encoder",),
    "self-attn": tuple(f"{b}.self_attn" for b in BLOCKS),
    "cross-attn token->image": tuple(f"{b}.cross_attn_token_to_image" for b in BLOCKS),
    "cross-attn image->token": tuple(f"{b}.cross_attn_image_to_token" for b in BLOCKS),
    "transformer MLPs": tuple(f"{b}.mlp" for b in BLOCKS),
    "final attn token->image": (f"{T}.final_attn_token_to_image",),
    "block 0": (BLOCKS[0],),
    "block 1": (BLOCKS[1],),
    "transformer attention": tuple(f"{b}.{a}" for b in BLOCKS for a in (
        "self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")) + (f"{T}.final_attn_token_to_image",),
    "transformer": (T,),
    "hypernetwork MLPs": ("decoder.output_hypernetworks_mlps",),
    "IoU and object-score heads": ("decoder.iou_prediction_head", "decoder.pred_obj_score_head"),
    "object-pointer projection": ("obj_ptr_proj",),
    "everything": ("prompt_encoder", "decoder", "obj_ptr_proj"),
}


def weighted_layers(stage) -> dict:
    import torch

    return {n: m for n, m in stage.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))}


def skip_for(stage, group: tuple, mode: str) -> tuple:
    """Module prefixes to keep fp32: the group itself (keep) or every weighted layer outside it (only)."""
    if mode == "keep":
        return group
    return tuple(n for n in weighted_layers(stage) if not n.startswith(group or ("\0",)))


def fp32_mib(stage, skip: tuple) -> float:
    return sum(m.weight.numel() * 4 for n, m in weighted_layers(stage).items()
               if n.startswith(skip or ("\0",))) / 2**20


def input_ranges(stage, calls: list) -> list:
    """Per linear: max-abs of the whole input over the median row's, and int8 round-trip
    relative error of the input per tensor and per row (what XNNPACK's per-token convert does)."""
    import torch

    stats = {}

    def hook(name):
        def fn(mod, inp):
            x = inp[0].detach().reshape(-1, inp[0].shape[-1]).double()
            row = x.abs().amax(1).clamp_min(1e-12)
            t = row.max()
            q_t = torch.round(x / (t / 127)).clamp(-127, 127) * (t / 127)
            q_r = torch.round(x / (row[:, None] / 127)).clamp(-127, 127) * (row[:, None] / 127)
            rms = x.pow(2).mean().sqrt().clamp_min(1e-12)
            s = stats.setdefault(name, {"outlier_ratio": 0.0, "err_tensor": [], "err_row": [], "max_abs": 0.0})
            s["outlier_ratio"] = max(s["outlier_ratio"], float(t / row.median()))
            s["max_abs"] = max(s["max_abs"], float(t))
            s["err_tensor"].append(float((q_t - x).pow(2).mean().sqrt() / rms))
            s["err_row"].append(float((q_r - x).pow(2).mean().sqrt() / rms))
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in weighted_layers(stage).items()
               if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for args in calls:
            stage(*args)
    for h in handles:
        h.remove()
    return [{"layer": n, "outlier_ratio": round(s["outlier_ratio"], 1), "max_abs": round(s["max_abs"], 2),
             "int8_err_per_tensor": round(float(np.mean(s["err_tensor"])), 4),
             "int8_err_per_row": round(float(np.mean(s["err_row"])), 4)} for n, s in stats.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="test_tiny")
    ap.add_argument("--candidates", default=None, help="comma-separated names of GROUPS (default: all)")
    ap.add_argument("--mode", choices=("keep", "only"), default="keep",
                    help="keep: the group stays fp32, the rest is quantised; only: only the group is quantised")
    ap.add_argument("--scheme", choices=("int8", "int8-4w"), default="int8")
    ap.add_argument("--lowered", action="store_true", help="run the lowered XNNPACK program (per-token activations)")
    ap.add_argument("--ranges", action="store_true", help="activation-range report of every linear, then exit")
    ap.add_argument("--others", help="quantised export folder (same config, synthetic seed 0) whose other quantised "
                    "stages replace eager fp32: the combined chained result of a whole plan")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quantization_sensitivity import compare

    from etam_export import gates, quantize
    from etam_export.common import example_inputs
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config, tiny_test_config
    from etam_mobile.contracts import Capacities
    from etam_mobile.runtime.backends import EagerBackend

    cfg = tiny_test_config() if args.config == "test_tiny" else get_config(args.config)
    model, _ = load_model(cfg, None, seed=0, quiet=True)
    caps = Capacities()
    eager = EagerBackend(model, capacities=caps)
    cases = gates.case_dirs()
    stage = model.stages(for_export=True)["mask_decoder"].eval()
    inputs = example_inputs(cfg, caps, model.stages())["mask_decoder"]

    others = {}
    if args.others:  # the other quantised stages of a whole plan, as lowered programs
        from etam_export import executorch as etx
        from etam_mobile.manifest import read_manifest

        qdoc = read_manifest(Path(args.others))
        assert qdoc["config"] == cfg.name and qdoc["weights"].get("synthetic_seed", 0) == 0, "other weights"
        for s, prec in qdoc["variant"]["executorch_plan"].items():
            if s != "mask_decoder" and prec != "fp32":
                _, prog = etx.load(Path(args.others) / qdoc["stages"][s]["artifacts"]["executorch"])
                others[s] = prog.load_method("forward")
        print(f"other stages from {args.others}: {', '.join(others)}", flush=True)

    class Emulated:
        """Eager fp32, but the mask decoder is `fn` (padded prompts, as every exported backend)
        and the stages in `others` run their quantised programs."""

        def __init__(self, fn):
            self.fn, self.cfg, self.capacities = fn, eager.cfg, eager.capacities
            self.point_capacity, self.mask_prompt = caps.points, eager.mask_prompt

        def run(self, name, arrays):
            if name in others:
                out = others[name].execute([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
                return [o.detach().numpy().copy() for o in out]
            if name != "mask_decoder":
                return eager.run(name, arrays)
            with torch.no_grad():
                out = self.fn([torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
            return [o.detach().numpy().copy() for o in out]

    if args.ranges:
        calls = []
        with torch.inference_mode():
            rec = Emulated(lambda a: calls.append(tuple(x.clone() for x in a)) or stage(*a))
            for c in cases:
                gates.replay(c, rec)
        rows = input_ranges(stage, calls)
        for r in rows:
            print(f"{r['layer']:62s} max/median-row {r['outlier_ratio']:8.1f}  max|x| {r['max_abs']:9.2f}  "
                  f"int8 rel. err per tensor {r['int8_err_per_tensor']:.4f} per row {r['int8_err_per_row']:.4f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"config": cfg.name, "calls": len(calls), "ranges": rows}, indent=1) + "\n")
        return 0

    with torch.inference_mode():
        refs = {c.name: gates.replay(c, eager) for c in cases}
    names = args.candidates.split(",") if args.candidates else list(GROUPS)
    tmp = Path(tempfile.mkdtemp(prefix="mdq-"))
    rows = []
    for name in names:
        t0 = time.perf_counter()
        skip = skip_for(stage, GROUPS[name], args.mode)
        if args.lowered:
            from etam_mobile.runtime.exported import load_executorch_method

            path = tmp / f"md{len(rows)}.pte"
            rep = quantize.write(stage, inputs, path, "mask_decoder", args.scheme, skip_fp32=skip)
            program, method = load_executorch_method(path)
            fn, size = method.execute, path.stat().st_size
        else:
            ep, rep = quantize.quantized_program(stage, inputs, args.scheme, "mask_decoder", skip_fp32=skip)
            gm = ep.module()
            fn, size = (lambda a, gm=gm: gm(*a)), None
        backend = Emulated(fn)
        with torch.inference_mode():
            res = {c.name: compare(gates.replay(c, backend), refs[c.name]) for c in cases}
        label = f"{args.mode} {name}" + (" +others" if others else "")
        row = {"others": args.others and sorted(others), "mode": args.mode, "group": name, "scheme": args.scheme, "lowered": args.lowered, "prefixes": list(skip),
               "layers": rep["layers"], "fp32_weight_mib": round(fp32_mib(stage, skip), 3), "pte_bytes": size,
               "cases": res, "ok": all(r["ok"] for r in res.values()), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        cells = "  ".join(f"{n}: {r.get('mean_iou', 0):.4f}/{r.get('min_iou', 0):.4f}" for n, r in res.items())
        sz = f" pte {size / 2**20:.2f} MiB" if size else ""
        print(f"{label:34s} fp32 {row['fp32_weight_mib']:5.2f} MiB{sz}  {cells}  {'ok' if row['ok'] else 'MISSED'}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg.name, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
