"""Memory stays flat on long streams: the bank keeps only what upstream's rules can reach,
frames are gone after their step (StreamTracker, no frame count)."""
import gc

import numpy as np
import pytest

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.stream import StreamTracker

NUM_FRAMES = 2000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("backend_name", ["eager", "executorch"])
def test_2000_frames_resident_memory_flat(tiny_model, backend_name):
    if backend_name == "eager":
        backend = EagerBackend(tiny_model)
    else:  # the padded fixed-slot bank on the exported graphs (same tiny weights, seed 0)
        from etam_mobile.runtime.exported import open_backend
        from test_export import exported_tiny

        backend = open_backend(backend_name, exported_tiny())
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    tracker = StreamTracker(backend)
    tracker.add_prompt(1, points=[[60, 40]], labels=[1])
    tracker.add_prompt(2, box=[10, 10, 50, 50])
    samples = {}
    for t in range(NUM_FRAMES):
        result = tracker.step(np.roll(base, t % 128, axis=1))  # a drifting pattern made on the fly
        assert result.frame_index == t and np.isfinite(result.low_res).all()
        if t in (300, NUM_FRAMES - 1):
            gc.collect()
            samples[t] = rss_mb()
        for cond, recent, tracked in tracker.bank_sizes().values():
            assert cond == 1 and recent <= 15 and tracked <= 2
        assert not tracker.core._feat_cache and not tracker._inputs  # nothing of the frame survives
    growth = samples[NUM_FRAMES - 1] - samples[300]
    assert growth < 20, f"resident memory grew {growth:.1f} MB between frame 300 and {NUM_FRAMES - 1}"
