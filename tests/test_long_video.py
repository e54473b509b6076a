"""Memory stays flat on long streams: the bank keeps only what upstream's rules can reach,
frames are gone after their step (StreamTracker, no frame count).

Default suite: 2,000 frames on eager, 300 on the exported ExecuTorch graphs (same checks, memory
growth measured from frame 100); the 2,000-frame ExecuTorch stream is in the slow suite."""
import gc

import numpy as np
import pytest

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.stream import StreamTracker

NUM_FRAMES = 2000
SHORT_FRAMES = 300  # the ExecuTorch stream of the default suite: every slot bucket, a full bank


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_tiny_backend(backend_name, tiny_model):
    if backend_name == "eager":
        return EagerBackend(tiny_model)
    # the padded fixed-slot bank on the exported graphs (same tiny weights, seed 0)
    from etam_mobile.runtime.exported import open_backend
    from conftest import exported_tiny

    return open_backend(backend_name, exported_tiny())


def stream_with_flat_memory(backend, num_frames, first_sample):
    """Stream a drifting pattern with two objects; check the bank bounds every frame and the
    resident memory growth between frame `first_sample` and the last."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    tracker = StreamTracker(backend)
    tracker.add_prompt(1, points=[[60, 40]], labels=[1])
    tracker.add_prompt(2, box=[10, 10, 50, 50])
    samples = {}
    for t in range(num_frames):
        result = tracker.step(np.roll(base, t % 128, axis=1))  # a drifting pattern made on the fly
        assert result.frame_index == t and np.isfinite(result.low_res).all()
        if t in (first_sample, num_frames - 1):
            gc.collect()
            samples[t] = rss_mb()
        for cond, recent, tracked in tracker.bank_sizes().values():
            assert cond == 1 and recent <= 15 and tracked <= 2
        assert not tracker.core._feat_cache and not tracker._inputs  # nothing of the frame survives
    growth = samples[num_frames - 1] - samples[first_sample]
    assert growth < 20, f"resident memory grew {growth:.1f} MB between frame {first_sample} and {num_frames - 1}"


@pytest.mark.parametrize("backend_name", ["eager", pytest.param("executorch", marks=pytest.mark.slow)])
def test_2000_frames_resident_memory_flat(tiny_model, backend_name):
    stream_with_flat_memory(open_tiny_backend(backend_name, tiny_model), NUM_FRAMES, 300)


def test_300_frames_executorch_bank_bounded(tiny_model):
    """The default suite's ExecuTorch stream: past every slot bucket and a full bank (pointer
    window 16 frames), bank bounds and nothing of a frame kept on each of 300 frames."""
    stream_with_flat_memory(open_tiny_backend("executorch", tiny_model), SHORT_FRAMES, 100)
