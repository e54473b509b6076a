"""Fuzz targets for every parser of user input, shared by the hypothesis tests (bounded, in
`make test`) and the atheris harness (coverage-guided, `make fuzz`).

The invariant each target checks: the parser returns something usable, or raises one of
the project's user-error classes with a non-empty message that the CLI prints as one line.
Any other exception escapes and is a finding. Allocation is bounded by the parsers' stated
limits (prompt file 1 MiB, manifest 16 MiB, frames 8192x8192); the atheris run enforces a
resident-memory cap on top (-rss_limit_mb in the Makefile).
"""
from __future__ import annotations

import json
import tempfile
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from etam_mobile.cli import error_line
from etam_mobile.configs import tiny_test_config
from etam_mobile.contracts import STAGES, Capacities
from etam_mobile.manifest import MANIFEST_NAME, build_manifest
from etam_mobile.runtime.exported import ArtifactError, open_backend
from etam_mobile.runtime.frames import FrameError, open_frames
from etam_mobile.runtime.ids import MAX_OBJ_ID
from etam_mobile.runtime.prompts import load_prompts, parse_prompts
from etam_mobile.runtime.tracker import PromptError


def check_user_error(exc: Exception) -> None:
    """A refused input: the message says something and prints as exactly one line."""
    line = error_line(exc)
    assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
    assert line.startswith("error: ") and "\n" not in line and "\r" not in line, repr(line)


# ---- prompt files ---------------------------------------------------------------------------------------

VALID_PROMPTS = {"prompts": [{"id": 1, "frame": 0, "points": [[96, 108], [250, 40]], "labels": [1, 0]},
                             {"id": 2, "frame": 0, "box": [220, 55, 285, 145]},
                             {"id": 1, "frame": 5, "points": [[120, 100]], "labels": [1]}]}


def check_prompt_list(prompts) -> None:
    """What the parser returns is what the tracker can take without another check failing."""
    for p in prompts:
        assert isinstance(p.obj_id, int) and 1 <= p.obj_id <= MAX_OBJ_ID
        assert isinstance(p.frame, int) and p.frame >= 0
        assert p.points is not None or p.box is not None
        if p.points is not None:
            assert len(p.points) == len(p.labels) and all(lab in (0, 1) for lab in p.labels)
            assert all(len(xy) == 2 and all(np.isfinite(xy)) for xy in p.points)
        if p.box is not None:
            assert len(p.box) == 4 and all(np.isfinite(p.box)) and p.box[0] <= p.box[2] and p.box[1] <= p.box[3]


def prompt_doc(doc) -> None:
    """An already-decoded JSON value (what json.loads can produce)."""
    try:
        prompts = parse_prompts(doc)
    except PromptError as exc:
        check_user_error(exc)
        return
    check_prompt_list(prompts)


def prompt_file(data: bytes, folder: Path | None = None) -> None:
    """Raw bytes as a prompt file on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(folder or tmp) / "prompts.json"
        path.write_bytes(data)
        try:
            prompts = load_prompts(path)
        except PromptError as exc:
            check_user_error(exc)
            return
    check_prompt_list(prompts)


# ---- manifests ------------------------------------------------------------------------------------------

def valid_manifest() -> dict:
    """A manifest as the exporter writes it (tiny config, onnx), for mutation."""
    cfg = tiny_test_config()
    artifacts = {s: {"onnx": f"{s}.onnx"} for s in STAGES}
    checksums = {f"{s}.onnx": "0" * 64 for s in STAGES}
    return build_manifest(cfg, Capacities(), {"synthetic_seed": 0}, "fp32", artifacts, checksums)


def manifest_file(data: bytes) -> None:
    """Raw bytes as OUT/manifest.json; no artifacts exist, so a folder that passes every manifest
    check is refused for the missing artifact, still before anything is loaded."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / MANIFEST_NAME).write_bytes(data)
        try:
            open_backend("onnx", tmp)
        except ArtifactError as exc:
            check_user_error(exc)
            return
    raise AssertionError("a manifest without artifacts was accepted")


def manifest_doc(doc) -> None:
    manifest_file(json.dumps(doc).encode())


# ---- frame folders --------------------------------------------------------------------------------------

def image_bytes(w: int, h: int, fmt: str = "PNG", mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def frame_folder(files: list) -> None:
    """[(file name, bytes)] as a frame folder; when accepted, every frame must read as one-size RGB."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        for name, data in files:
            (folder / name).write_bytes(data)
        try:
            frames = open_frames(folder)
        except FrameError as exc:
            check_user_error(exc)
            return
        assert len(frames) >= 1
        for i in range(len(frames)):
            rgb = frames.rgb(i)
            assert rgb.dtype == np.uint8 and rgb.shape == (frames.height, frames.width, 3), rgb.shape
