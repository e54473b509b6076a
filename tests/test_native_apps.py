"""What CI can check of the native apps on Linux (see android_demo/README.md, ios_demo/README.md).

- every Swift and Kotlin source parses with the tree-sitter grammars (no ERROR / MISSING nodes);
- the conformance fixtures checked into both apps equal what scripts/make_traces.py writes now;
- android_demo/tracker-core compiles with kotlinc and its JUnit trace-replay tests pass;
- ios_demo's Swift package (EtamKit core, Swift 6 language mode) builds with `swift build` and its
  XCTest targets pass with `swift test` (trace replays, public-API tests without @testable).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPS = (ROOT / "android_demo", ROOT / "ios_demo")
FIXTURE_DIRS = (
    ROOT / "android_demo" / "tracker-core" / "src" / "test" / "resources" / "traces",
    ROOT / "ios_demo" / "Tests" / "EtamKitTests" / "Fixtures",
)


def _sources(suffixes) -> list:
    return sorted(p for app in APPS for p in app.rglob("*") if p.suffix in suffixes and ".build" not in p.parts)


def _parser(lang: str):
    ts = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (pip install tree-sitter==0.26.1)")
    mod = pytest.importorskip(f"tree_sitter_{lang}", reason=f"tree-sitter-{lang} is not installed")
    return ts.Parser(ts.Language(mod.language()))


def _problems(node, out, limit=5):
    if len(out) >= limit:
        return out
    if node.is_error or node.is_missing:
        kind = "missing " + node.type if node.is_missing else "syntax error"
        out.append(f"line {node.start_point[0] + 1} col {node.start_point[1] + 1}: {kind}")
    if node.has_error:
        for child in node.children:
            _problems(child, out, limit)
    return out


@pytest.mark.parametrize("lang,suffixes", [("swift", {".swift"}), ("kotlin", {".kt", ".kts"})])
def test_sources_parse(lang, suffixes):
    parser = _parser(lang)
    files = _sources(suffixes)
    assert len(files) >= (10 if lang == "swift" else 15), f"too few {lang} sources found: {files}"
    bad = {}
    for path in files:
        tree = parser.parse(path.read_bytes())
        if tree.root_node.has_error:
            bad[str(path.relative_to(ROOT))] = _problems(tree.root_node, [])
    assert not bad, f"{lang} sources that do not parse: {json.dumps(bad, indent=1)}"


def test_no_placeholders_in_app_sources():
    pattern = re.compile(r"\b(TODO|FIXME|XXX)\b|fatalError\(\"unimplemented|NotImplementedError")
    hits = [f"{p.relative_to(ROOT)}:{i + 1}" for p in _sources({".swift", ".kt", ".kts"})
            for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not hits, f"placeholders left in app sources: {hits}"


def _close(a, b, path="$"):
    """Structural equality; decisions (ints, strings) exact, floats within 1e-3 relative: they are
    logits and scores after several chained stages, where kernel choice and BLAS rounding show."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{path}: {a!r} != {b!r}"
        assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-5), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_fixtures_in_sync_with_python_runtime(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_traces
    finally:
        sys.path.pop(0)
    make_traces.main(["--out", str(tmp_path)])
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(fresh) >= 5
    for folder in FIXTURE_DIRS:
        have = sorted(p.name for p in folder.glob("*.json"))
        assert have == fresh, f"{folder}: fixture files {have} != {fresh}; run `make traces`"
        for name in fresh:
            try:
                _close(json.loads((folder / name).read_text()), json.loads((tmp_path / name).read_text()))
            except AssertionError as exc:
                raise AssertionError(f"{folder / name} is out of date ({exc}); run `make traces`") from None
    total = sum(p.stat().st_size for p in tmp_path.glob("*.json"))
    assert total < 200_000, f"fixtures are {total} bytes; keep them under 200 KB"


def test_fixture_traces_cover_the_rules():
    folder = FIXTURE_DIRS[0]
    records = [r for p in folder.glob("trace_*.json") for r in json.loads(p.read_text())["records"]]
    assert any(not r["is_init_cond"] and r["kind"] == "prompt" for r in records), "no correction click"
    assert any(r["has_mask_input"] for r in records), "no previous-mask feedback"
    assert any(r["multimask"] for r in records) and any(not r["multimask"] for r in records)
    caps = 2
    assert any(sum(1 for t in r["selection"]["mem_tpos"] if t == 6) == caps and len(r["selection"]["mem_frames"]) > caps
               for r in records), "closest-frame rule never limited the conditioning frames"
    assert any(len(r["selection"]["ptr_frames"]) == 15 for r in records), "pointer window never full"


def test_kotlin_tracker_core_junit(tmp_path):
    _require_tool("kotlinc", "apt-get install -y kotlin junit4 (`make test` installs it)")
    if not Path("/usr/share/java/junit4.jar").exists():
        pytest.skip("JUnit 4 is not installed (apt-get install -y junit4)")
    result = tmp_path / "device_result.json"
    out = _run(["bash", str(ROOT / "scripts" / "native_tests.sh")], "tracker-core tests", 600,
               env=dict(os.environ, ETAM_DEVICE_RESULT_OUT=str(result)))
    m = re.search(r"^OK \((\d+) tests?\)", out, re.M)
    assert m and int(m.group(1)) > 0, f"no JUnit OK summary:\n{out[-2000:]}"
    for name in ("TraceReplayTest", "CorrectionTest", "BenchmarkTest"):
        assert name in out, f"{name} did not run:\n{out[-2000:]}"
    # The JSON the Kotlin core writes (the Android app's benchmark mode) is a valid device result.
    doc = _device_result(result)
    assert doc["backend"] == "executorch" and doc["compute_units"] == "xnnpack"
    assert doc["peak_memory_mb"] > 0
    assert doc["cpu_governor"] and doc["stages"]["image_encoder"]["load_ms"] > 0


def _run(cmd, what, timeout, **kw) -> str:
    """Run a native build or test command; fail with the tail of its output. -> stdout + stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}"
    return out


def _device_result(path) -> dict:
    """The device-result JSON a native core wrote, read as benchmarks/merge_device_results.py reads it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from merge_device_results import device_row, load_device_result
    finally:
        sys.path.pop(0)
    doc = load_device_result(path)
    assert device_row(doc)["stages"]["image_encoder"] == 11.5
    assert doc["model_load_ms"] > 0 and doc["frame_ms"]["trimmed_mean"] > 0
    return doc


def _require_tool(name: str, hint: str):
    """Skip where a native toolchain is missing, except in CI (CI=true), where that is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{name} is not installed on this CI machine; {hint}")
        pytest.skip(f"{name} is not installed ({hint})")
    return path


def _swift(args, **kw) -> str:
    """`swift <args>` in ios_demo with its build dir under ios_demo/.build (git-ignored); must succeed."""
    swift = _require_tool("swift", "install a Swift 6 toolchain (swift.org) and put it on PATH")
    return _run([swift, *args, "--package-path", str(ROOT / "ios_demo")], f"swift {args[0]}", 1500, **kw)


def test_swift_core_builds_in_swift6_mode():
    manifest = (ROOT / "ios_demo" / "Package.swift").read_text()
    assert "swift-tools-version:6" in manifest and "swiftLanguageModes: [.v6]" in manifest
    out = _swift(["build", "--build-tests"])
    warnings = [line for line in out.splitlines() if ": warning:" in line]
    assert not warnings, "swift build warnings (Swift 6 concurrency checking):\n" + "\n".join(warnings[:20])


def test_swift_xctest_trace_replays_and_public_api(tmp_path):
    result = tmp_path / "device_result.json"
    out = _swift(["test", "--disable-swift-testing"], env=dict(os.environ, ETAM_DEVICE_RESULT_OUT=str(result)))
    summary = re.findall(r"Executed (\d+) tests?, with (\d+) failures?", out)
    assert summary, f"no XCTest summary:\n{out[-3000:]}"
    total, failures = map(int, summary[-1])
    assert failures == 0 and total >= 25, f"XCTest ran {total} tests with {failures} failures"
    for name in ("TraceReplayTests.testTrackerReplaysEveryTrace", "PublicAPITests", "CorrectionAndCameraTests", "BenchmarkTests"):
        assert name in out, f"{name} did not run:\n{out[-3000:]}"
    _device_result(result)  # the JSON the Swift core writes is a valid device result
