"""Slot buckets: the smaller memory-attention graphs in the export folder, the pure choice rule,
and the runtime running the smallest that fits with the full graph's values."""
import json

import numpy as np
import pytest

from etam_mobile.configs import get_config, tiny_test_config
from etam_mobile.contracts import Capacities, choose_slot_bucket, memory_attention_spec, slot_buckets
from etam_mobile.manifest import read_manifest
from etam_mobile.runtime.exported import open_backend

from conftest import exported_tiny, tiny
from test_export import FP32_REL, eager_io


def test_default_buckets_follow_the_tracking_pattern():
    cfg = get_config("efficienttam_ti_512x512")
    assert slot_buckets(cfg, Capacities()) == [(1, 1), (2, 2), (4, 4), (7, 16)]
    assert slot_buckets(cfg, Capacities(cond_frames=3)) == [(1, 1), (2, 2), (4, 4), (7, 16)]
    spec = memory_attention_spec(cfg, 2, 2)
    assert [t.shape for t in spec.inputs][1:] == [(2, 64, 32, 32), (2,), (2,), (2, 256), (2,)]


@pytest.mark.parametrize("n_mem,n_ptr,want", [
    (0, 0, (1, 1)), (1, 1, (1, 1)), (2, 2, (2, 2)), (3, 3, (4, 4)), (4, 4, (4, 4)), (5, 5, (7, 16)),
    (7, 16, (7, 16)), (7, 17, (8, 17)), (8, 2, (8, 17)), (2, 9, (7, 16)), (1, 2, (2, 2))])
def test_choice_rule(n_mem, n_ptr, want):
    buckets = [(1, 1), (2, 2), (4, 4), (7, 16), (8, 17)]
    assert buckets[choose_slot_bucket(buckets, n_mem, n_ptr)] == want


def test_choice_rule_order_and_no_fit():
    assert choose_slot_bucket([(8, 17), (2, 4), (2, 2)], 1, 1) == 2  # fewest memory, then pointer slots
    assert choose_slot_bucket([(3, 3), (3, 3)], 1, 1) == 0  # ties: the earliest
    assert choose_slot_bucket([(2, 2)], 3, 1) == -1


def test_manifest_lists_buckets_with_checksums():
    doc = read_manifest(exported_tiny())
    buckets = doc["stages"]["memory_attention"]["slot_buckets"]
    cfg = tiny_test_config()
    assert [(b["memory_slots"], b["ptr_slots"]) for b in buckets] == slot_buckets(cfg, Capacities())
    for b in buckets:
        assert set(b["artifacts"]) == set(doc["stages"]["memory_attention"]["artifacts"])
        for rel in b["artifacts"].values():
            assert rel in doc["checksums"] and (exported_tiny() / rel).exists()
        assert f"memory_attention.k{b['memory_slots']}p{b['ptr_slots']}" in doc["tool"]["export_report"]


@pytest.mark.parametrize("name", ["executorch", "onnx"])
def test_runtime_runs_the_smallest_bucket_with_the_full_graphs_values(name):
    """Padded inputs with 1..8 valid slots: the backend picks the bucket, and its output equals
    the eager stage (which equals the full graph, tests/test_memory_stages.py)."""
    import torch

    model, _ = tiny()
    backend = open_backend(name, exported_tiny(), config="test_tiny")
    inputs, _ = eager_io(model)
    full = inputs["memory_attention"]
    stage = model.stages()["memory_attention"]
    seen = []
    for n in (1, 2, 3, 5, 7, 8):
        arrays = [a.copy() for a in full]
        arrays[3][:] = 0.0
        arrays[3][:n] = 1.0
        arrays[5][:] = 0.0
        arrays[5][:n] = 1.0
        before = dict(backend.bucket_calls)
        (got,) = backend.run("memory_attention", arrays)
        used = [kp for kp in backend.bucket_calls if backend.bucket_calls[kp] != before[kp]]
        seen += used
        with torch.inference_mode():
            ref = stage(*[torch.from_numpy(a) for a in arrays]).numpy()
        assert np.abs(got - ref).max() < FP32_REL * np.abs(ref).max(), (name, n, used)
    assert seen == [(1, 1), (2, 2), (4, 4), (7, 16), (7, 16), (8, 17)]


def test_bucket_rule_is_in_the_trace_and_old_manifests_still_load(tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(exported_tiny(), folder)
    doc = json.loads((folder / "manifest.json").read_text())
    del doc["stages"]["memory_attention"]["slot_buckets"]  # an export from before slot buckets
    (folder / "manifest.json").write_text(json.dumps(doc))
    backend = open_backend("onnx", folder, config="test_tiny")
    caps = backend.capacities
    assert backend.slot_buckets == [(caps.memory_slots(backend.cfg), caps.ptr_slots(backend.cfg))]
    doc["stages"]["memory_attention"]["slot_buckets"] = [{"memory_slots": 99, "ptr_slots": 1, "artifacts": {}}]
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="slot bucket"):
        open_backend("onnx", folder, config="test_tiny")
