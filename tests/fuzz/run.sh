#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Builds the libFuzzer targets of tests/fuzz/ with clang (ASan + UBSan) into
# OUTDIR and runs each for $FUZZ_SECONDS seconds (default 20).
#
#   tests/fuzz/run.sh OUTDIR [TARGET...]        TARGET: protocol config journal credentials wire window
#
# Each run starts from the seed corpus tests/fuzz/corpus/TARGET (read only)
# plus OUTDIR/corpus/TARGET, where new inputs go, so a second run goes on
# where the first stopped. A crash, leak, timeout or sanitizer report stops
# its target; the input is kept as tests/fuzz/crashes/TARGET-crash-SHA1 (turn
# it into a regression test) and the script exits 1 after running the rest.
# Without clang's libFuzzer runtime it prints SKIP and exits 0.
#
# Environment: FUZZ_SECONDS (20), FUZZ_CC (clang), FUZZ_MAX_LEN (20000),
# FUZZ_CRASH_DIR (tests/fuzz/crashes).
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:?usage: $0 OUTDIR [TARGET...]}
shift
seconds=${FUZZ_SECONDS:-20}
cc=${FUZZ_CC:-clang}
max_len=${FUZZ_MAX_LEN:-20000}
crash_dir=${FUZZ_CRASH_DIR:-$here/crashes}
all_targets="protocol config journal credentials wire window"
targets=${*:-$all_targets}

mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)

# Sources of each target, listed explicitly (no meson needed), and its pkg-config modules.
sources() {
        case $1 in
        protocol) echo "src/agent/protocol.c" ;;
        journal) echo "src/agent/journal.c src/shared/util/fileio.c src/shared/util/random-id.c" ;;
        credentials) echo "src/agent/credentials.c src/shared/util/fileio.c src/shared/util/random-id.c" ;;
        config) echo "src/shared/config.c src/shared/log.c src/shared/window.c src/shared/util/fileio.c src/shared/util/random-id.c src/shared/util/strings.c" ;;
        wire) echo "src/shared/util/wire.c src/shared/util/strings.c src/shared/fetch-wire.c src/shared/install-wire.c" ;;
        window) echo "src/shared/window.c src/shared/util/strings.c" ;;
        *) return 1 ;;
        esac
}
modules() {
        case $1 in
        config) echo "libconfig" ;;
        *) echo "json-c" ;;
        esac
}

# The toolchain: clang with the libFuzzer and sanitizer runtimes (Debian: libclang-rt-14-dev).
probe="$out/.probe"
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe.c"
if ! command -v "$cc" >/dev/null 2>&1 ||
        ! "$cc" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >"$probe.log" 2>&1 ||
        ! "$probe" -runs=1 >>"$probe.log" 2>&1; then
        echo "SKIP: clang with libFuzzer not available (install clang and libclang-rt-14-dev)"
        sed 's/^/#   /' "$probe.log" 2>/dev/null | head -5
        exit 0
fi

for t in $targets; do
        sources "$t" >/dev/null || {
                echo "unknown target '$t' (known: $all_targets)" >&2
                exit 2
        }
        if ! pkg-config --exists "$(modules "$t")"; then
                echo "FAIL: pkg-config cannot find $(modules "$t") (needed by fuzz-$t); install its -dev package" >&2
                exit 1
        fi
done

# What meson's configure_file() would make; config.c includes it.
cat >"$out/build-config.h" <<EOF
#define PACKAGE_VERSION "fuzz"
#define DEFAULT_CONFIG_FILE "/etc/krtiot.conf"
#define HOOKS_DIR "/usr/lib/krtiot/hooks"
EOF

status=0
printf '%-12s %10s %8s %8s  %s\n' target runs cov corpus result
for t in $targets; do
        exe="$out/fuzz-$t"
        log="$out/fuzz-$t.log"
        art="$out/artifacts-$t"
        srcs=""
        for s in $(sources "$t"); do srcs="$srcs $top/$s"; done

        # shellcheck disable=SC2046,SC2086 # word splitting of the flag and source lists is wanted
        if ! "$cc" -std=gnu11 -g -O1 -fno-omit-frame-pointer -D_GNU_SOURCE=1 -D_FILE_OFFSET_BITS=64 \
                -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -I"$out" -I"$top/src/shared" -I"$top/src/agent" $(pkg-config --cflags "$(modules "$t")" json-c) \
                "$here/fuzz-$t.c" $srcs \
                $(pkg-config --libs "$(modules "$t")" json-c) -o "$exe" >"$log" 2>&1; then
                printf '%-12s %10s %8s %8s  %s\n' "$t" - - - "BUILD FAILED (see $log)"
                sed 's/^/#   /' "$log" | head -20
                status=1
                continue
        fi

        mkdir -p "$out/corpus/$t" "$art"
        rm -f "$art"/*
        dict=""
        [ -f "$here/dict/$t.dict" ] && dict="-dict=$here/dict/$t.dict"
        # stdin is /dev/null: a config may name a file such as /dev/stdin.
        # shellcheck disable=SC2086
        (cd "$out" && LSAN_OPTIONS="suppressions=$here/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
                UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" "$exe" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
                -print_final_stats=1 -artifact_prefix="$art/" $dict \
                "$out/corpus/$t" "$here/corpus/$t") >"$log" 2>&1 </dev/null
        rc=$?

        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
        corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
        result="ok, no crash"
        crashes=$(find "$art" -type f | wc -l)
        if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
                status=1
                mkdir -p "$crash_dir"
                result="CRASH (exit $rc)"
                for f in "$art"/*; do
                        [ -f "$f" ] || continue
                        cp "$f" "$crash_dir/$t-$(basename "$f")"
                        result="$result, kept tests/fuzz/crashes/$t-$(basename "$f")"
                done
        fi
        printf '%-12s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "${cov:-?}" "${corp:-?}" "$result"
        if [ "$rc" -ne 0 ]; then
                # The sanitizer report: what went wrong, and where.
                grep -E '^(==[0-9]+==ERROR|SUMMARY|    #[0-9]+ |.*runtime error:|.*deadly signal|.*Test unit written|0x|\\x)' "$log" |
                        grep -v 'in LLVMFuzzerRunDriver\|in fuzzer::\|in main \|libc.so\|_start ' | head -30 | sed 's/^/#   /'
                echo "#   full log: $log; reproduce: $exe CRASH-FILE"
        fi
done
exit $status
