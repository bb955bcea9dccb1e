#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The tests under AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer).
#
#   tests/sanitize.sh [BUILD_DIR [PYTEST_ARG...]]    BUILD_DIR: default build-sanitize
#
# PYTEST_ARGs replace the default selection (tests/integration), e.g.
#   tests/sanitize.sh build-sanitize tests/integration/test_core.py -k sighup
#
# Builds a second meson tree (-Db_sanitize=address,undefined -Db_lundef=false),
# runs the unit tests and the integration tests against it, with the options
# below exported so every krtiotd, krtiot-install and krtiot-fetch the tests start inherits
# them (tests/integration/daemon.py passes the environment through). A
# sanitizer report goes to the process's stderr: for krtiotd (and krtiot-install) that is its log
# file under the pytest basetemp (BUILD_DIR/pytest-tmp, kept after the run),
# which is grepped afterwards; one report anywhere fails the run, even if the
# test that caused it passed.
#
# Coverage: all of tests/integration (about 5 min, as long as the plain run:
# the tests wait on timers and servers, not on the daemon's CPU) except
#   test_ota.py::test_1gib_image_peak_rss_within_1mib_of_idle: it measures the
#     production allocator's peak RSS; ASan's allocator (redzones, quarantine,
#     shadow memory) makes that number meaningless. The 1 GiB path itself is
#     exercised by the other download and OTA tests.
# Daemons that the tests run under strace (test_registration, test_ota) keep
# ASan and UBSan but not the leak check: LeakSanitizer cannot work under
# ptrace and would abort the daemon at exit. A `strace` wrapper first in PATH
# adds detect_leaks=0 for exactly those processes.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$PWD
BUILD_DIR=${1:-build-sanitize}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- tests/integration
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$top/$BUILD_DIR ;; esac
PY=/usr/bin/python3
started=$(date +%s)
failed=()

step() { printf '\n==> %s\n' "$*"; }

step "Sanitized build ($BUILD_DIR)"
opts=("-Db_sanitize=address,undefined" -Db_lundef=false)
if [ -d "$BUILD_DIR/meson-private" ]; then
    meson setup --reconfigure "${opts[@]}" "$BUILD_DIR" >/dev/null || exit 1
else
    meson setup "${opts[@]}" "$BUILD_DIR" >/dev/null || exit 1
fi
ninja -C "$BUILD_DIR" || exit 1

# halt_on_error: the first report stops the process (UBSan too, whose checks
# would otherwise report and go on). Leaks are checked at every exit.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# Reports must be the text grepped for below, not colored.
export ASAN_OPTIONS=$ASAN_OPTIONS:color=never UBSAN_OPTIONS=$UBSAN_OPTIONS:color=never

# LeakSanitizer cannot run under ptrace: under strace, no leak check.
wrap=$BUILD_DIR/sanitize-bin
mkdir -p "$wrap"
real_strace=$(command -v strace || true)
if [ -n "$real_strace" ]; then
    # shellcheck disable=SC2016 # $ASAN_OPTIONS and $@ are for the wrapper to expand
    printf '#!/bin/sh\n# made by tests/sanitize.sh: LeakSanitizer does not work under ptrace\nASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" exec %s "$@"\n' \
        "$real_strace" >"$wrap/strace"
    chmod +x "$wrap/strace"
    export PATH="$wrap:$PATH"
fi

REPORT_RE='ERROR: AddressSanitizer|runtime error:|LeakSanitizer'
# In pytest's output only the reports themselves: the source of a failed
# assertion in test_download.py quotes these words.
OUT_RE='==[0-9]+==ERROR: (Address|Leak)Sanitizer|: runtime error:|LeakSanitizer has encountered'

step "Unit tests (sanitized)"
meson test -C "$BUILD_DIR" --suite unit --print-errorlogs || failed+=("unit tests")
if grep -Eq "$REPORT_RE" "$BUILD_DIR/meson-logs/testlog.txt" 2>/dev/null; then
    grep -E -B2 -A30 "$REPORT_RE" "$BUILD_DIR/meson-logs/testlog.txt" | head -80
    failed+=("sanitizer report in the unit tests ($BUILD_DIR/meson-logs/testlog.txt)")
fi

step "Integration tests (sanitized)"
basetemp=$BUILD_DIR/pytest-tmp
out=$BUILD_DIR/pytest-sanitize.log
rc=0
rm -rf "$basetemp" # no report of an earlier run may be counted
KRTIOT_BUILD_DIR=$BUILD_DIR $PY -m pytest "$@" \
    --deselect tests/integration/test_ota.py::test_1gib_image_peak_rss_within_1mib_of_idle \
    -rs -q -p no:cacheprovider --basetemp "$basetemp" 2>&1 | tee "$out" || rc=$?
[ "$rc" -eq 0 ] || failed+=("integration tests (pytest exit $rc)")

# The daemons' and installers' logs, and pytest's own output (krtiotd --check-config and
# krtiot-fetch report on captured stderr, which a failing test prints).
reports=$(grep -rlE --include='krtiotd*.log' --include='krtiot-install*.log' "$REPORT_RE" "$basetemp" 2>/dev/null)
grep -qE "$OUT_RE" "$out" && reports="$reports${reports:+ }$out"
if [ -n "$reports" ]; then
    for f in $reports; do
        printf '\n----- %s -----\n' "$f"
        grep -E -A40 "$OUT_RE|$REPORT_RE" "$f" | head -60
    done
    failed+=("sanitizer reports in: $reports")
fi

step "Summary ($(( $(date +%s) - started )) s)"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "No sanitizer reports; all tests passed."
