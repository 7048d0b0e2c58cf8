#!/usr/bin/env bash
# No-behaviour-change check: runs scripts/behaviour-snapshot.sh with a `qat` binary and compares
# the result with the snapshot recorded in scripts/behaviour-baseline/ (taken from commit 3c115c2,
# before the layered redesign, on this machine kind; the resnet-tiny entries re-taken after issue
# 15's blocked 3×3 conv kernels, which sum in another order and pick AVX-512 or AVX2 from cpuid,
# so those entries hold for this machine kind only; and the evaluation figures, compare reports
# and deploy files re-taken after issue 11 put the eval bias on the int32 accumulator grid,
# which leaves every trained weight unchanged). Exit 0 when every dataset and every
# `compare --json` report is byte-identical.
#
# usage: scripts/behaviour-check.sh [QAT_BINARY]   (default: .build/release/qat, built first)
set -euo pipefail
cd "$(dirname "$0")/.."
QAT=${1:-}
if [ -z "$QAT" ]; then swift build -c release --product qat >/dev/null; QAT=.build/release/qat; fi
OUT=$(mktemp -d)/snapshot
scripts/behaviour-snapshot.sh "$QAT" "$OUT" >/dev/null
if diff -r -x work scripts/behaviour-baseline "$OUT"; then
    echo "behaviour-check: identical ($(wc -l <"$OUT/manifest.txt") datasets and attributes, 4 compare reports)"
else
    echo "behaviour-check: DIFFERENT from scripts/behaviour-baseline (see the diff above; files in $OUT)"; exit 1
fi
