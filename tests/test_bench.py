"""`etam-mobile bench` on a tiny config: the JSON schema, counted FLOPs against a hand count,
and the device-results merger. No timed assertions (timings on a shared 2-core machine are noise)."""
from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from etam_mobile import bench
from etam_mobile.checkpoint import load_model
from etam_mobile.configs import get_config
from etam_mobile.contracts import STAGES

ROOT = Path(__file__).resolve().parents[1]


def _merger():
    spec = importlib.util.spec_from_file_location("merge_device_results", ROOT / "benchmarks" / "merge_device_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def doc():
    # One isolated eager run (the real subprocess path) and a 2-point scaling table.
    return bench.run_bench("test_tiny", ["eager"], frames=3, warmup=1, scaling=("eager",), scaling_frames=2,
                           scaling_reps=1, quiet=True, isolate=True, measure_machine=False)


def test_json_has_schema_fields_with_positive_numbers(doc, tmp_path):
    assert doc["schema"] == "etam-bench" and isinstance(doc["machine"], dict)
    (r,) = doc["results"]
    assert r["backend"] == "eager"
    assert r["frame_ms"]["median"] > 0 and r["frame_ms"]["p90"] >= r["frame_ms"]["median"]
    assert r["tracked_frames"] == 2
    assert set(r["stages"]) == set(STAGES)
    for s in r["stages"].values():
        assert s["median_ms"] > 0 and s["p90_ms"] > 0 and s["gflop"] > 0 and s["achieved_gflops"] > 0
    assert r["memory"]["peak_rss_mb"] > 0
    assert all(v > 0 for v in r_artifacts(r))
    rows = doc["memory_attention_scaling"]["rows"]
    assert [(x["cross_attn"], x["memory_frames"]) for x in rows] == [(v, n) for v in bench.CROSS_ATTN_VARIANTS
                                                                     for n in (1, 2)]
    plain = [x["gflop"] for x in rows if x["cross_attn"] == "plain"]
    assert plain[1] > plain[0] > 0  # more memory frames, more work
    bench.write_outputs(doc, tmp_path / "b.json", tmp_path / "b.md", tmp_path / "b.png", quiet=True)
    back = json.loads((tmp_path / "b.json").read_text())
    assert back["results"][0]["stages"]["image_encoder"]["median_ms"] > 0
    md = (tmp_path / "b.md").read_text()
    assert "| this machine | test_tiny | eager |" in md and "Memory attention vs number of memory frames" in md


def r_artifacts(r):
    return [r["stages"][s]["artifact_bytes"] for s in STAGES]


def test_flop_count_matches_hand_count():
    cfg = get_config("test_tiny")
    model, _ = load_model(cfg, None, seed=0, quiet=True)
    stage = model.stages()["memory_encoder"]
    h, C, M, lr = cfg.feat_size, cfg.d_model, cfg.mem_dim, cfg.low_res_size
    inputs = [np.zeros((1, C, h, h), np.float32), np.zeros((1, 1, lr, lr), np.float32), np.ones((1,), np.float32)]
    total, per_module = bench.count_flops(stage, inputs)
    by_leaf = {k.rsplit(".", 1)[-1]: v for k, v in per_module.items()}
    # 1x1 convolutions are matmuls: 2 * (h*w positions) * C_out * C_in
    assert by_leaf["pix_feat_proj"] == 2 * h * h * C * C
    assert by_leaf["out_proj"] == 2 * h * h * M * C
    # a Linear (CXBlock pwconv1: C -> 4C on every position) is 2*M*N*K
    assert by_leaf["pwconv1"] == 2 * (h * h) * (4 * C) * C
    assert total > by_leaf["pix_feat_proj"] + by_leaf["out_proj"]


def test_sdpa_is_counted_on_cpu():
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 24, 8), torch.randn(1, 2, 24, 8)
    mask = torch.zeros(1, 1, 16, 24)

    class Attn(torch.nn.Module):
        def forward(self, q, k, v, m):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)

    total, _ = bench.count_flops(Attn(), [q.numpy(), k.numpy(), v.numpy(), mask.numpy()])
    assert total == 2 * (2 * 2 * 16 * 24 * 8)  # QK^T and PV, 2 FLOPs per multiply-add


def _device_doc():
    return {
        "schema": "etam-device-bench", "version": 1,
        "device": {"model": "iPhone 15 Pro Max", "os": "iOS", "os_version": "18.1", "chip": "A17 Pro"},
        "backend": "coreml", "compute_units": "ALL", "config": "test_tiny", "precision": "fp16", "frames": 16,
        "stages": {"image_encoder": {"median_ms": 11.5, "p90_ms": 12.0, "compute_unit_report": {"neural_engine": 9}},
                   "memory_attention": {"median_ms": 4.0, "p90_ms": 4.5}},
        "frame_ms": {"median": 30.0, "p90": 33.0}, "app_version": "0.1.0", "export_manifest_sha256": "a" * 64,
    }


def test_merger_rejects_invalid_device_json(tmp_path):
    m = _merger()
    bad = _device_doc()
    del bad["frame_ms"]
    bad["stages"]["image_encoder"]["median_ms"] = -1
    bad["backend"] = "tflite"
    errs = m.validate_minimal(bad, m.load_schema())
    assert any("frame_ms" in e for e in errs)
    assert any("median_ms" in e and "> 0" in e for e in errs)
    assert any("backend" in e for e in errs)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(m.DeviceResultError, match="not a valid etam-device-bench v1 result"):
        m.load_device_result(path)
    unknown_stage = _device_doc()
    unknown_stage["stages"]["decoder"] = {"median_ms": 1.0, "p90_ms": 1.0}
    assert any("decoder" in e for e in m.validate_minimal(unknown_stage, m.load_schema()))


def test_merger_merges_valid_device_json(doc, tmp_path):
    m = _merger()
    assert m.validate_minimal(_device_doc(), m.load_schema()) == []
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps(doc))
    dev = tmp_path / "iphone.json"
    dev.write_text(json.dumps(_device_doc()))
    out = tmp_path / "merged.md"
    assert m.main([str(machine), str(dev), "--markdown", str(out)]) == 0
    table = out.read_text().split("## Per stage and per frame")[1].split("##")[0]
    row = next(line for line in table.splitlines() if "iPhone 15 Pro Max" in line)
    assert "| coreml | ALL | fp16 | 11.5 | 4.0 | – | – | 30.0 | 33.0 |" in row
    assert "| this machine | test_tiny | eager |" in table
    bad = copy.deepcopy(_device_doc())
    bad["version"] = 2
    dev.write_text(json.dumps(bad))
    assert m.main([str(machine), str(dev)]) == 2
