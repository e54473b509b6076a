"""The streaming tracker: same masks as offline `track`, bad input, a 10,000-frame soak (slow)."""
import gc
import json
import os

import numpy as np
import pytest

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.frames import open_frames
from etam_mobile.runtime.pipeline import track_video
from etam_mobile.runtime.stream import StreamError, StreamTracker
from etam_mobile.runtime.tracker import PromptError

from conftest import CASE
from test_long_video import rss_mb


def test_offline_track_equals_stream_on_upstream_case(ti512_model, parity_case, tmp_path):
    """Prompts only on frame 0: `track` on the frame folder and frame-by-frame `step` agree exactly."""
    case, golden = parity_case
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": case["prompts"]}))
    track_video(EagerBackend(ti512_model), CASE / "frames", prompts, tmp_path / "out", save_logits=True, quiet=True)
    offline = np.load(tmp_path / "out" / "logits.npz")["logits"]
    frames = open_frames(CASE / "frames")
    tr = StreamTracker(EagerBackend(ti512_model))
    for p in case["prompts"]:
        tr.add_prompt(p["id"], p.get("points"), p.get("labels"), p.get("box"))
    streamed = np.stack([tr.step(frames.rgb(i)).logits() for i in range(len(frames))])
    assert np.array_equal(offline, streamed)
    ref = golden["logits"].astype(np.float32)  # and both are upstream's result
    assert all(((streamed[f] > 0) == (ref[f] > 0)).mean() > 0.999 for f in range(len(ref)))


def test_stream_bad_input(tiny_model):
    tr = StreamTracker(EagerBackend(tiny_model))
    frame = np.zeros((96, 128, 3), np.uint8)
    with pytest.raises(PromptError, match="1..255"):
        tr.add_prompt(0, points=[[1, 1]], labels=[1])
    tr.add_prompt(1, points=[[60, 40]], labels=[1])
    assert tr.step(frame).obj_ids == [1]
    with pytest.raises(StreamError, match="64x48 but the stream started at 128x96"):
        tr.step(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(StreamError, match="uint8"):
        tr.step(np.zeros((96, 128, 3), np.float32))
    with pytest.raises(PromptError, match="already at frame 1"):
        tr.add_prompt(2, points=[[5, 5]], labels=[1], frame=0)
    with pytest.raises(PromptError, match="cannot be combined"):
        tr.add_prompt(2, points=[[5, 5]], labels=[1], mask=np.ones((96, 128), bool))
    with pytest.raises(PromptError, match="frame's size"):
        tr.add_prompt(2, mask=np.ones((10, 10), bool))
    with pytest.raises(PromptError, match="outside"):
        tr.add_prompt(3, points=[[500, 5]], labels=[1])


def test_stream_new_object_and_correction_on_current_frame(tiny_model):
    """A prompt for the next frame adds an object or makes that frame a new conditioning frame."""
    tr = StreamTracker(EagerBackend(tiny_model))
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    tr.add_prompt(1, box=[10, 10, 60, 60])
    tr.step(frames[0])
    tr.step(frames[1])
    tr.add_prompt(2, points=[[90, 30]], labels=[1])
    tr.add_prompt(1, points=[[30, 30]], labels=[1])  # correction for a tracked object
    r = tr.step(frames[2])
    assert r.obj_ids == [1, 2]
    assert sorted(tr.core.objects[1].cond) == [0, 2] and sorted(tr.core.objects[2].cond) == [2]
    tr.add_prompt(2, points=[[10, 80]], labels=[1], frame=3)  # waits for its frame
    tr.step(frames[3])
    assert sorted(tr.core.objects[2].cond) == [2, 3]


# The soak's model: the tiny test config by default (10,000 frames in minutes on 2 cores);
# ETAM_SOAK_CONFIG=efficienttam_ti_512x512 runs the full-size one (~100+ min here).
SOAK_CONFIG = os.environ.get("ETAM_SOAK_CONFIG", "test_tiny")
SOAK_SHAPES = {"test_tiny": ((96, 128), [[60, 40]], [10, 10, 50, 50])}
FULL_SHAPE = ((240, 320), [[100, 80]], [150, 100, 260, 200])


@pytest.mark.slow
def test_10000_frames_two_objects_executorch():
    """Soak: 10,000 streamed frames, two objects, ExecuTorch (config: ETAM_SOAK_CONFIG):
    RSS growth < 20 MB after frame 300, bank bounds on every frame."""
    import shutil
    import tempfile

    from etam_export import export_model
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.runtime.exported import open_backend

    model = load_model(get_config(SOAK_CONFIG), None, seed=5, quiet=True)[0]
    (h, w), points, box = SOAK_SHAPES.get(SOAK_CONFIG, FULL_SHAPE)
    root = tempfile.mkdtemp(prefix="etam-soak-")
    try:
        export_model(model, f"{root}/exp", targets=("executorch",), precision="fp32",
                     weights_info={"synthetic_seed": 5}, quiet=True, verify=False)
        tr = StreamTracker(open_backend("executorch", f"{root}/exp"))
        base = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        tr.add_prompt(1, points=points, labels=[1])
        tr.add_prompt(2, box=box)
        samples = {}
        for t in range(10_000):
            result = tr.step(np.roll(base, t % w, axis=1))
            assert result.frame_index == t and result.obj_ids == [1, 2]
            if t in (300, 1_000, 5_000, 9_999):
                gc.collect()
                samples[t] = rss_mb()
            for cond, recent, tracked in tr.bank_sizes().values():
                assert cond == 1 and recent <= 15 and tracked <= 2
            assert not tr.core._feat_cache and not tr._inputs  # nothing of the frame survives
        growth = samples[9_999] - samples[300]
        print(f"{SOAK_CONFIG} ExecuTorch RSS (MB): " + ", ".join(f"frame {t}: {v:.1f}" for t, v in samples.items())
              + f"; growth after frame 300: {growth:.1f} MB")
        assert growth < 20, f"resident memory grew {growth:.1f} MB"
    finally:
        shutil.rmtree(root, ignore_errors=True)
