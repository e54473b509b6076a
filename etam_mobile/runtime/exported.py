"""Exported stage backends: ExecuTorch (.pte), ONNX Runtime (.onnx), Core ML (.mlpackage).

`open_backend` reads manifest.json and checks everything it can before any frame: format
version, config and checkpoint against what the user asked for, the stage contracts, that
the backend package is installed (and macOS for Core ML), and the SHA-256 of every artifact
it will load. The backends then expose the EagerBackend interface (`cfg`, `capacities`,
`point_capacity`, `run(stage, inputs)`), so the tracker cannot tell them apart.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..configs import get_config
from ..contracts import STAGES, Capacities, choose_slot_bucket, memory_attention_spec, stage_specs
from ..manifest import artifact_precision, read_manifest

BACKENDS = ("executorch", "onnx", "coreml")
# Which manifest targets a backend can load, in order of preference.
BACKEND_TARGETS = {"executorch": ("executorch", "executorch-coreml"), "onnx": ("onnx",), "coreml": ("coreml",)}
_PACKAGE = {"executorch": ("executorch.runtime", "executorch"), "onnx": ("onnxruntime", "onnxruntime"),
            "coreml": ("coremltools", "coremltools")}
_NP_DTYPE = {"float32": np.float32, "int32": np.int32}
# Sanity bounds on a manifest's capacities (exports use 8 and 2 by default).
MAX_POINT_SLOTS = 1024
MAX_COND_SLOTS = 1024


class ArtifactError(ValueError):
    """An export folder that cannot be used as asked; the message says how to fix it."""


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_sha256(path) -> str:
    """SHA-256 of a file; of a directory (.mlpackage): SHA-256 of its `sha256sum` listing.

    The listing has one line `<sha256 hex>  <relative POSIX path>\\n` per regular file,
    sorted by the path's UTF-8 bytes — what
    `find . -type f | sed 's|^\\./||' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum`
    prints inside the directory, so any platform can re-check it.
    """
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix().encode())
    listing = "".join(f"{_file_sha256(p)}  {p.relative_to(path).as_posix()}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _check_weights(doc: dict, checkpoint, folder: Path) -> None:
    if checkpoint is None:
        return
    path = Path(checkpoint)
    if not path.is_file():
        raise ArtifactError(f"checkpoint {path} does not exist; pass the .pt the folder was exported from, or leave "
                            "--checkpoint out (the export folder already holds the weights)")
    want = doc["weights"].get("checkpoint_sha256")
    if want is None:
        seed = doc["weights"].get("synthetic_seed")
        what = f"synthetic weights (seed {seed})" if seed is not None else "unrecorded weights"
        raise ArtifactError(f"{folder} was exported with {what}, not with {path.name}; re-export with "
                            f"`etam-mobile export --checkpoint {path}` or leave --checkpoint out")
    if _file_sha256(path) != want:
        raise ArtifactError(f"{folder} was exported from a different checkpoint than {path.name} "
                            f"(SHA-256 {want[:12]}...); re-export with this checkpoint or pass the original one")


def check_platform(name: str, doc: dict, folder: Path) -> None:
    """Core ML runs only on macOS; elsewhere point to what this folder can run here."""
    if name != "coreml" or platform.system() == "Darwin":
        return
    usable = [b for b in ("executorch", "onnx") if _has_target(b, doc)]
    fix = (f"use --backend {' or '.join(usable)} here" if usable else
           f"{folder} has no ExecuTorch or ONNX artifacts: export with --targets executorch,onnx to track here")
    raise ArtifactError(f"--backend coreml needs macOS (Core ML cannot run on {platform.system()}); {fix}")


def _has_target(name: str, doc: dict) -> bool:
    stages = doc.get("stages") if isinstance(doc.get("stages"), dict) else {}
    return any(all(isinstance(stages.get(s), dict) and t in (stages[s].get("artifacts") or {}) for s in STAGES)
               for t in BACKEND_TARGETS[name])


def _import_runtime(name: str):
    module, pip = _PACKAGE[name]
    try:
        import importlib

        return importlib.import_module(module)
    except ImportError as exc:
        raise ArtifactError(f"--backend {name} needs the {pip} package ({exc}); pip install {pip}") from None


class ExportedBackend:
    """Common part: manifest checks, input validation, numpy in/out, slot-bucket choice.
    Subclasses open one artifact (`_open`) and run it (`_call`)."""

    name = "exported"

    def __init__(self, folder, doc: dict, target: str):
        self.folder, self.manifest, self.target = Path(folder), doc, target
        self.cfg = get_config(doc["config"])
        caps = doc["capacities"]
        self.capacities = Capacities(points=int(caps["points"]), cond_frames=int(caps["cond_frames"]))
        self.point_capacity = self.capacities.points
        self.specs = stage_specs(self.cfg, self.capacities)
        self.paths = {s: self.folder / doc["stages"][s]["artifacts"][target] for s in STAGES}
        # Mask-prompt constants (upstream's 4x4 mask_downsample conv); absent in older exports.
        self.mask_prompt = doc.get("mask_prompt")
        # The variant comes from the manifest (never from file names): per-stage precision records.
        try:
            self.precision = {s: artifact_precision(doc, s, target) for s in STAGES}
        except ValueError as exc:
            raise ArtifactError(f"{self.folder}: {exc}") from None
        self.variant = doc.get("variant", {}).get("name") or "/".join(sorted({r["precision"] for r in
                                                                               self.precision.values()}))
        # Memory-attention graphs by (memory_slots, ptr_slots), the full one last (manifest order).
        full = (self.capacities.memory_slots(self.cfg), self.capacities.ptr_slots(self.cfg))
        self.bucket_paths = {(b["memory_slots"], b["ptr_slots"]): self.folder / b["artifacts"][target]
                             for b in manifest_buckets(doc, target)}
        # The method of that artifact a bucket runs: format 2 names one when the buckets are methods
        # of one program (ExecuTorch: memory_attention.pte's "k7p16"); else the file's "forward".
        self.bucket_methods = {(b["memory_slots"], b["ptr_slots"]): b.get("methods", {}).get(target, "forward")
                               for b in manifest_buckets(doc, target)}
        self.slot_buckets = [*self.bucket_paths, full]
        self.bucket_specs = {kp: memory_attention_spec(self.cfg, *kp) for kp in self.bucket_paths}
        self.bucket_precision = bucket_precisions(doc, target, self.precision["memory_attention"], self.folder)
        self.bucket_calls = {kp: 0 for kp in self.slot_buckets}
        self._runners = {s: self._open(p) for s, p in self.paths.items()}
        self._runners.update({kp: self._open(p, self.bucket_methods[kp]) for kp, p in self.bucket_paths.items()})

    def _open(self, path: Path, method: str = "forward"):
        raise NotImplementedError

    def _one_method(self, path: Path, method: str) -> None:
        """Targets without multi-method programs run a file's only graph."""
        if method != "forward":
            raise ArtifactError(f"{self.folder}/manifest.json names method {method!r} of {path.name}, but {self.target} "
                                "artifacts have one graph each; re-export the folder")

    def _call(self, runner, spec, arrays: list) -> list:
        raise NotImplementedError

    def run(self, stage: str, inputs: list) -> list:
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}")
        spec = self.specs[stage]
        if len(inputs) != len(spec.inputs):
            raise ValueError(f"{stage} takes {len(spec.inputs)} inputs, got {len(inputs)}")
        arrays = []
        for t, a in zip(spec.inputs, inputs):
            a = np.ascontiguousarray(a, dtype=_NP_DTYPE[str(t.dtype).replace("torch.", "")])
            if a.shape != tuple(t.shape):
                raise ValueError(f"{stage} input {t.name} has shape {a.shape}, the export expects {tuple(t.shape)}")
            arrays.append(a)
        key = stage
        if stage == "memory_attention":
            key, arrays = self._bucket(arrays)
            spec = self.bucket_specs.get(key, spec)
        out = self._call(self._runners[key], spec, arrays)
        return [np.asarray(o, dtype=np.float32).reshape(t.shape) for o, t in zip(out, spec.outputs)]

    def _bucket(self, arrays: list):
        """The smallest memory-attention graph that holds every valid slot, and its inputs.
        Valid slots come first (memory_bank.gather); trailing slots are cut off."""
        feats, mem, tpos, mem_valid, ptrs, ptr_valid = arrays
        n_mem, n_ptr = int(np.count_nonzero(mem_valid)), int(np.count_nonzero(ptr_valid))
        kp = self.slot_buckets[choose_slot_bucket(self.slot_buckets, n_mem, n_ptr)]
        self.bucket_calls[kp] += 1
        if kp not in self.bucket_paths:
            return "memory_attention", arrays
        k, p = kp
        if np.count_nonzero(mem_valid[k:]) or np.count_nonzero(ptr_valid[p:]):
            raise ValueError("memory_attention: valid slots must come first (see memory_bank.gather)")
        return kp, [feats, mem[:k], tpos[:k], mem_valid[:k], ptrs[:p], ptr_valid[:p]]


def bucket_precisions(doc: dict, target: str, full: dict, folder) -> dict:
    """{(memory_slots, ptr_slots): precision record} of the slot buckets for `target`. A bucket
    must compute at the full memory attention's precision (the runtime swaps one for the other
    frame by frame). Manifests from before per-bucket records wrote buckets only beside fp32/fp16
    graphs at the graph's precision, so a missing record is the full graph's, unless that is
    quantised (such a folder was not written by an exporter that quantised buckets)."""
    out = {}
    for b in manifest_buckets(doc, target):
        kp, name = (b["memory_slots"], b["ptr_slots"]), f"k{b['memory_slots']}p{b['ptr_slots']}"
        recs = b.get("precision", {})
        rec = recs.get(target) if isinstance(recs, dict) else None
        if rec is None and full.get("precision") in ("fp32", "fp16"):
            rec = dict(full, derived="the full memory_attention's (no per-bucket record)")
        if not isinstance(rec, dict) or rec.get("precision") != full.get("precision"):
            got = rec.get("precision") if isinstance(rec, dict) else "not recorded"
            raise ArtifactError(f"{folder}/manifest.json: memory_attention slot bucket {name} ({target}) precision is "
                                f"{got}, the full memory_attention's is {full.get('precision')}; re-export the folder")
        out[kp] = rec
    return out


def manifest_buckets(doc: dict, target: str) -> list:
    """The manifest's memory-attention slot buckets that have an artifact for `target`
    (an older manifest has none: the full graph then runs every call)."""
    st = doc["stages"]["memory_attention"]
    return [b for b in st.get("slot_buckets", []) if target in b.get("artifacts", {})]


@contextlib.contextmanager
def without_native_lines(marker: str):
    """Drop lines containing `marker` that native code writes to stderr (fd 2) in this block.

    ExecuTorch's threadpool setup logs `[cpuinfo_utils.cpp:...]` probes of ARM-only sysfs
    files on every load: noise on every run. Other lines are passed on unchanged."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [ln for ln in sink.read().decode(errors="replace").splitlines(True) if marker not in ln]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def load_executorch_method(path, method: str = "forward") -> tuple:
    """(program, method) of a .pte loaded without ExecuTorch's cpuinfo lines, for code that times
    one program outside a backend (benchmarks). Keep the program as long as the method."""
    from executorch.runtime import Runtime

    with without_native_lines("cpuinfo_utils"):
        program = Runtime.get().load_program(str(path))
        return program, program.load_method(method)


class ExecuTorchBackend(ExportedBackend):
    name = "executorch"

    def _open(self, path: Path, method: str = "forward"):
        with without_native_lines("cpuinfo_utils"):  # ExecuTorch prints a cpuinfo line on every load
            return self._load_method(path, method)

    def _load_method(self, path: Path, method: str):
        from .torchao_noise import silence_torchao_kernel_warnings

        silence_torchao_kernel_warnings()  # executorch.runtime imports torchao
        from executorch.runtime import Runtime

        load_custom_ops()
        runtime = Runtime.get()
        # One Program per file, whatever number of its methods run (the slot buckets are methods of
        # memory_attention.pte); each runner holds its Program, which must outlive the Method: the
        # method's weights live in the program (a Method of a freed Program crashes).
        programs = self.__dict__.setdefault("_programs", {})
        program = programs.get(path)
        if program is None:
            program = programs[path] = runtime.load_program(str(path))
        if method not in program.method_names:
            raise ArtifactError(f"{path.name} has no method {method!r} (it has {', '.join(sorted(program.method_names))}), "
                                "which manifest.json names for a memory-attention slot bucket; re-export the folder")
        try:
            return program, program.load_method(method)
        except RuntimeError as exc:
            raise ArtifactError(f"{path.name} cannot be loaded by this ExecuTorch runtime ({exc}); a "
                                f"{self.target} program needs its delegate (registered: "
                                f"{', '.join(runtime.backend_registry.registered_backend_names)}) and, "
                                "for fused attention, the llama custom ops") from None

    def _call(self, runner, spec, arrays):
        import torch

        out = runner[1].execute([torch.from_numpy(a) for a in arrays])
        return [o.numpy() for o in out]


def load_custom_ops() -> None:
    """Register ExecuTorch's LLM custom-op kernels (llama::custom_sdpa, the fused attention the
    memory-attention programs may use) with the Python runtime; a no-op when already loaded."""
    import importlib

    importlib.import_module("executorch.extension.llm.custom_ops.custom_ops")


class OnnxBackend(ExportedBackend):
    name = "onnx"
    threads = 0  # ONNX Runtime's own choice

    def set_threads(self, threads: int) -> None:
        """Re-open every session with `threads` intra-op threads (benchmarks)."""
        self.threads = int(threads)
        self._runners = {key: self._open(self.paths.get(key) or self.bucket_paths[key]) for key in self._runners}

    def _open(self, path: Path, method: str = "forward"):
        import onnxruntime as ort

        self._one_method(path, method)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types (Fail, NotImplemented, InvalidGraph)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path.name} cannot be loaded by this ONNX Runtime {ort.__version__} ({reason}); "
                                "use an ONNX Runtime with every op the graph uses (a fused-attention graph needs "
                                "the contrib op com.microsoft::MultiHeadAttention of the full onnxruntime package) "
                                "or re-export it for this runtime") from None

    def _call(self, runner, spec, arrays):
        return runner.run(None, {t.name: a for t, a in zip(spec.inputs, arrays)})


class CoreMLBackend(ExportedBackend):
    name = "coreml"

    def _open(self, path: Path, method: str = "forward"):
        import coremltools as ct

        self._one_method(path, method)
        return ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)

    def _call(self, runner, spec, arrays):
        pred = runner.predict({t.name: a for t, a in zip(spec.inputs, arrays)})
        return [pred[t.name] for t in spec.outputs]


_CLASSES = {"executorch": ExecuTorchBackend, "onnx": OnnxBackend, "coreml": CoreMLBackend}


def _choose_target(name: str, doc: dict, folder: Path) -> str:
    have = [t for t in BACKEND_TARGETS[name] if all(t in doc["stages"][s].get("artifacts", {}) for s in STAGES)]
    if not have:
        exported = sorted({t for s in STAGES for t in doc["stages"].get(s, {}).get("artifacts", {})})
        raise ArtifactError(f"{folder} has no {name} artifacts for every stage (it has: {', '.join(exported) or 'none'}); "
                            f"re-export with --targets {BACKEND_TARGETS[name][0]}")
    return have[0]  # executorch-coreml programs load only where the Core ML delegate is registered


def _check_contract(doc: dict, folder: Path) -> None:
    try:
        cfg = get_config(doc["config"])
    except ValueError as exc:
        raise ArtifactError(f"{folder}: {exc}; this etam-mobile does not know the exported config") from None
    model = asdict(cfg)
    model.pop("synthetic", None)
    model["global_blocks"] = list(cfg.global_blocks)
    if doc.get("model") is not None and doc["model"] != model:
        diff = sorted(k for k in model if doc["model"].get(k) != model[k])
        raise ArtifactError(f"{folder} was exported with a different definition of {cfg.name} ({', '.join(diff)}); re-export it")
    caps = doc["capacities"]
    try:
        c = Capacities(points=int(caps["points"]), cond_frames=int(caps["cond_frames"]))
        if not (3 <= c.points <= MAX_POINT_SLOTS and 2 <= c.cond_frames <= MAX_COND_SLOTS):
            raise ValueError
    except (KeyError, TypeError, ValueError, OverflowError):
        shown = repr(caps) if len(repr(caps)) <= 80 else repr(caps)[:77] + "..."
        raise ArtifactError(f"{folder}/manifest.json has bad capacities {shown}; re-export it") from None
    if caps != c.to_dict(cfg):
        raise ArtifactError(f"{folder}/manifest.json capacities do not follow this etam-mobile's rules for "
                            f"{cfg.name} (expected {c.to_dict(cfg)}); re-export it")
    for name, spec in stage_specs(cfg, c).items():
        st = doc["stages"].get(name)
        if st is None or st.get("inputs") != spec.to_dict()["inputs"] or st.get("outputs") != spec.to_dict()["outputs"]:
            raise ArtifactError(f"{folder}: stage {name} in manifest.json does not match this etam-mobile's contract; "
                                "re-export the folder")


def _check_buckets(doc: dict, folder: Path) -> None:
    caps = doc["capacities"]
    buckets = doc["stages"]["memory_attention"].get("slot_buckets", [])
    if not isinstance(buckets, list):
        raise ArtifactError(f"{folder}/manifest.json: memory_attention.slot_buckets is not a list; re-export the folder")
    for b in buckets:
        k, p = (b.get("memory_slots"), b.get("ptr_slots")) if isinstance(b, dict) else (None, None)
        if not (isinstance(k, int) and isinstance(p, int) and 1 <= k <= caps["memory_slots"]
                and 1 <= p <= caps["ptr_slots"] and isinstance(b.get("artifacts"), dict)):
            raise ArtifactError(f"{folder}/manifest.json has a bad memory_attention slot bucket {b!r} (capacities "
                                f"{caps['memory_slots']} memory / {caps['ptr_slots']} pointer slots); re-export it")
        methods = b.get("methods", {})
        if not isinstance(methods, dict) or not all(
                isinstance(m, str) and m.isidentifier() and t in b["artifacts"] for t, m in methods.items()):
            raise ArtifactError(f"{folder}/manifest.json: memory_attention slot bucket [{k}, {p}] has bad methods "
                                f"{methods!r} (target -> method name of its artifact); re-export it")


def verify_checksums(folder: Path, doc: dict, rel_paths) -> None:
    """Every artifact exists and hashes to the manifest's SHA-256 (else: name it, say re-export)."""
    for rel in dict.fromkeys(rel_paths):  # slot buckets may share their stage's file: hash it once
        path = folder / rel
        want = doc["checksums"].get(rel)
        if want is None:
            raise ArtifactError(f"{folder}/manifest.json has no checksum for {rel}; re-export the folder")
        if not path.exists():
            raise ArtifactError(f"{path} is missing (interrupted copy?); re-export the folder")
        if artifact_sha256(path) != want:
            raise ArtifactError(f"{path} does not match its SHA-256 in manifest.json (altered or truncated); "
                                "re-export the folder")


def open_backend(name: str, folder, config: str | None = None, checkpoint=None):
    """An exported backend for `etam-mobile track --backend NAME --artifacts FOLDER`."""
    if name not in BACKENDS:
        raise ArtifactError(f"unknown exported backend {name!r}; choose {', '.join(BACKENDS)}")
    folder = Path(folder)
    try:
        doc = read_manifest(folder)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if config is not None and config != doc["config"]:
        raise ArtifactError(f"{folder} was exported for config {doc['config']}, not {config}; "
                            f"pass --config {doc['config']} (or leave it out), or re-export with --config {config}")
    _check_contract(doc, folder)
    _check_weights(doc, checkpoint, folder)
    check_platform(name, doc, folder)
    target = _choose_target(name, doc, folder)
    _import_runtime(name)
    _check_buckets(doc, folder)
    verify_checksums(folder, doc, [doc["stages"][s]["artifacts"][target] for s in STAGES]
                     + [b["artifacts"][target] for b in manifest_buckets(doc, target)])
    backend = _CLASSES[name](folder, doc, target)
    if doc.get("variant", {}).get("status") == "failing":  # written with --allow-failing-gates
        import sys

        print(f"warning: {folder} holds variant {backend.variant}, which missed its accuracy gates at export "
              f"({len(doc['variant'].get('failures', []))} failures in manifest.json variant.failures)", file=sys.stderr)
    return backend


__all__ = ["ArtifactError", "open_backend", "artifact_sha256", "verify_checksums", "BACKENDS"]
