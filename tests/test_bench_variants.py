"""`etam-mobile bench --variants` on the tiny config: ExecuTorch variants side by side (size,
time, peak memory, mask IoU and per-stage PSNR vs fp32 eager), folders read from their
manifests or exported into the cache, and the bad inputs. No timed assertions.

The int8 variant is the memory-attention-only int8 folder of test_quantize (one quantised
lowering, cached for the session); the fp32 variant is exported by the bench into its cache.
"""
from __future__ import annotations

import json
import shutil

import pytest

from etam_mobile import bench
from etam_mobile.bench import variants as bv
from etam_mobile.cli import main
from etam_mobile.contracts import STAGES
from etam_mobile.manifest import read_manifest

from test_quantize import int8_tiny, tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("variant-cache")
    doc = bench.run_bench("test_tiny", ["eager"], frames=3, warmup=1, scaling=(), quiet=True, isolate=True,
                          measure_machine=False, variants=["fp32", "int8"], artifacts=[str(int8_tiny())],
                          variant_cache=cache)
    return doc, cache


def test_variants_side_by_side_with_accuracy_vs_eager(run, tmp_path):
    doc, cache = run
    labels = [r.get("label", r["backend"]) for r in doc["results"]]
    assert labels == ["eager", "executorch fp32", "executorch int8"]
    by = {r["variant"]: r for r in doc["results"] if r.get("variant")}
    # each variant ran from its own folder: fp32 from the cache, int8 from --artifacts
    assert by["fp32"]["variant_record"]["folder"].startswith(str(cache))
    assert by["int8"]["variant_record"]["folder"] == str(int8_tiny())
    assert by["int8"]["variant_record"]["stage_precision"]["memory_attention"] == "int8"
    assert by["fp32"]["variant_record"]["stage_precision"] == {s: "fp32" for s in STAGES}
    for r in by.values():
        assert set(r["stages"]) == set(STAGES) and r["memory"]["peak_rss_mb"] > 0
        assert all(r["stages"][s]["artifact_bytes"] > 0 for s in STAGES)
        agree = r["agreement_vs_eager_fp32"]
        assert 0.5 < agree["mask_iou_min"] <= agree["mask_iou_mean"] <= 1.0
        assert set(r["stage_psnr_vs_eager_fp32"]) == set(STAGES)
    # fp32 ExecuTorch matches eager closely; int8 is measured, and its unquantised stages stay exact-ish
    assert min(by["fp32"]["stage_psnr_vs_eager_fp32"].values()) > 60
    assert 30 <= by["int8"]["stage_psnr_vs_eager_fp32"]["memory_attention"] < 100
    assert by["int8"]["stage_psnr_vs_eager_fp32"]["image_encoder"] > 60
    rows = {r["variant"]: r for r in doc["variants"]["rows"]}
    assert rows["fp32"]["size_vs_fp32"] == 1.0
    assert rows["int8"]["stage_size_vs_fp32"]["memory_attention"] < 0.5
    assert rows["int8"]["stage_size_vs_fp32"]["image_encoder"] == pytest.approx(1.0, abs=0.02)
    assert rows["int8"]["frame_vs_fp32"] > 0 and rows["int8"]["frame_vs_eager"] > 0
    assert "no compressed variant yet" not in json.dumps(doc["precision_variants"])
    bench.write_outputs(doc, tmp_path / "b.json", tmp_path / "b.md", None, quiet=True)
    md = (tmp_path / "b.md").read_text()
    assert "## ExecuTorch variants side by side" in md and "| int8 | fp32/int8/fp32/fp32 |" in md
    assert "| this machine | test_tiny | executorch int8 | CPU | int8 |" in md
    assert "skipped" not in md.split("## fp16 and compressed variants")[1].split("- fp32_agreement")[0].split(
        "- compressed")[1]


def test_cached_variant_is_reused_when_its_manifest_matches(run):
    doc, cache = run
    folder = next(r for r in doc["results"] if r.get("variant") == "fp32")["variant_record"]["folder"]
    before = (cache / folder.split("/")[-1] / "manifest.json").stat().st_mtime_ns
    model, weights = tiny()
    again = bv.cached_folder(model, weights, "fp32", cache, 0, None, ("executorch",), quiet=True)
    assert str(again) == folder and (again / "manifest.json").stat().st_mtime_ns == before
    assert bv.folder_variant(read_manifest(again)) == "fp32"


def test_bad_variant_arguments_are_one_line_errors(tmp_path, capsys):
    def err(*argv):
        code = main(["-q", "bench", "--config", "test_tiny", "--json", str(tmp_path / "b.json"), "--scaling", "none", *argv])
        text = capsys.readouterr().err
        e = [line for line in text.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(e) == 1 and "Traceback" not in text, text
        return e[0]

    assert "unknown variant(s) int3" in err("--variants", "fp32,int3") and "fp32, int8, int8-4w" in err(
        "--variants", "int3")
    assert "need --variants" in err("--artifacts", f"{tmp_path},{tmp_path}")
    # a folder whose manifest holds a variant --variants does not list
    assert "holds variant int8, which --variants does not list" in err(
        "--variants", "fp32", "--artifacts", str(int8_tiny()), "--backends", "eager")
    # two folders of one variant
    twin = tmp_path / "twin"
    shutil.copytree(int8_tiny(), twin)
    assert "both hold variant int8" in err("--variants", "int8", "--artifacts", f"{int8_tiny()},{twin}",
                                           "--backends", "eager")
    assert "does not exist" in err("--variants", "int8", "--artifacts", str(tmp_path / "nothing"),
                                   "--backends", "eager")
    assert not (tmp_path / "b.json").exists()


def test_folder_variant_reads_the_manifest_not_the_name():
    doc = read_manifest(int8_tiny())
    assert bv.folder_variant(doc) == "int8"
    fp = json.loads(json.dumps(doc))
    fp["variant"]["executorch_plan"] = {s: "fp32" for s in STAGES}
    assert bv.folder_variant(fp) == "fp32"
    del fp["variant"]
    for s in STAGES:
        fp["stages"][s].pop("precision", None)
    assert bv.folder_variant(fp) == "fp32"  # an older manifest: its ExecuTorch artifacts were fp32
