"""The command line on a tiny config: a full run, and every kind of bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from etam_mobile.checkpoint import CheckpointError, check_layout, official_key_layout, synthetic_state_dict

from conftest import TINY, run_cli as run, write_clip, write_prompts


@pytest.fixture()
def clip(tmp_path):
    frames = write_clip(tmp_path / "frames")  # 5 frames, 64x48
    prompts = write_prompts(tmp_path / "prompts.json", [
        {"id": 3, "frame": 0, "points": [[30, 20]], "labels": [1]},
        {"id": 7, "frame": 1, "box": [5, 5, 60, 45], "points": [[50, 40]], "labels": [0]},
        {"id": 3, "frame": 3, "points": [[30, 25], [5, 5]], "labels": [1, 0]},
    ])
    return frames, prompts


def test_track_writes_masks_logits_overlay_and_trace(clip, tmp_path, capsys):
    frames, prompts = clip
    out = tmp_path / "out"
    code, err = run(capsys, "track", *TINY, "--frames", str(frames), "--prompts", str(prompts), "--out", str(out),
                    "--save-logits", "--overlay", "--trace", str(tmp_path / "trace.json"))
    assert code == 0, err
    assert "SYNTHETIC weights" in err
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    z = np.load(out / "logits.npz")
    assert z["logits"].shape == (5, 2, 48, 64) and z["obj_ids"].tolist() == [3, 7]
    masks = np.stack([np.asarray(Image.open(out / "masks" / f"{i:05d}.png")) for i in range(5)])
    assert set(np.unique(masks)) <= {0, 3, 7}
    expected = np.where(z["logits"].max(1) > 0, np.array([3, 7])[z["logits"].argmax(1)], 0)
    assert np.array_equal(masks, expected)
    assert Image.open(out / "overlay.gif").n_frames == 5
    trace = json.loads((tmp_path / "trace.json").read_text())
    kinds = [(r["kind"], r["frame"], r["obj_id"]) for r in trace["records"]]
    assert kinds[:3] == [("prompt", 0, 3), ("prompt", 1, 7), ("prompt", 3, 3)]
    # object 7 is tracked on frame 0 from its future conditioning frame's memory, like upstream
    first_track = [r for r in trace["records"] if r["kind"] == "track" and r["obj_id"] == 7][0]
    assert first_track["frame"] == 0 and first_track["selection"]["mem_frames"] == [1]
    assert first_track["selection"]["ptr_frames"] == []
    assert not list(tmp_path.glob(".out.partial-*"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config", "efficienttam_xl"], "unknown config 'efficienttam_xl'"),
        (TINY + ["--checkpoint", "/nonexistent.pt"], "does not exist"),
    ],
)
def test_bad_model_arguments(clip, tmp_path, capsys, extra, message):
    frames, prompts = clip
    code, err = run(capsys, "track", *extra, "--frames", str(frames), "--prompts", str(prompts), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_bad_checkpoint_files(clip, tmp_path, capsys):
    frames, prompts = clip
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    notckpt = tmp_path / "list.pt"
    torch.save([1, 2, 3], notckpt)
    wrong = tmp_path / "other.pt"
    torch.save({"model": {"image_encoder.trunk.pos_embed": torch.zeros(1, 197, 192)}}, wrong)
    named = tmp_path / "efficienttam_ti_1.pt"
    named.write_bytes(b"")
    for path, message in [
        (corrupt, "cannot be read as a PyTorch weights file"),
        (notckpt, "is not an EfficientTAM checkpoint"),
        (wrong, "does not fit config test_tiny"),
    ]:
        code, err = run(capsys, "track", *TINY, "--checkpoint", str(path), "--frames", str(frames),
                        "--prompts", str(prompts), "--out", str(tmp_path / "o"))
        assert code == 2 and message in err, err
    code, err = run(capsys, "track", "--config", "efficienttam_ti", "--checkpoint", str(named), "--frames",
                    str(frames), "--prompts", str(prompts), "--out", str(tmp_path / "o"))
    assert code == 2 and "official file for efficienttam_ti_1" in err and "--config efficienttam_ti_1" in err
    assert not (tmp_path / "o").exists()


def test_checkpoint_of_other_family_is_named():
    state = {k: torch.empty(s) for k, s in official_key_layout("efficienttam_s")}
    with pytest.raises(CheckpointError) as err:
        check_layout(state, official_key_layout("efficienttam_ti"), "efficienttam_ti", "checkpoint x.pt")
    msg = str(err.value)
    assert "wrong shapes" in msg and "looks like a checkpoint for efficienttam_s" in msg


def test_real_layout_checkpoint_loads_unchanged(tmp_path):
    """A file in the official layout loads strictly, and the weights arrive unchanged."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    state = synthetic_state_dict(official_key_layout("efficienttam_ti_512x512"), 11)
    path = tmp_path / "mine.pt"
    torch.save({"model": state}, path)
    model, info = load_model(get_config("efficienttam_ti_512x512"), path)
    assert len(info["checkpoint_sha256"]) == 64
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())


@pytest.mark.parametrize(
    "prompts, message",
    [
        ({"prompts": [{"id": 1, "frame": 0, "points": [[64.5, 10]], "labels": [1]}]}, "outside the 64x48 frame"),
        ({"prompts": [{"id": 1, "frame": 9, "points": [[4, 4]], "labels": [1]}]}, "only 5 frames"),
        ({"prompts": [{"id": 1, "frame": 0, "points": [[4, 4]], "labels": [5]}]}, "must be 1 (positive click) or 0"),
    ],
)
def test_bad_prompts_write_nothing(clip, tmp_path, capsys, prompts, message):
    frames, _ = clip
    p = tmp_path / "p.json"
    p.write_text(json.dumps(prompts))
    code, err = run(capsys, "track", *TINY, "--frames", str(frames), "--prompts", str(p), "--out", str(tmp_path / "o"))
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()


def test_empty_frame_folder(tmp_path, clip, capsys):
    _, prompts = clip
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "track", *TINY, "--frames", str(tmp_path / "empty"), "--prompts", str(prompts),
                    "--out", str(tmp_path / "o"))
    assert code == 2 and "no .jpg/.jpeg/.png frames" in err and not (tmp_path / "o").exists()


def test_download_fails_fast_offline(tmp_path, capsys, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, err = run(capsys, "download", "efficienttam_ti", "--dir", str(tmp_path))
    assert code == 2 and "offline" in err and not list(tmp_path.iterdir())
