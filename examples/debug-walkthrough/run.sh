#!/usr/bin/env bash
# Precision-debugging walkthrough (README.md beside this script): LeNet-5 with one
# quantization-sensitive layer. Find it with `qat sensitivity`, confirm the kind of error with
# `qat compare`, fix it with INT16 (or by keeping the layer float), and compare accuracies.
#
# Environment:
#   QAT_BIN                 the qat binary (default .build/release/qat)
#   QAT_WALKTHROUGH_DIR     output folder (default runs/debug-walkthrough)
#   QAT_WALKTHROUGH_QUICK=1 small limits (the test suite runs it this way with the debug binary)
#   QAT_WALKTHROUGH_TRAIN=0|1 also fine-tune the broken and the fixed config with QAT for one short
#                           epoch (default 1, and 0 with QAT_WALKTHROUGH_QUICK=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
QAT=${QAT_BIN:-.build/release/qat}
OUT=${QAT_WALKTHROUGH_DIR:-runs/debug-walkthrough}
HERE=examples/debug-walkthrough
CHECKPOINT=Checkpoints/lenet5-float.h5
BROKEN=$HERE/sensitive.json
if [[ "${QAT_WALKTHROUGH_QUICK:-0}" == 1 ]]; then
  EVAL=300; BATCHES=2; BATCH=150; LIMIT=(--train-limit 2048); TRAIN=${QAT_WALKTHROUGH_TRAIN:-0}
else
  EVAL=2000; BATCHES=20; BATCH=250; LIMIT=(); TRAIN=${QAT_WALKTHROUGH_TRAIN:-1}   # calibration draws from the full training set, like qat train
fi
IMAGES=$((BATCHES * BATCH))
mkdir -p "$OUT"
[[ -x "$QAT" ]] || { echo "error: $QAT not found: run 'swift build -c release --product qat' or set QAT_BIN" >&2; exit 1; }

step() { printf '\n=== %s\n\n' "$*"; }
# The fake-quant (second side) and float accuracies from a compare report.
side_accuracy() { sed -nE 's/^top-1 accuracy: [a-z0-9]+ [0-9.]+%, [a-z0-9]+ ([0-9.]+)%.*/\1/p' "$1"; }
float_accuracy() { sed -nE 's/^top-1 accuracy: float ([0-9.]+)%.*/\1/p' "$1"; }

step "0. The job: $BROKEN quantizes every layer; conv2's clip bounds are fixed at ±1000"
echo "Someone saw an outlier of ~900 in a debug dump of conv2's input and widened its bounds to"
echo "never clip it. The typical input is below 10."
"$QAT" plan --config "$BROKEN"

step "1. Static check before anything runs (qat check model)"
"$QAT" check model --config "$BROKEN"

step "2. Accuracy after calibration collapses (qat compare, float vs fake quant, $IMAGES test images)"
"$QAT" compare --checkpoint "$CHECKPOINT" --config "$BROKEN" "${LIMIT[@]}" \
  --batches "$BATCHES" --batch-size "$BATCH" --html "$OUT/compare-before.html" > "$OUT/compare-before.txt"
head -2 "$OUT/compare-before.txt"

step "3. Which layer? (qat sensitivity: each layer quantized alone, and all but one, on $EVAL images)"
"$QAT" sensitivity --checkpoint "$CHECKPOINT" --config "$BROKEN" "${LIMIT[@]}" --eval-limit "$EVAL" --quiet \
  --write-config "$OUT/fixed-int16.json" --action int16 --top-k 1 | tee "$OUT/sensitivity.txt"
TOP=$(awk '$1 == "1" { print $2; exit }' "$OUT/sensitivity.txt")
echo
echo "most sensitive layer: $TOP"

step "4. What kind of error? (qat compare, the rows of $TOP)"
awk -v layer="$TOP" 'NR > 2 && ($1 == "layer" || $1 == layer)' "$OUT/compare-before.txt"
echo
echo "clip<L and clip>U are 0 %: nothing is clipped, so $TOP's error is ROUNDING: its scale (the s= above)"
echo "is far larger than its typical input. Fixes: more bits (INT16: the same range in 65535 steps),"
echo "bounds from IFMR (drop clip_max/clip_min), or keep the layer float."
echo "HTML report with the per-layer cosine/SQNR chart: $OUT/compare-before.html"

step "5. Fix A: $TOP at INT16 (the config sensitivity wrote: $OUT/fixed-int16.json)"
"$QAT" plan --config "$OUT/fixed-int16.json" | awk -v layer="$TOP" '$1 == "layer" || $1 == layer'
"$QAT" compare --checkpoint "$CHECKPOINT" --config "$OUT/fixed-int16.json" "${LIMIT[@]}" \
  --batches "$BATCHES" --batch-size "$BATCH" --html "$OUT/compare-int16.html" > "$OUT/compare-int16.txt"
head -2 "$OUT/compare-int16.txt" | tail -1
awk -v layer="$TOP" 'NR > 2 && ($1 == "layer" || $1 == layer)' "$OUT/compare-int16.txt"

step "6. Fix B: keep $TOP float"
"$QAT" sensitivity --checkpoint "$CHECKPOINT" --config "$BROKEN" "${LIMIT[@]}" --eval-limit "$EVAL" --quiet \
  --write-config "$OUT/fixed-skip.json" --action skip --top-k 1 > /dev/null
"$QAT" compare --checkpoint "$CHECKPOINT" --config "$OUT/fixed-skip.json" "${LIMIT[@]}" \
  --batches "$BATCHES" --batch-size "$BATCH" > "$OUT/compare-skip.txt"
head -2 "$OUT/compare-skip.txt" | tail -1

if [[ "$TRAIN" == 1 ]]; then
  step "7. Does QAT fine-tuning repair the broken config by itself? (1 epoch on 10000 training images)"
  "$QAT" train --config "$BROKEN" --epochs 1 --train-limit 10000 --checkpoint-dir "$OUT/qat-before" > "$OUT/train-before.txt"
  "$QAT" train --config "$OUT/fixed-int16.json" --epochs 1 --train-limit 10000 --checkpoint-dir "$OUT/qat-int16" > "$OUT/train-int16.txt"
  grep -hE "after calibration|epoch 1/1  lr" "$OUT/train-before.txt" "$OUT/train-int16.txt"
  echo
  echo "$TOP's trained bounds in the broken run (qat inspect):"
  "$QAT" inspect "$OUT/qat-before/final.h5" | awk -v layer="$TOP" '$1 == layer'
  echo "ULQ hardly moves them: with nothing clipped, the clip gradient is only the rounding residual."
  echo "The weights adapt around the coarse grid and win back part of the accuracy; the fixed config"
  echo "needs no repair."
fi

step "Summary: top-1 accuracy on $IMAGES test images after IFMR calibration (no training)"
printf '%-48s %s%%\n' "float:" "$(float_accuracy "$OUT/compare-before.txt")"
printf '%-48s %s%%\n' "before: $TOP clip bounds [-1000, 1000], INT8" "$(side_accuracy "$OUT/compare-before.txt")"
printf '%-48s %s%%\n' "after, INT16: $TOP input at INT16" "$(side_accuracy "$OUT/compare-int16.txt")"
printf '%-48s %s%%\n' "after, skip: $TOP kept float" "$(side_accuracy "$OUT/compare-skip.txt")"
if [[ "$TRAIN" == 1 ]]; then
  test_accuracy() { sed -nE 's/^epoch 1\/1  lr.*test acc ([0-9.]+)%.*/\1/p' "$1"; }
  echo
  echo "after one QAT epoch (10000 training images), test accuracy on the full test set:"
  printf '%-48s %s%%\n' "  broken config" "$(test_accuracy "$OUT/train-before.txt")"
  printf '%-48s %s%%\n' "  $TOP at INT16" "$(test_accuracy "$OUT/train-int16.txt")"
fi
