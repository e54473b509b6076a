"""`etam-mobile track --frames -`: a video the test encodes itself (PyAV) piped through stdin."""
import io
import json
import subprocess
import sys

import av
import numpy as np
from PIL import Image


def encode_video(n=12, w=128, h=96) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=10)  # lossless: the decoded frames are the drawn ones
        s.width, s.height, s.pix_fmt = w, h, "bgr0"
        base = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 3 * i, axis=1), format="rgb24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return buf.getvalue()


def run_cli(args, stdin: bytes):
    return subprocess.run([sys.executable, "-m", "etam_mobile", *args], input=stdin, capture_output=True, timeout=600)


def test_track_stdin_stream_writes_masks_as_produced(tmp_path):
    video = encode_video()
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [
        {"id": 1, "frame": 0, "points": [[60, 40]], "labels": [1]},
        {"id": 2, "frame": 3, "box": [10, 10, 50, 50]}]}))
    r = run_cli(["track", "--config", "test_tiny", "--frames", "-", "--prompts", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "out"), "--max-frames", "8"], video)
    assert r.returncode == 0, r.stderr.decode()
    assert b"fps" in r.stderr
    files = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert files == [f"{i:05d}.png" for i in range(8)]  # --max-frames stops the stream, no temp files left
    ids = [set(np.unique(np.asarray(Image.open(tmp_path / "out" / "masks" / f)))) for f in files]
    assert 2 not in set().union(*ids[:3])  # object 2 exists from its prompt frame on

    r = run_cli(["track", "--config", "test_tiny", "--frames", "-", "--prompts", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "out"), "--max-frames", "8"], video)
    assert r.returncode == 2 and r.stderr.decode().startswith("error: --out") and r.stderr.count(b"\n") == 1, r.stderr


def test_bad_streams(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [{"id": 1, "frame": 0, "points": [[6, 4]], "labels": [1]}]}))
    r = run_cli(["track", "--config", "test_tiny", "--frames", "-", "--prompts", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "o1")], b"this is not a video")
    err = r.stderr.decode().strip().splitlines()[-1]  # (after the synthetic-weights warning)
    assert r.returncode == 2 and err.startswith("error: cannot open stream -") and "PyAV" in err, err
    assert not (tmp_path / "o1").exists()
    video = encode_video(n=6)
    r = run_cli(["track", "--config", "test_tiny", "--frames", "-", "--prompts", str(tmp_path / "p.json"),
                 "--out", str(tmp_path / "o2")], video[: len(video) * 2 // 3])  # cut mid-way
    err = r.stderr.decode()
    written = len(list((tmp_path / "o2" / "masks").glob("*.png"))) if (tmp_path / "o2").exists() else 0
    if r.returncode != 0:  # a truncated container either errors (frames kept) or just ends early
        assert r.returncode == 2 and "stopped after" in err and str(written) in err, err
    assert 0 < written < 6


def expected_stream(video: bytes, prompts, n):
    """The same frames through the streaming API in this process (ffv1 is lossless)."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.runtime.backends import EagerBackend
    from etam_mobile.runtime.stream import StreamTracker

    with av.open(io.BytesIO(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:n]
    tr = StreamTracker(EagerBackend(load_model(get_config("test_tiny"), None, seed=0, quiet=True)[0]))
    out = []
    for i, rgb in enumerate(frames):
        for p in prompts:
            if p["frame"] == i:
                tr.add_prompt(p["id"], p.get("points"), p.get("labels"), p.get("box"))
        out.append(tr.step(rgb))
    return frames, out


def test_stream_save_logits_per_frame_and_bounded_overlay(tmp_path):
    """--save-logits on a stream: OUT/logits/NNNNN.npy per frame (objects in prompt-file order,
    -1024 before an object's prompt); --overlay with --max-frames: overlay.gif from frames kept on disk."""
    video = encode_video()
    prompts = [{"id": 1, "frame": 0, "points": [[60, 40]], "labels": [1]},
               {"id": 2, "frame": 3, "box": [10, 10, 50, 50]}]
    (tmp_path / "p.json").write_text(json.dumps({"prompts": prompts}))
    out = tmp_path / "out"
    r = run_cli(["track", "--config", "test_tiny", "--frames", "-", "--prompts", str(tmp_path / "p.json"),
                 "--out", str(out), "--max-frames", "8", "--save-logits", "--overlay", "--threads", "1"], video)
    assert r.returncode == 0, r.stderr.decode()
    assert b"MiB per frame" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["logits", "masks", "overlay.gif"]  # no temp files left
    assert sorted(p.name for p in (out / "logits").iterdir()) == [f"{i:05d}.npy" for i in range(8)] + ["obj_ids.npy"]
    assert np.load(out / "logits" / "obj_ids.npy").tolist() == [1, 2]
    frames, results = expected_stream(video, prompts, 8)
    for i, res in enumerate(results):
        got = np.load(out / "logits" / f"{i:05d}.npy")
        assert got.shape == (2, 96, 128) and got.dtype == np.float32
        if i < 3:
            assert np.all(got[1] == -1024.0)  # object 2 is not started yet: "no object"
        want = res.logits()
        np.testing.assert_allclose(got[: len(res.obj_ids)], want, atol=1e-4, rtol=0)
        labels = np.asarray(Image.open(out / "masks" / f"{i:05d}.png"))
        assert np.array_equal(labels, res.label_map())
    gif = Image.open(out / "overlay.gif")
    assert gif.n_frames == 8 and gif.size == (128, 96)


def test_stream_refuses_options_it_cannot_honour(tmp_path, monkeypatch, capsys):
    """Never silently ignored: --overlay without --max-frames and --trace on a stream, and
    --max-frames on a folder, are refused before any frame is read (reading stdin would fail)."""
    from etam_mobile import cli

    monkeypatch.setattr(sys, "stdin", None)
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [{"id": 1, "frame": 0, "points": [[6, 4]], "labels": [1]}]}))
    base = ["track", "--config", "test_tiny", "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]
    for extra, start in [(["--frames", "-", "--overlay"], "error: --overlay with a live source needs --max-frames"),
                         (["--frames", "-", "--trace", str(tmp_path / "t.json")], "error: --trace is not available"),
                         (["--frames", str(tmp_path), "--max-frames", "3"], "error: --max-frames applies to live")]:
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1 and "; " in err, err
        assert not (tmp_path / "o").exists() and not (tmp_path / "t.json").exists()


def test_stream_interrupted_keeps_frames_and_says_so(tmp_path, monkeypatch, capsys):
    """Ctrl-C is how a camera stream ends: the frames written stay (masks, logits, the overlay
    GIF of them) and the message says so (not "nothing was written")."""
    from etam_mobile import cli
    from etam_mobile.runtime import live

    base = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)

    def camera(spec, max_frames=None):
        for i in range(3):
            yield np.roll(base, 3 * i, axis=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(live, "iter_stream", camera)
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [{"id": 1, "frame": 0, "points": [[60, 40]], "labels": [1]}]}))
    out = tmp_path / "o"
    code = cli.main(["-q", "track", "--config", "test_tiny", "--frames", "/dev/video0", "--prompts",
                     str(tmp_path / "p.json"), "--out", str(out), "--save-logits", "--overlay", "--max-frames", "100"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 130 and err == f"interrupted (SIGINT); the 3 frames written to {out} are kept", err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert len(list((out / "logits").glob("0*.npy"))) == 3
    assert Image.open(out / "overlay.gif").n_frames == 3 and not (out / live.OVERLAY_FRAMES).exists()


def test_stream_changing_size_mid_way_is_one_line_error(tmp_path, monkeypatch, capsys):
    """A source that changes resolution mid-way: one-line error, exit 2, frames written kept."""
    from etam_mobile import cli
    from etam_mobile.runtime import live

    def camera(spec, max_frames=None):
        yield np.zeros((96, 128, 3), np.uint8)
        yield np.zeros((48, 64, 3), np.uint8)

    monkeypatch.setattr(live, "iter_stream", camera)
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [{"id": 1, "frame": 0, "points": [[60, 40]], "labels": [1]}]}))
    code = cli.main(["-q", "track", "--config", "test_tiny", "--frames", "rtsp://cam", "--prompts",
                     str(tmp_path / "p.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: frame 1 is 64x48") and "1 frames written" in err, err
    assert [p.name for p in (tmp_path / "o" / "masks").iterdir()] == ["00000.png"]
