"""Exported backends (etam_mobile.runtime.exported) on the shared tiny export (conftest.exported_tiny):
same interface and numbers as eager, and every way an export folder can be wrong."""
from __future__ import annotations

import json
import platform
import shutil

import numpy as np
import pytest
import torch

from etam_mobile.contracts import STAGES
from etam_mobile.manifest import read_manifest
from etam_mobile.runtime.exported import ArtifactError, artifact_sha256, open_backend, verify_checksums

import etam_export  # noqa: E402,F401
from conftest import exported_tiny, tiny  # noqa: E402
from test_export import assert_fp32_close, eager_io  # noqa: E402


@pytest.fixture()
def copy(tmp_path):
    """A private copy of the shared export to break."""
    dst = tmp_path / "exp"
    shutil.copytree(exported_tiny(), dst)
    return dst


def edit_manifest(folder, **changes):
    doc = json.loads((folder / "manifest.json").read_text())
    doc.update(changes)
    (folder / "manifest.json").write_text(json.dumps(doc))
    return doc


@pytest.mark.parametrize("name", ["executorch", "onnx"])
def test_backend_interface_and_stage_parity(name):
    folder = exported_tiny()
    backend = open_backend(name, folder, config="test_tiny")
    doc = read_manifest(folder)
    assert backend.cfg.name == "test_tiny"
    assert backend.capacities.to_dict(backend.cfg) == doc["capacities"]
    assert backend.point_capacity == doc["capacities"]["points"]
    inputs, refs = eager_io(tiny()[0])
    for stage in STAGES:
        out = backend.run(stage, inputs[stage])
        assert [o.shape for o in out] == [tuple(t["shape"]) for t in doc["stages"][stage]["outputs"]]
        assert all(o.dtype == np.float32 for o in out)
        assert_fp32_close(refs[stage], out, f"{name} {stage}")
    with pytest.raises(ValueError, match="shape"):
        backend.run("image_encoder", [np.zeros((1, 3, 8, 8), np.float32)])


def test_exported_tracking_matches_eager():
    """The tracker on ExecuTorch (padded prompts, fixed slots) gives eager's masks."""
    from etam_mobile.runtime.backends import EagerBackend
    from etam_mobile.runtime.tracker import Tracker

    model, _ = tiny()
    S = model.cfg.image_size
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((1, 3, S, S)).astype(np.float32) for _ in range(4)]
    results = {}
    for name, backend in (("eager", EagerBackend(model)), ("executorch", open_backend("executorch", exported_tiny()))):
        tracker = Tracker(backend, 4, (96, 128), lambda i: frames[i])
        tracker.add_prompt(0, 1, [[40.0, 50.0], [90.0, 20.0]], [1, 0], None)
        tracker.add_prompt(1, 2, None, None, [10.0, 10.0, 70.0, 60.0])
        results[name] = np.stack([low for _, _, low in tracker.propagate()])
    ref, got = results["eager"], results["executorch"]
    assert got.shape == ref.shape
    tol = 1e-3 * max(1.0, np.abs(ref).max())
    assert np.abs(ref - got).max() <= tol
    # Masks agree wherever eager's logit is further from 0 than the allowed error.
    flipped = (ref > 0) != (got > 0)
    assert not flipped[np.abs(ref) > tol].any()


def test_coreml_backend_needs_macos_or_runs():
    folder = exported_tiny()
    if platform.system() != "Darwin":
        with pytest.raises(ArtifactError, match="needs macOS"):
            open_backend("coreml", folder)
        return
    backend = open_backend("coreml", folder)
    inputs, refs = eager_io(tiny()[0])
    out = backend.run("image_encoder", inputs["image_encoder"])
    assert out[0].shape == refs["image_encoder"][0].shape


def test_tampered_or_missing_artifact_is_refused_before_any_frame(copy):
    doc = read_manifest(copy)
    pte = copy / doc["stages"]["mask_decoder"]["artifacts"]["executorch"]
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"mask_decoder\.pte does not match its SHA-256.*re-export"):
        open_backend("executorch", copy)
    onnx_file = copy / doc["stages"]["memory_encoder"]["artifacts"]["onnx"]
    onnx_file.unlink()
    with pytest.raises(ArtifactError, match=r"memory_encoder\.onnx is missing.*re-export"):
        open_backend("onnx", copy)


def test_mlpackage_checksum_covers_every_file(copy):
    doc = read_manifest(copy)
    rel = doc["stages"]["image_encoder"]["artifacts"]["coreml"]
    verify_checksums(copy, doc, [rel])  # intact
    weights = sorted((copy / rel).rglob("weight.bin"))
    assert weights, "an ML Program package stores its weights in weight.bin"
    with open(weights[0], "r+b") as f:
        f.seek(64)
        b = f.read(1)
        f.seek(64)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ArtifactError, match=r"image_encoder\.mlpackage does not match"):
        verify_checksums(copy, doc, [rel])
    assert artifact_sha256(copy / rel) != doc["checksums"][rel]


def test_wrong_format_version_and_half_written_folder(copy, tmp_path):
    edit_manifest(copy, format_version=99)
    with pytest.raises(ArtifactError, match="format_version 99.*re-export"):
        open_backend("onnx", copy)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(exported_tiny() / "image_encoder.onnx", half)  # artifacts but no manifest
    with pytest.raises(ArtifactError, match="no manifest.json.*interrupted export"):
        open_backend("onnx", half)
    with pytest.raises(ArtifactError, match="does not exist"):
        open_backend("onnx", tmp_path / "nowhere")


def test_config_and_checkpoint_must_match(copy, tmp_path):
    with pytest.raises(ArtifactError, match="exported for config test_tiny, not efficienttam_ti_512x512"):
        open_backend("onnx", copy, config="efficienttam_ti_512x512")
    model, _ = tiny()
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    with pytest.raises(ArtifactError, match=r"synthetic weights \(seed 0\), not with tiny\.pt"):
        open_backend("onnx", copy, checkpoint=ckpt)
    from etam_mobile.checkpoint import file_sha256

    edit_manifest(copy, weights={"checkpoint_sha256": file_sha256(ckpt), "checkpoint": "tiny.pt"})
    assert open_backend("onnx", copy, checkpoint=ckpt).cfg.name == "test_tiny"  # matching checkpoint is fine
    other = tmp_path / "other.pt"
    torch.save({"model": {k: v + 1 for k, v in model.state_dict().items()}}, other)
    with pytest.raises(ArtifactError, match="different checkpoint than other.pt"):
        open_backend("onnx", copy, checkpoint=other)


def test_missing_target_package_and_unknown_backend(copy, monkeypatch):
    doc = read_manifest(copy)
    for s in STAGES:
        del doc["stages"][s]["artifacts"]["onnx"]
    edit_manifest(copy, stages=doc["stages"])
    with pytest.raises(ArtifactError, match="no onnx artifacts.*--targets onnx"):
        open_backend("onnx", copy)
    import etam_mobile.runtime.exported as exported

    monkeypatch.setitem(exported._PACKAGE, "executorch", ("no_such_runtime_pkg", "executorch"))
    with pytest.raises(ArtifactError, match="needs the executorch package.*pip install executorch"):
        open_backend("executorch", copy)
    with pytest.raises(ArtifactError, match="unknown exported backend 'tflite'"):
        open_backend("tflite", copy)


def test_contract_drift_is_refused(copy):
    doc = read_manifest(copy)
    doc["stages"]["memory_attention"]["inputs"][1]["shape"][0] += 1
    edit_manifest(copy, stages=doc["stages"])
    with pytest.raises(ArtifactError, match="stage memory_attention.*does not match.*contract"):
        open_backend("executorch", copy)


def test_cli_tracks_with_exported_backend(tmp_path, capsys):
    from PIL import Image

    from etam_mobile.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(frames / f"{i:05d}.png")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [{"id": 1, "frame": 0, "points": [[20, 20]], "labels": [1]}]}))
    args = ["-q", "track", "--backend", "onnx", "--artifacts", str(exported_tiny()), "--frames", str(frames),
            "--prompts", str(prompts), "--out", str(tmp_path / "out")]
    assert main(args) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "out" / "masks").iterdir())) == 3
    assert main(args[:-1] + [str(tmp_path / "out2"), "--config", "efficienttam_s"]) == 2
    assert "not efficienttam_s" in capsys.readouterr().err
