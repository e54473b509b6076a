# `make demo` and `make test` set everything up on a fresh machine (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Swift toolchain builds and tests ios_demo's core (tests/test_native_apps.py); non-login shells
# (CI's `bash .ci/run`) may lack it on PATH, so add /opt/swift's when it exists.
SWIFT_BIN := $(firstword $(wildcard /opt/swift/usr/bin))
export PATH := $(if $(SWIFT_BIN),$(SWIFT_BIN):,)$(PATH)

.PHONY: install native-deps demo test test-slow traces fuzz clean

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/etam-mobile demo --out demo_out

# Kotlin tracker-core tests (android_demo/) compile with Debian's kotlinc 1.3 + JUnit 4.
native-deps:
	@command -v kotlinc >/dev/null && test -f /usr/share/java/junit4.jar || \
	  (apt-get install -y -q kotlin junit4 || (apt-get update -q && apt-get install -y -q kotlin junit4) || \
	   sudo apt-get install -y -q kotlin junit4 || \
	   echo "WARNING: could not install kotlin/junit4; the Kotlin tracker-core tests will be skipped")

test: $(STAMP) native-deps
	$(BIN)/python -m pytest

# Regenerate the conformance traces the Swift and Kotlin tests replay.
traces: $(STAMP)
	$(BIN)/python scripts/make_traces.py

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Coverage-guided fuzzing of the input parsers (prompt files, manifests, frame folders) with
# atheris, FUZZ_SECONDS per target; crashes land in fuzz-out/ (the bounded run is in `make test`).
FUZZ_SECONDS ?= 120
$(VENV)/.fuzz: $(STAMP)
	$(BIN)/pip install -q -e '.[fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz
	mkdir -p fuzz-out
	set -e; for t in prompts manifest frames; do \
	  (cd fuzz-out && ../$(BIN)/python ../tests/fuzz/atheris_fuzz.py $$t -max_total_time=$(FUZZ_SECONDS) \
	     -timeout=10 -rss_limit_mb=2048 -print_final_stats=1); done

clean:
	rm -rf $(VENV) demo_out fuzz-out
