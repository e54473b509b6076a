#!/usr/bin/env bash
# Compile android_demo/tracker-core (main + tests) with kotlinc and run its JUnit 4 tests.
#
# Needs Debian's `kotlin` and `junit4` packages (apt-get install -y kotlin junit4): kotlinc 1.3.31,
# /usr/share/java/junit4.jar and hamcrest. Exits non-zero when compilation or a test fails.
# KOTLINC, JUNIT_JAR and HAMCREST_JAR override the defaults.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CORE="$ROOT/android_demo/tracker-core"
KOTLINC="${KOTLINC:-kotlinc}"
JUNIT_JAR="${JUNIT_JAR:-/usr/share/java/junit4.jar}"
HAMCREST_JAR="${HAMCREST_JAR:-}"
if [ -z "$HAMCREST_JAR" ]; then
  for j in /usr/share/java/hamcrest-core.jar /usr/share/java/hamcrest.jar /usr/share/java/hamcrest-all.jar; do
    if [ -f "$j" ]; then HAMCREST_JAR="$j"; break; fi
  done
fi

command -v "$KOTLINC" >/dev/null || { echo "error: $KOTLINC not found; apt-get install -y kotlin junit4" >&2; exit 2; }
[ -f "$JUNIT_JAR" ] || { echo "error: $JUNIT_JAR not found; apt-get install -y junit4" >&2; exit 2; }
[ -n "$HAMCREST_JAR" ] || { echo "error: no hamcrest jar in /usr/share/java; apt-get install -y junit4" >&2; exit 2; }

OUT="$(mktemp -d "${TMPDIR:-/tmp}/tracker-core.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT
CP="$JUNIT_JAR:$HAMCREST_JAR"
KOTLIN_STDLIB="$(dirname "$(readlink -f "$(command -v "$KOTLINC")")")/../lib/kotlin-stdlib.jar"
[ -f "$KOTLIN_STDLIB" ] || KOTLIN_STDLIB="/usr/share/java/kotlin-stdlib.jar"

MAIN_SRC=$(find "$CORE/src/main/kotlin" -name '*.kt' | sort)
TEST_SRC=$(find "$CORE/src/test/kotlin" -name '*.kt' | sort)
echo "== $("$KOTLINC" -version 2>&1 | tail -n 1)"
echo "== compiling tracker-core: $(echo "$MAIN_SRC" | wc -l) main + $(echo "$TEST_SRC" | wc -l) test files -> $OUT"
# Main first on its own (proves it needs nothing but the Kotlin stdlib), then the tests.
# shellcheck disable=SC2086
"$KOTLINC" -nowarn -d "$OUT/main" $MAIN_SRC 2>&1 | grep -v 'noverify were deprecated' || true
[ -n "$(find "$OUT/main" -name '*.class' -print -quit)" ] || { echo "error: tracker-core main did not compile" >&2; exit 1; }
# shellcheck disable=SC2086
"$KOTLINC" -nowarn -cp "$OUT/main:$CP" -d "$OUT/test" $TEST_SRC 2>&1 | grep -v 'noverify were deprecated' || true
[ -n "$(find "$OUT/test" -name '*Test.class' -print -quit)" ] || { echo "error: tracker-core tests did not compile" >&2; exit 1; }

CLASSES=$(cd "$OUT/test" && find . -name '*Test.class' | sed 's|^\./||; s|\.class$||; s|/|.|g' | sort)
RUN_CP="$OUT/main:$OUT/test:$CORE/src/test/resources:$CP:$KOTLIN_STDLIB"
echo "== java -cp ... org.junit.runner.JUnitCore" $CLASSES
# shellcheck disable=SC2086
java -cp "$RUN_CP" org.junit.runner.JUnitCore $CLASSES
