"""Property-based fuzzing of every user-input parser (prompt files, manifests, frame folders),
bounded to a few seconds and derandomized so CI is stable; `make fuzz` runs the
coverage-guided atheris harness (tests/fuzz/atheris_fuzz.py) for longer.

Invariant (tests/fuzz/targets.py): a usable result or the project's user error as one line;
never another exception.
"""
from __future__ import annotations

import copy
import json
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import targets

FAST = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=5)),
                           max_leaves=20)


def paths_of(doc, prefix=()):
    """Every (key path) in a JSON document, for mutation."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths_of(v, prefix + (i,))


@st.composite
def mutated(draw, base):
    """`base` with a few values replaced by arbitrary JSON values, or removed."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in paths_of(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = draw(json_values)
        else:
            del parent[path[-1]]
    return doc


# ---- prompt files ---------------------------------------------------------------------------------------

@FAST
@given(json_values)
def test_prompt_doc_any_json(doc):
    targets.prompt_doc(doc)
    targets.prompt_doc({"prompts": [doc]})


@FAST
@given(mutated(targets.VALID_PROMPTS))
def test_prompt_doc_mutated(doc):
    targets.prompt_doc(doc)


@FAST
@given(st.one_of(st.binary(max_size=300),
                 mutated(targets.VALID_PROMPTS).map(lambda d: json.dumps(d).encode()),
                 st.builds(lambda b, i: json.dumps(targets.VALID_PROMPTS).encode()[:i] + b,
                           st.binary(max_size=20), st.integers(0, 300))))
def test_prompt_file_bytes(data):
    targets.prompt_file(data)


def test_prompt_file_edge_cases():
    for data in (b"", b"\xef\xbb\xbf", b"[" * 100000, b'{"prompts": [{"id": 1' + b"0" * 5000 + b"}]}",
                 b'{"prompts": [{"id": 1, "frame": 0, "points": [[1e999, 2]], "labels": [1]}]}',
                 b'{"prompts": [{"id": 1, "frame": 0, "points": [[NaN, 2]], "labels": [1]}]}',
                 b'{"prompts": [{"id": 1, "frame": 0, "points": [[1, 2]], "labels": [true]}]}',
                 b'{"prompts": [{"id": 1, "frame": 0, "points": [[1, 2]], "labels": [1.0]}]}',
                 b'{"prompts": [{"id": 1, "frame": 0, "box": [0, 0, 1, 1], "box": [1, 1, 0, 0]}]}',
                 b'{"prompts": [{"id": "\\n1", "frame": 0, "box": [0, 0, 1, 1]}]}',
                 b" " * (1 << 20) + b"{}"):
        targets.prompt_file(data)


# ---- manifests ------------------------------------------------------------------------------------------

VALID_MANIFEST = targets.valid_manifest()


@FAST
@given(mutated(VALID_MANIFEST))
def test_manifest_mutated(doc):
    targets.manifest_doc(doc)


@FAST
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda d: json.dumps(d).encode())))
def test_manifest_bytes(data):
    targets.manifest_file(data)


def test_manifest_edge_cases():
    doc = copy.deepcopy(VALID_MANIFEST)
    doc["stages"]["image_encoder"]["artifacts"]["onnx"] = "../../etc/passwd"
    targets.manifest_doc(doc)
    doc["stages"]["image_encoder"]["artifacts"]["onnx"] = "/etc/passwd"
    targets.manifest_doc(doc)
    for caps in ({"points": 1e308, "cond_frames": 2}, {"points": -5, "cond_frames": 2}, [], "x"):
        targets.manifest_doc({**VALID_MANIFEST, "capacities": caps})
    targets.manifest_file(b"\xff\xfe{}")
    targets.manifest_file(b"[" * 100000)


# ---- frame folders --------------------------------------------------------------------------------------

PNG = targets.image_bytes(6, 4)
JPEG = targets.image_bytes(6, 4, "JPEG")
contents = st.one_of(
    st.sampled_from([PNG, JPEG, targets.image_bytes(6, 4, mode="I;16"), targets.image_bytes(6, 4, mode="P"),
                     targets.image_bytes(6, 4, mode="LA"), targets.image_bytes(6, 4, mode="1"),
                     targets.image_bytes(4, 6), b""]),
    st.builds(lambda b, i: b[:i], st.sampled_from([PNG, JPEG]), st.integers(0, len(PNG))),
    st.builds(lambda b, i, x: b[:i] + bytes([b[i] ^ x]) + b[i + 1:] if i < len(b) else b,
              st.sampled_from([PNG, JPEG]), st.integers(0, len(JPEG)), st.integers(1, 255)),
    st.binary(max_size=64),
)
names = st.builds(lambda stem, ext: stem + ext, st.from_regex(r"[a-z_]{0,3}[0-9]{0,4}", fullmatch=True),
                  st.sampled_from([".png", ".jpg", ".jpeg", ".PNG", ".txt"]))


@FAST
@given(st.lists(st.tuples(names, contents), min_size=1, max_size=4, unique_by=lambda t: t[0]))
def test_frame_folder(files):
    targets.frame_folder(files)


def test_frame_folder_edge_cases():
    # a PNG header claiming 20000x20000 with one byte of data (a decompression bomb)
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")

    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    targets.frame_folder([("00000.png", bomb)])
    targets.frame_folder([("00000.png", PNG), ("0.jpg", JPEG)])
    targets.frame_folder([("a\nb1.png", PNG)])
