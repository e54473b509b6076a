"""Memory-attention cost against the number of memory frames (the scaling table)."""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .common import CROSS_ATTN_VARIANTS, _log
from .flops import count_flops

# ---- memory-attention scaling -------------------------------------------------------------

def _scaling_inputs(cfg, n: int, rng) -> list:
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    tpos = np.arange(n, dtype=np.int32)[::-1] % max(cfg.num_maskmem - 1, 1)
    return [rng.standard_normal((1, C, h, h)).astype(np.float32),
            rng.standard_normal((n, M, h, h)).astype(np.float32), np.ascontiguousarray(tpos),
            np.ones((n,), np.float32), rng.standard_normal((n, C)).astype(np.float32), np.ones((n,), np.float32)]


def _time_calls(fn, min_reps: int, min_seconds: float, warmup: int = 1) -> list:
    for _ in range(warmup):
        fn()
    out, t_start = [], time.perf_counter()
    while len(out) < min_reps or (time.perf_counter() - t_start < min_seconds and len(out) < 50):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def memory_attention_scaling(cfg, backends=("eager", "executorch"), max_frames: int = 7, reps: int = 3,
                             seed: int = 0, quiet: bool = False, workdir: Path | None = None,
                             min_seconds: float = 0.3) -> dict:
    """Median ms of one memory-attention call with n = 1..max_frames memory frames (all valid,
    one object pointer per frame), for plain and both pooled cross-attentions.

    The three variants share every weight shape, so they are the same model with
    `cross_attn` replaced. Eager runs the stage module at exactly n slots; ExecuTorch runs a
    program exported at exactly n slots (a fixed-shape graph costs its slot count, valid or
    not; the tracker's graph has num_maskmem - 1 + cond_frames slots).
    """
    import torch

    from ..checkpoint import synthetic_state_dict
    from ..model import build_model

    rows = []
    rng = np.random.default_rng(seed)
    for variant in CROSS_ATTN_VARIANTS:
        vcfg = replace(cfg, cross_attn=variant)
        model = build_model(vcfg)
        model.load_state_dict(synthetic_state_dict(tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()),
                                                   seed), strict=True)
        for mod in model.modules():
            if mod is not model and callable(getattr(mod, "bake_constants", None)):
                mod.bake_constants()
        stage = model.stages()["memory_attention"].eval()
        for n in range(1, max_frames + 1):
            inputs = _scaling_inputs(vcfg, n, rng)
            tensors = [torch.from_numpy(a) for a in inputs]
            row = {"cross_attn": variant, "memory_frames": n, "gflop": round(count_flops(stage, inputs)[0] / 1e9, 4),
                   "memory_tokens": n * vcfg.feat_size**2 // (4 if variant != "plain" and n > 1 else 1) + 4 * n}
            if "eager" in backends:
                with torch.inference_mode():
                    ms = _time_calls(lambda: stage(*tensors), reps, min_seconds)
                row["eager_ms"], row["eager_min_ms"] = round(float(np.median(ms)), 3), round(float(np.min(ms)), 3)
            rows.append(row)
            _log(quiet, f"bench: memory attention {variant:11s} {n} frame(s): " + ", ".join(
                f"{b} {row[b + '_ms']:.1f} ms" if row.get(b + "_ms") is not None else f"{b} failed"
                for b in backends))
    return {"config": cfg.name, "feat_size": cfg.feat_size, "object_pointers": "one per memory frame",
            "backends": list(backends), "rows": rows}


def exported_scaling(model, folder: Path, max_slots: int, reps: int = 3, seed: int = 0, quiet: bool = False,
                     workdir: Path | None = None, min_seconds: float = 0.3) -> dict:
    """One memory-attention call with n = 1..max_slots valid memory slots (one pointer per slot),
    padded like the tracker pads them, before and after this export's changes, in one process:

    - eager: the stage on exactly the valid slots (what EagerBackend runs);
    - executorch (after): the ExecuTorch backend on the export folder, which runs the smallest
      slot-bucket graph that holds the valid slots, with the fused attention (`executorch_bucket`);
    - executorch_before: the previous program: every slot of the full graph, attention lowered
      to XNNPACK bmm-softmax-bmm (exported here with fused_attention=False).
    Calls of the three alternate, so load changes hit them alike."""
    import torch

    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export

    from ..contracts import choose_slot_bucket
    from ..runtime.backends import EagerBackend
    from ..runtime.exported import open_backend

    cfg = model.cfg
    backend = open_backend("executorch", folder, config=cfg.name)
    K, P = backend.capacities.memory_slots(cfg), backend.capacities.ptr_slots(cfg)
    eager = EagerBackend(model, backend.capacities)
    rng = np.random.default_rng(seed)
    full = _scaling_inputs(cfg, K, rng)
    full[4] = rng.standard_normal((P, cfg.d_model)).astype(np.float32)
    full[5] = np.ones((P,), np.float32)
    path = Path(tempfile.mkstemp(suffix=".pte", dir=workdir)[1])
    before = None
    try:
        ep = torch_export(model.stages(for_export=True)["memory_attention"], full, "memory_attention")
        et_export.write(ep, path, "memory_attention", "executorch", "fp32", fused_attention=False)
        _, program = et_export.load(path)
        before = program.load_method("forward")
    except Exception as exc:  # recorded, not raised: the after-numbers still stand
        before_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        path.unlink(missing_ok=True)
    export_stage = model.stages(for_export=True)["memory_attention"].eval()
    stage = model.stages()["memory_attention"].eval()
    rows = []
    for n in range(1, max_slots + 1):
        inputs = [a.copy() for a in full]
        inputs[3][n:] = 0.0
        inputs[5][:] = 0.0
        inputs[5][:n] = 1.0
        kp = backend.slot_buckets[choose_slot_bucket(backend.slot_buckets, n, n)]
        trimmed = EagerBackend._trim(EagerBackend._trim(list(inputs), 3, (1, 2, 3)), 5, (4, 5))
        cut = [inputs[0], inputs[1][:kp[0]], inputs[2][:kp[0]], inputs[3][:kp[0]], inputs[4][:kp[1]], inputs[5][:kp[1]]]
        fns = {"eager": lambda: eager.run("memory_attention", inputs),
               "executorch": lambda: backend.run("memory_attention", inputs)}
        if before is not None:
            tensors = [torch.from_numpy(a) for a in inputs]
            fns["executorch_before"] = lambda: before.execute(tensors)
        times = {k: [] for k in fns}
        for f in fns.values():
            f()  # warm-up
        t_start = time.perf_counter()
        while min(len(v) for v in times.values()) < reps or (
                time.perf_counter() - t_start < min_seconds and len(times["eager"]) < 20):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t0) * 1e3)
        row = {"valid_slots": n, "executorch_bucket": list(kp),
               "eager_gflop": round(count_flops(stage, trimmed)[0] / 1e9, 4),
               "executorch_gflop": round(count_flops(export_stage, cut)[0] / 1e9, 4),
               "executorch_before_gflop": round(count_flops(export_stage, inputs)[0] / 1e9, 4)}
        for k, v in times.items():
            row[f"{k}_ms"], row[f"{k}_min_ms"] = round(float(np.median(v)), 3), round(float(np.min(v)), 3)
        for k in ("executorch", "executorch_before"):
            if row.get(f"{k}_ms") and row.get("eager_ms"):
                row[f"{k}_vs_eager"] = round(row[f"{k}_ms"] / row["eager_ms"], 3)
        rows.append(row)
        _log(quiet, f"bench: exported memory attention, {n} valid slot(s): " + ", ".join(
            f"{k} {row[k + '_ms']:.1f} ms" for k in times))
    out = {"config": cfg.name, "object_pointers": "one per valid memory slot", "rows": rows,
           "before": "full graph, every slot computed, attention as XNNPACK bmm-softmax-bmm",
           "after": "smallest slot bucket that holds the valid slots, fused llama::custom_sdpa attention"}
    if before is None:
        out["before_error"] = before_error
    return out


def _executorch_scaling_point(row, stage, inputs, reps, workdir, min_seconds) -> None:
    """Time the ExecuTorch program of one scaling point; a failure is recorded in the row, not raised."""
    try:
        row["executorch_ms"], row["executorch_min_ms"] = _executorch_call_ms(stage, inputs, reps, workdir, min_seconds)
    except Exception as exc:
        row["executorch_ms"], row["executorch_error"] = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _executorch_call_ms(stage, inputs, reps, workdir, min_seconds) -> tuple:
    import torch

    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export
    from etam_mobile.runtime.exported import load_executorch_method

    path = Path(tempfile.mkstemp(suffix=".pte", dir=workdir)[1])
    try:
        ep = torch_export(stage, inputs, "memory_attention")
        et_export.write(ep, path, "memory_attention", "executorch", "fp32")
        program, method = load_executorch_method(path)
        tensors = [torch.from_numpy(a) for a in inputs]
        ms = _time_calls(lambda: method.execute(tensors), reps, min_seconds)
        return round(float(np.median(ms)), 3), round(float(np.min(ms)), 3)
    finally:
        path.unlink(missing_ok=True)


