"""Memory stays flat on long videos: the bank keeps only what upstream's rules can reach."""
import gc

import numpy as np
import pytest

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.tracker import Tracker

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
    s = tiny_model.cfg.image_size
    rng = np.random.default_rng(0)
    base = rng.standard_normal((1, 3, s, s)).astype(np.float32)

    def frame(i):  # a drifting pattern, made on the fly: no frames held anywhere
        return np.roll(base, i % s, axis=3)

    tracker = Tracker(backend, NUM_FRAMES, (96, 128), frame)
    tracker.add_prompt(0, 1, [[60, 40]], [1])
    tracker.add_prompt(0, 2, None, None, [10, 10, 50, 50])
    samples = {}
    for t, _, low_res in tracker.propagate():
        assert np.isfinite(low_res).all()
        if t in (300, NUM_FRAMES - 1):
            gc.collect()
            samples[t] = rss_mb()
        for bank in tracker.objects.values():
            assert len(bank.non_cond) <= 15 and len(bank.cond) == 1
    growth = samples[NUM_FRAMES - 1] - samples[300]
    assert growth < 20, f"resident memory grew {growth:.1f} MB between frame 300 and {NUM_FRAMES - 1}"
