"""Exported stage backends: ExecuTorch (.pte), ONNX Runtime (.onnx), Core ML (.mlpackage).

`open_backend` reads manifest.json and checks everything it can before any frame: format
version, config and checkpoint against what the user asked for, the stage contracts, that
the backend package is installed (and macOS for Core ML), and the SHA-256 of every artifact
it will load. The backends then expose the EagerBackend interface (`cfg`, `capacities`,
`point_capacity`, `run(stage, inputs)`), so the tracker cannot tell them apart.
"""
from __future__ import annotations

import hashlib
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..configs import get_config
from ..contracts import STAGES, Capacities, stage_specs
from ..manifest import read_manifest

BACKENDS = ("executorch", "onnx", "coreml")
# Which manifest targets a backend can load, in order of preference.
BACKEND_TARGETS = {"executorch": ("executorch", "executorch-coreml"), "onnx": ("onnx",), "coreml": ("coreml",)}
_PACKAGE = {"executorch": ("executorch.runtime", "executorch"), "onnx": ("onnxruntime", "onnxruntime"),
            "coreml": ("coremltools", "coremltools")}
_NP_DTYPE = {"float32": np.float32, "int32": np.int32}


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


def _import_runtime(name: str):
    module, pip = _PACKAGE[name]
    if name == "coreml" and platform.system() != "Darwin":
        raise ArtifactError(f"--backend coreml needs macOS (Core ML cannot run on {platform.system()}); "
                            "use --backend executorch or onnx here")
    try:
        import importlib

        return importlib.import_module(module)
    except ImportError as exc:
        raise ArtifactError(f"--backend {name} needs the {pip} package ({exc}); pip install {pip}") from None


class ExportedBackend:
    """Common part: manifest checks, input validation, numpy in/out. Subclasses load and run."""

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
        self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, stage: str, arrays: list) -> list:
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
        out = self._run(stage, arrays)
        return [np.asarray(o, dtype=np.float32).reshape(t.shape) for o, t in zip(out, spec.outputs)]


class ExecuTorchBackend(ExportedBackend):
    name = "executorch"

    def _load(self) -> None:
        from executorch.runtime import Runtime

        runtime = Runtime.get()
        # The Program must outlive its Method: the method's weights live in the program.
        self._programs, self._methods = {}, {}
        for stage, path in self.paths.items():
            program = self._programs[stage] = runtime.load_program(str(path))
            try:
                self._methods[stage] = program.load_method("forward")
            except RuntimeError as exc:
                raise ArtifactError(f"{path.name} cannot be loaded by this ExecuTorch runtime ({exc}); a "
                                    f"{self.target} program needs its delegate (registered: "
                                    f"{', '.join(runtime.backend_registry.registered_backend_names)})") from None

    def _run(self, stage, arrays):
        import torch

        out = self._methods[stage].execute([torch.from_numpy(a) for a in arrays])
        return [o.numpy() for o in out]


class OnnxBackend(ExportedBackend):
    name = "onnx"

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._sessions = {s: ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
                          for s, p in self.paths.items()}

    def _run(self, stage, arrays):
        names = [t.name for t in self.specs[stage].inputs]
        return self._sessions[stage].run(None, dict(zip(names, arrays)))


class CoreMLBackend(ExportedBackend):
    name = "coreml"

    def _load(self) -> None:
        import coremltools as ct

        self._models = {s: ct.models.MLModel(str(p), compute_units=ct.ComputeUnit.ALL) for s, p in self.paths.items()}

    def _run(self, stage, arrays):
        spec = self.specs[stage]
        pred = self._models[stage].predict({t.name: a for t, a in zip(spec.inputs, arrays)})
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
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{folder}/manifest.json has bad capacities {caps!r}; re-export it") from None
    if caps != c.to_dict(cfg):
        raise ArtifactError(f"{folder}/manifest.json capacities {caps} do not match this etam-mobile's rules; re-export it")
    for name, spec in stage_specs(cfg, c).items():
        st = doc["stages"].get(name)
        if st is None or st.get("inputs") != spec.to_dict()["inputs"] or st.get("outputs") != spec.to_dict()["outputs"]:
            raise ArtifactError(f"{folder}: stage {name} in manifest.json does not match this etam-mobile's contract; "
                                "re-export the folder")


def verify_checksums(folder: Path, doc: dict, rel_paths) -> None:
    """Every artifact exists and hashes to the manifest's SHA-256 (else: name it, say re-export)."""
    for rel in rel_paths:
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
    target = _choose_target(name, doc, folder)
    _import_runtime(name)
    verify_checksums(folder, doc, [doc["stages"][s]["artifacts"][target] for s in STAGES])
    return _CLASSES[name](folder, doc, target)


__all__ = ["ArtifactError", "open_backend", "artifact_sha256", "verify_checksums", "BACKENDS"]
