"""`etam-mobile bench-image` on the tiny config (eager only): the document's shape, counts, errors."""
import json

from etam_mobile.bench.image import render_markdown, run_bench_image
from etam_mobile.cli import main


def test_bench_image_counts_encoder_once_per_photo_and_taps_after_the_first():
    doc = run_bench_image("test_tiny", ["eager"], photos=2, taps=4, size=(64, 48), quiet=True)
    r = doc["backends"]["eager"]
    assert r["set_image_ms"]["n"] == 2 and r["encoder_ms"]["n"] == 2  # once per timed photo
    assert r["first_mask_ms"]["n"] == 2 and r["tap_ms"]["n"] == 2 * 3
    assert r["decoder_call_ms"]["n"] == 2 * 3
    assert r["taps_per_second_after_first"] > 0
    assert r["first_mask_ms"]["median"] >= r["set_image_ms"]["min"]
    assert "| eager |" in render_markdown(doc)
    json.dumps(doc)


def test_bench_image_bad_arguments(capsys):
    for args in (["--photo-size", "big"], ["--taps", "1"], ["--backends", "tpu"]):
        code = main(["-q", "bench-image", "--config", "test_tiny", *args])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
