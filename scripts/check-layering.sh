#!/usr/bin/env bash
# Proves that the floors are one-way: for each floor, a probe file that imports the floor above
# it must fail to build. Exit 0 when every backwards import is rejected by the compiler.
#
# usage: scripts/check-layering.sh     (a debug build of each probed target, about a minute)
set -uo pipefail
cd "$(dirname "$0")/.."
floors=(QATIO QATCore QATModel QATONNX QATData QATTrain QATDeploy QATDebug QAT QATCLI)
probe=""
trap '[ -n "$probe" ] && rm -f "$probe"' EXIT
failures=0
for ((i = 0; i + 1 < ${#floors[@]}; i++)); do
    lower=${floors[i]}; upper=${floors[i + 1]}
    probe=Sources/$lower/LayeringProbe.swift
    echo "import $upper" >"$probe"
    if output=$(swift build --target "$lower" --explicit-target-dependency-import-check error 2>&1); then
        echo "FAIL: $lower may import $upper"; failures=$((failures + 1))
    elif grep -qE "circular dependency|no such module|without declaring it a dependency" <<<"$output"; then
        echo "ok: $lower cannot import $upper ($(grep -oE "circular dependency[^']*'[^']*' and '[^']*'|no such module '[^']*'|imports another target \([^)]*\) in the package without declaring it a dependency" <<<"$output" | head -1))"
    else
        echo "FAIL: $lower importing $upper broke the build for another reason:"; grep error: <<<"$output" | head -3
        failures=$((failures + 1))
    fi
    rm -f "$probe"; probe=""
done
swift build --target QATCLI >/dev/null 2>&1 || { echo "FAIL: the tree does not build after the probes"; failures=$((failures + 1)); }
[ "$failures" = 0 ] && echo "layering: every backwards import is rejected" || { echo "layering: $failures failures"; exit 1; }
