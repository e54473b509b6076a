"""Memory-attention slot buckets: the memory attention exported again at the smaller slot counts
of `contracts.slot_buckets` (the runtimes run the smallest bucket that fits the bank).

Why its own module: a bucket is one more graph per target with its own inputs, guard, gates and
manifest record, and on the METHOD_TARGETS it is a method of memory_attention's program rather
than a file. The driver (exporter.py) calls `export_bucket` per bucket, `export_methods` per
method target (`quantized_methods` when the variant quantises it) and `record_buckets` last.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from etam_mobile.contracts import memory_attention_spec
from etam_mobile.manifest import TARGET_SUFFIX

from . import artifact, executorch
from .artifact import export_one, target_precision
from .common import ExportError, artifact_size, parity_summary, run_eager, wrap_error
from .coreml_gates import guard

# Targets whose memory-attention slot buckets are METHODS of the one memory_attention program
# ("forward" = the full graph, then e.g. "k7p16"), sharing one copy of the weights (executorch.
# write_methods). Other targets write one file per bucket.
METHOD_TARGETS = ("executorch",)


def bucket_method(k: int, p: int) -> str:
    """The method name of a k-memory / p-pointer slot bucket in a multi-method program."""
    return f"k{k}p{p}"


def bucket_inputs(full: list, k: int, p: int) -> list:
    """The full memory-attention example inputs cut to k memory / p pointer slots, keeping some
    padding (k - 1 memories valid when k > 1, half the pointers) so masking is exercised."""
    feats, mem, tpos, mem_valid, ptrs, ptr_valid = full
    mem_valid = np.zeros((k,), np.float32)
    mem_valid[: max(1, k - 1)] = 1.0
    ptr_valid = np.zeros((p,), np.float32)
    ptr_valid[: max(1, p // 2)] = 1.0
    return [feats, np.ascontiguousarray(mem[:k]), np.ascontiguousarray(tpos[:k]), mem_valid,
            np.ascontiguousarray(ptrs[:p]), ptr_valid]


def bucket_key(k: int, p: int) -> str:
    """Name of a slot bucket in the export report and the variant's gates."""
    return f"memory_attention.k{k}p{p}"


def bucket_cut(arrays: list, k: int, p: int):
    """Full-capacity memory-attention inputs cut to a k/p-slot bucket (valid slots come first),
    or None when more slots are valid than the bucket holds."""
    feats, mem, tpos, mem_valid, ptrs, ptr_valid = arrays
    if np.count_nonzero(mem_valid[k:]) or np.count_nonzero(ptr_valid[p:]):
        return None
    return [feats, mem[:k], tpos[:k], mem_valid[:k], ptrs[:p], ptr_valid[:p]]


def export_bucket(k, p, cfg, caps, stages, reference, examples, targets, precision, weights, verify, tmp, log,
                  coreml_modes=None, calibration=None, allow_failing=False, variant=None, programs=None):
    """One memory-attention slot bucket for every target; returns its manifest entry (+ reports).
    A target the variant quantises gets the bucket quantised as the full memory attention is
    (variants.Variant.export_stage: same scheme, kept-fp32 layers and gates; own file). For a
    target in `programs` ({target: {method: (ep, inputs, ref)}}, the METHOD_TARGETS) the bucket
    is added there as a method of memory_attention's program, written afterwards by
    export_methods; the others get their own file."""
    spec = memory_attention_spec(cfg, k, p)
    inputs = bucket_inputs(examples["memory_attention"], k, p)
    ref = run_eager(reference["memory_attention"], inputs)
    entry = {"memory_slots": k, "ptr_slots": p, "artifacts": {}, "reports": {}}
    ep = None
    own_ep = None  # the methods' own exported program (lowering for other targets may change `ep`)
    for target in targets:
        if programs and target in programs:
            quantized = variant is not None and variant.compresses("memory_attention", target)
            if not quantized:  # a quantised method is re-exported by its quantiser, not from this program
                own_ep = own_ep or artifact.torch_export(stages["memory_attention"], inputs, "memory_attention")
            programs[target][bucket_method(k, p)] = (None if quantized else own_ep, inputs, ref)
            entry["artifacts"][target] = f"memory_attention{TARGET_SUFFIX[target]}"
            entry.setdefault("methods", {})[target] = bucket_method(k, p)
            continue
        rel = f"memory_attention.k{k}p{p}{TARGET_SUFFIX[target]}"
        if variant is not None and variant.compresses("memory_attention", target):
            log(f"[bucket] memory_attention k={k} p={p}: {variant.plan['memory_attention']}")
            info, line = variant.export_stage(stages["memory_attention"], reference["memory_attention"], None,
                                              tmp / rel, spec, inputs, ref, target, verify, cfg, weights,
                                              key=bucket_key(k, p))
            log(line)
            entry["artifacts"][target] = rel
            entry["reports"][target] = info
            continue
        if ep is None:
            t0 = time.perf_counter()
            ep = artifact.torch_export(stages["memory_attention"], inputs, "memory_attention")
            log(f"[bucket] memory_attention k={k} p={p}: torch.export {time.perf_counter() - t0:.1f} s")
        mode = (coreml_modes or {}).get("memory_attention", "fp16")
        plan = None
        if target == "coreml" and precision == "fp16" and mode != "fp32":
            cal = [bucket_cut(a, k, p) for a in calibration.inputs("memory_attention")] if calibration else []
            plan = guard("memory_attention", ep, mode, inputs, None, log, [a for a in cal if a is not None])
        stage_prec = "fp32" if target == "coreml" and mode == "fp32" else target_precision(target, precision)
        info, line = export_one(target, stages["memory_attention"], ep, tmp / rel, spec, inputs, ref, cfg,
                                stage_prec, weights, verify, plan, allow_failing)
        log(line)
        entry["artifacts"][target] = rel
        entry["reports"][target] = info
    return entry


def export_methods(target, methods: dict, path: Path, spec, cfg, precision: str, verify: bool, log) -> tuple:
    """Write the memory attention and its slot buckets as methods of one program (`methods`:
    {name: (exported program, example inputs, eager outputs)}, "forward" first) and check every
    method against eager. Returns (report of the program, {method: its report})."""
    t1 = time.perf_counter()
    eps = {name: m[0] for name, m in methods.items()}
    try:
        info = executorch.write_methods(eps, path, spec.name, target, precision)
    except ExportError:
        raise
    except Exception as exc:
        raise wrap_error(exc, spec.name, target, "export") from exc
    info["export_s"] = round(time.perf_counter() - t1, 2)
    info["bytes"] = artifact_size(path)
    log(f"      {target:17s} {info['export_s']:6.1f} s {info['bytes'] / 2**20:8.2f} MiB  memory_attention with "
        f"{len(eps) - 1} slot bucket(s) as methods ({', '.join(eps)})  delegated "
        f"{100 * info['delegated_fraction']:.0f}% of nodes")
    per = {name: {"method": name, "artifact": Path(path).name, **info.get("methods", {}).get(name, {})}
           for name in eps}
    if not verify:
        return info, per
    for name, (ep, inputs, ref) in methods.items():
        mspec = spec if name == "forward" else memory_attention_spec(cfg, inputs[1].shape[0], inputs[4].shape[0])
        t2 = time.perf_counter()
        try:
            res = executorch.verify(path, mspec, target, inputs, ref, precision, method=name)
        except ExportError:
            raise
        except Exception as exc:
            raise wrap_error(exc, spec.name, target, f"verification of method {name}") from exc
        if "outputs" in res and not res["ok"]:
            bad = [k for k, v in res["outputs"].items() if not v.get("ok")]
            raise ExportError(f"parity check failed on {', '.join(bad)} of method {name} ({res['gate']}; "
                              f"{parity_summary(res)})", spec.name, target)
        rep = info if name == "forward" else per[name]
        rep["verify"], rep["verify_s"] = res, round(time.perf_counter() - t2, 2)
        if "outputs" in res:
            log(f"      {target:17s} method {name:8s} parity {parity_summary(res)}")
    return info, per


def quantized_methods(target, methods: dict, path: Path, spec, cfg, module, variant, verify: bool, log) -> tuple:
    """The quantised counterpart of export_methods: the memory attention and its slot buckets
    (`methods`: {name: (exported program, example inputs, eager outputs)}, "forward" first)
    quantised with the variant's scheme and plan and lowered ONCE as methods of one program,
    each method PSNR-gated and recorded under its own name (Variant.export_methods).
    Returns (report of the program, {method: its report}) like export_methods."""
    named = {name: (spec.name if name == "forward" else f"{spec.name}.{name}",
                    spec if name == "forward" else memory_attention_spec(cfg, inputs[1].shape[0], inputs[4].shape[0]),
                    inputs, ref)
             for name, (_, inputs, ref) in methods.items()}
    per = variant.export_methods(module, named, path, target, verify, log)
    return per["forward"], per


def record_buckets(doc: dict, variant, reports: dict) -> None:
    """Per-artifact precision records of the slot buckets (stages.memory_attention.slot_buckets[i]
    .precision): a quantised bucket's own record (scheme, layers, its PSNR gate); any other bucket
    has the full memory attention's precision, with its own parity check."""
    st = doc["stages"]["memory_attention"]
    for b in st.get("slot_buckets", []):
        key = bucket_key(b["memory_slots"], b["ptr_slots"])
        recs = {}
        for target in b["artifacts"]:
            rec = variant.artifact_record(key, target)
            if rec is None:
                full = st.get("precision", {}).get(target, {})
                rec = {"precision": full.get("precision", "fp32"), "scheme": full.get("scheme", "fp32")}
                ver = reports.get(key, {}).get(target, {}).get("verify")
                if ver and "gate" in ver:
                    rec["gates"] = [{"on": "example inputs", "gate": ver["gate"], "ok": ver["ok"]}]
            recs[target] = rec
        b["precision"] = recs
