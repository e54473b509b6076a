#!/usr/bin/env python3
"""Merge on-device benchmark JSONs (written by the iOS / Android apps) into the tables of this
machine's results.

    python benchmarks/merge_device_results.py benchmarks/results/efficienttam_ti_512x512.json \
        benchmarks/device_results/*.json --markdown benchmarks/results/merged.md

Every device file is validated against benchmarks/device_results.schema.json first, with
`jsonschema` when it is installed and otherwise with the small validator below (it covers
exactly the keywords the schema uses), so a malformed file is rejected with the path of the
bad field, never silently merged. Exit code 2 on an invalid file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("device_results.schema.json")
_TYPES = {"object": dict, "string": str, "integer": int, "number": (int, float), "array": list, "boolean": bool}


class DeviceResultError(ValueError):
    """A device result that does not follow the schema; the message names the file and field."""


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _type_ok(value, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def validate_minimal(doc, schema: dict, path: str = "$") -> list:
    """Errors of `doc` against the subset of JSON Schema the device schema uses."""
    errs = []
    if "const" in schema and doc != schema["const"]:
        return [f"{path}: must be {schema['const']!r}, got {doc!r}"]
    if "enum" in schema and doc not in schema["enum"]:
        return [f"{path}: must be one of {schema['enum']}, got {doc!r}"]
    t = schema.get("type")
    if t and not _type_ok(doc, t):
        return [f"{path}: must be of type {t}, got {type(doc).__name__}"]
    if isinstance(doc, (int, float)) and not isinstance(doc, bool):
        if "minimum" in schema and doc < schema["minimum"]:
            errs.append(f"{path}: must be >= {schema['minimum']}, got {doc}")
        if "exclusiveMinimum" in schema and doc <= schema["exclusiveMinimum"]:
            errs.append(f"{path}: must be > {schema['exclusiveMinimum']}, got {doc}")
    if isinstance(doc, str):
        if len(doc) < schema.get("minLength", 0):
            errs.append(f"{path}: must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], doc):
            errs.append(f"{path}: must match {schema['pattern']}, got {doc!r}")
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                errs.append(f"{path}: missing required field {key!r}")
        if len(doc) < schema.get("minProperties", 0):
            errs.append(f"{path}: needs at least {schema['minProperties']} entries")
        names = schema.get("propertyNames")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in doc.items():
            if names:
                errs += validate_minimal(key, names, f"{path} key")
            if key in props:
                errs += validate_minimal(value, props[key], f"{path}.{key}")
            elif extra is False:
                errs.append(f"{path}: unexpected field {key!r}")
            elif isinstance(extra, dict):
                errs += validate_minimal(value, extra, f"{path}.{key}")
    return errs


def validate(doc, schema: dict | None = None) -> list:
    """Error messages (empty = valid); jsonschema when available, else validate_minimal."""
    schema = schema or load_schema()
    try:
        import jsonschema
    except ImportError:
        return validate_minimal(doc, schema)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"$.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}".replace("$.:", "$:")
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))]


def load_device_result(path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeviceResultError(f"{path}: not readable JSON ({exc})") from None
    errs = validate(doc)
    if errs:
        raise DeviceResultError(f"{path} is not a valid etam-device-bench v1 result: " + "; ".join(errs[:8]))
    return doc


def device_row(doc: dict) -> dict:
    """A device result as a row of the per-stage table (same columns as this machine's rows)."""
    d = doc["device"]
    return {"where": f"{d['model']} ({d['chip']}, {d['os']} {d['os_version']})", "backend": doc["backend"],
            "units": doc["compute_units"], "precision": doc["precision"], "config": doc["config"],
            "stages": {s: v["median_ms"] for s, v in doc["stages"].items()}, "frame": dict(doc["frame_ms"])}


def merge(machine_json, device_paths) -> str:
    """Markdown of this machine's results with every device row added to the per-stage table."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from etam_mobile.bench import render_markdown

    doc = json.loads(Path(machine_json).read_text())
    rows = [device_row(load_device_result(p)) for p in device_paths]
    return render_markdown(doc, device_rows=rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("machine_json", help="a results JSON written by `etam-mobile bench --json`")
    ap.add_argument("device_json", nargs="*", help="device results (etam-device-bench v1)")
    ap.add_argument("--markdown", help="write the merged Markdown here (default: stdout)")
    args = ap.parse_args(argv)
    try:
        text = merge(args.machine_json, args.device_json)
    except DeviceResultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.markdown:
        Path(args.markdown).write_text(text)
        print(f"merged {len(args.device_json)} device result(s) -> {args.markdown}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
