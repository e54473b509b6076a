#!/usr/bin/env python3
"""The mask decoder as an fp16 ExecuTorch-XNNPACK program (export/half.py) against fp32.

--stage: program size, XNNPACK delegation, PSNR of every output vs the fp32 eager stage on
  the exporter's example inputs (3 seeds), and per-call time of the fp32 and fp16 programs
  alternated in one process (only the ratio means something on a shared machine).
--gemm: a plain two-linear MLP (4096 x 256 -> 2048 -> 256) as fp32 and fp16 XNNPACK programs,
  alternated: the fp16 GEMM rate of this CPU on its own (x86 without avx512fp16 has no fp16
  arithmetic; XNNPACK converts), to tell the CPU's cost from the graph's.
--plans: the chained tracking gate (the exporter's, on the gate cases) of the int8 variant with
  the mask decoder fp32 (the default plan) and fp16, each exported to --out.

    python benchmarks/mask_decoder_fp16.py --stage --config test_tiny --reps 20
    python benchmarks/mask_decoder_fp16.py --stage --config efficienttam_ti_512x512 --reps 20
    python benchmarks/mask_decoder_fp16.py --gemm --reps 20
    python benchmarks/mask_decoder_fp16.py --plans --out /tmp/mdfp16-plans
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGE = "mask_decoder"
OTHERS_INT8 = "image_encoder=int8,memory_attention=int8,memory_encoder=int8"


def load(config: str):
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config, tiny_test_config

    cfg = tiny_test_config() if config == "test_tiny" else get_config(config)
    return load_model(cfg, None, seed=0, quiet=True)


def stage_report(config: str, reps: int, threads: int, out: Path) -> dict:
    from etam_export import executorch as etx
    from etam_export import gates, half
    from etam_export.common import example_inputs, run_eager, torch_inputs
    from etam_export.artifact import torch_export
    from etam_mobile.contracts import Capacities, stage_specs

    from bench_setup import set_threads

    set_threads(threads)
    model, _ = load(config)
    caps = Capacities()
    stages = {k: v.eval() for k, v in model.stages(for_export=True).items()}
    spec = stage_specs(model.cfg, caps)[STAGE]
    names = [t.name for t in spec.outputs]
    cases = [example_inputs(model.cfg, caps, stages, seed=s)[STAGE] for s in range(3)]
    p32, p16 = out / "mask_decoder.fp32.pte", out / "mask_decoder.fp16.pte"
    info32 = etx.write(torch_export(stages[STAGE], cases[0], STAGE), p32, STAGE, "executorch", "fp32")
    info16 = half.write(stages[STAGE], cases[0], p16, STAGE)
    rep = {"config": model.cfg.name, "threads": threads,
           "mib": {"fp32": round(p32.stat().st_size / 2**20, 2), "fp16": round(p16.stat().st_size / 2**20, 2)},
           "delegation": {k: {f: i[f] for f in ("delegated_fraction", "delegated_nodes", "total_nodes",
                                                 "not_delegated_ops")} for k, i in (("fp32", info32), ("fp16", info16))},
           "layers_fp16": info16["layers"], "psnr_db": []}
    rep["size_ratio"] = round(rep["mib"]["fp16"] / rep["mib"]["fp32"], 3)
    _, prog16 = etx.load(p16)
    _, prog32 = etx.load(p32)
    rep["signature_problems"] = etx.check_signature(prog16, spec)
    m16, m32 = prog16.load_method("forward"), prog32.load_method("forward")
    for seed, arrays in enumerate(cases):
        ref = run_eager(model.stages()[STAGE].eval(), arrays)
        got = [o.numpy().copy() for o in m16.execute(list(torch_inputs(arrays)))]
        gate = gates.stage_gate(ref, got, names, "fp16")
        rep["psnr_db"].append({"seed": seed, "ok": gate["ok"], **{n: o["psnr_db"] for n, o in gate["outputs"].items()},
                               "mask_iou": gate["outputs"]["masks"]["mask_iou"],
                               "obj_score_ref_got": [float(ref[3].ravel()[0]), float(got[3].ravel()[0])]})
    rep["median_ms"] = alternate({"fp32": m32, "fp16": m16}, list(torch_inputs(cases[0])), reps)
    rep["time_ratio_fp16_over_fp32_loaded_machine"] = round(rep["median_ms"]["fp16"] / rep["median_ms"]["fp32"], 3)
    return rep


def alternate(methods: dict, args: list, reps: int) -> dict:
    """{name: median ms} of bench_setup.alternate_ms."""
    from bench_setup import alternate_ms

    return {k: round(float(np.median(v)), 2) for k, v in alternate_ms(methods, args, reps).items()}


def gemm_report(reps: int, threads: int, out: Path) -> dict:
    from bench_setup import set_threads  # first: its imports install the noise filters

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from etam_mobile.runtime.exported import load_executorch_method

    set_threads(threads)

    class Mlp(torch.nn.Module):
        def __init__(self, half: bool):
            super().__init__()
            self.half_, self.mlp = half, torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.ReLU(),
                                                             torch.nn.Linear(2048, 256))
            if half:
                self.mlp.half()

        def forward(self, x):
            return self.mlp(x.half()).float() if self.half_ else self.mlp(x)

    x = torch.randn(4096, 256)
    methods, keep = {}, {}  # keep: each method's program, which must outlive it
    for name, half in (("fp32", False), ("fp16", True)):
        path = out / f"mlp.{name}.pte"
        ep = torch.export.export(Mlp(half).eval(), (x,))
        path.write_bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
        keep[name], methods[name] = load_executorch_method(path)
    med = alternate(methods, [x], reps)
    return {"mlp": "4096 x 256 -> 2048 -> 256 (ReLU)", "threads": threads, "median_ms": med,
            "time_ratio_fp16_over_fp32_loaded_machine": round(med["fp16"] / med["fp32"], 3)}


def plans_report(out: Path, cases) -> dict:
    from etam_export import export_model
    from etam_mobile.manifest import read_manifest

    model, weights = load("test_tiny")
    rep = {}
    for label, md in (("mask_decoder fp32 (default int8 plan)", "fp32"), ("mask_decoder fp16", "fp16")):
        folder = out / f"int8-md-{md}"
        t0 = time.perf_counter()
        export_model(model, folder, targets=("executorch",), weights_info=weights, quiet=True, quantize="int8",
                     stage_precision=f"{OTHERS_INT8},mask_decoder={md}", gate_cases=cases, allow_failing_gates=True,
                     force=True)
        doc = read_manifest(folder)
        tr = doc["variant"]["tracking_gate"]
        rep[label] = {"plan": doc["variant"]["executorch_plan"], "status": doc["variant"]["status"],
                      "mask_decoder_mib": round((folder / doc["stages"][STAGE]["artifacts"]["executorch"]).stat().st_size
                                                / 2**20, 2),
                      "folder_mib": round(sum(p.stat().st_size for p in folder.glob("*.pte")) / 2**20, 2),
                      "cases": {n: {k: c.get(k) for k in ("mean_iou", "min_iou", "ok")} for n, c in tr["cases"].items()},
                      "export_s": round(time.perf_counter() - t0, 1)}
        print(label, json.dumps(rep[label]), file=sys.stderr, flush=True)
    return rep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", action="store_true")
    p.add_argument("--gemm", action="store_true")
    p.add_argument("--plans", action="store_true")
    p.add_argument("--config", default="test_tiny")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cases", default=None, help="comma-separated gate cases (default: the exporter's)")
    a = p.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="mdfp16-"))
    out.mkdir(parents=True, exist_ok=True)
    rep = {}
    if a.stage:
        rep["stage"] = stage_report(a.config, a.reps, a.threads, out)
    if a.gemm:
        rep["gemm"] = gemm_report(a.reps, a.threads, out)
    if a.plans:
        rep["plans"] = plans_report(out, tuple(a.cases.split(",")) if a.cases else None)
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
