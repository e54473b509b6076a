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
