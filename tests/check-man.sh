#!/bin/sh
# Renders each man page given with man(1) and fails on any warning
# (groff and man print them on stderr). Run by `meson test` (suite docs).
set -u
command -v man >/dev/null || { echo "1..0 # SKIP man is not installed"; exit 0; }
n=0 fail=0
for page in "$@"; do
    n=$((n + 1))
    err=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)
    if [ -z "$err" ] && [ -s "$page" ]; then
        echo "ok $n - $(basename "$page") renders without warnings"
    else
        fail=1
        echo "not ok $n - $(basename "$page")"
        printf '%s\n' "$err" | sed 's/^/#   /'
    fi
done
echo "1..$n"
exit $fail
