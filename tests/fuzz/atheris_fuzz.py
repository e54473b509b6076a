"""Coverage-guided fuzzing (atheris/libFuzzer) of the user-input parsers: `make fuzz`.

    python tests/fuzz/atheris_fuzz.py {prompts|manifest|frames} [libFuzzer flags, e.g. -max_total_time=60]

Same targets and invariant as the hypothesis tests (tests/fuzz/targets.py); a crash means
an input that got another exception than the project's one-line user error, a hang
(-timeout) or an allocation past -rss_limit_mb. Crashing inputs are written as crash-*
files in the current folder; replay one by passing its path instead of flags.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))
with atheris.instrument_imports(include=["etam_mobile", "targets", "json", "PIL"]):
    import targets

FRAME_NAMES = ["00000.png", "00001.jpg", "1.jpg", "2.jpeg", "x.png", "10.PNG", "00002.png"]
SEEDS = [targets.image_bytes(6, 4), targets.image_bytes(6, 4, "JPEG"), targets.image_bytes(6, 4, mode="I;16"),
         targets.image_bytes(5, 4), targets.image_bytes(6, 4, mode="P")]


def prompts(data: bytes) -> None:
    targets.prompt_file(data)


def manifest(data: bytes) -> None:
    targets.manifest_file(data)


def frames(data: bytes) -> None:
    """The first bytes choose up to 3 file names and seed images to damage; the rest is the damage."""
    fdp = atheris.FuzzedDataProvider(data)
    files = {}
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        name = FRAME_NAMES[fdp.ConsumeIntInRange(0, len(FRAME_NAMES) - 1)]
        base = bytearray(SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)])
        mode = fdp.ConsumeIntInRange(0, 2)
        if mode == 0:  # flip bytes
            for _ in range(fdp.ConsumeIntInRange(0, 8)):
                base[fdp.ConsumeIntInRange(0, len(base) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
        elif mode == 1:  # truncate
            base = base[: fdp.ConsumeIntInRange(0, len(base))]
        else:  # raw bytes
            base = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)))
        files[name] = bytes(base)
    targets.frame_folder(list(files.items()))


TARGETS = {"prompts": prompts, "manifest": manifest, "frames": frames}


def write_seed_corpus(name: str, folder: Path) -> None:
    """Valid inputs to start from, so the fuzzer explores near real files."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "prompts":
        (folder / "valid.json").write_text(json.dumps(targets.VALID_PROMPTS))
    elif name == "manifest":
        (folder / "valid.json").write_text(json.dumps(targets.valid_manifest(), indent=1))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer flags]")
    name = sys.argv.pop(1)
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus or crash file given: use the seed corpus
        corpus = Path("fuzz-corpus") / name
        write_seed_corpus(name, corpus)
        argv.append(str(corpus))
    atheris.Setup(argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
