#!/usr/bin/env bash
# The embedded default job: QAT of LeNet-5 on Fashion-MNIST from the shipped float checkpoint,
# deployed onto the INT8 kernels, with the accuracies side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
QAT=${QAT_BIN:-.build/release/qat}
OUT=${QAT_DEMO_DIR:-runs/demo}
mkdir -p "$OUT"

echo "== plan"
$QAT plan --config Configs/retrain.json
echo "== lr = 0 sanity check"
$QAT check lr0 --config Configs/retrain.json
echo "== QAT (fake quant), from Checkpoints/lenet5-float.h5"
$QAT train --config Configs/retrain.json --checkpoint-dir "$OUT/qat" --output "$OUT/qat/final.h5"
echo "== float fine-tune with the same budget (the control QAT is measured against)"
$QAT train --config Configs/float-finetune.json --checkpoint-dir "$OUT/float-finetune" --output "$OUT/float-finetune/final.h5" | tail -2
echo "== deploy onto the INT8 kernels, and check the contract"
$QAT deploy --checkpoint "$OUT/qat/final.h5" --output "$OUT/lenet5-int8.h5"
$QAT verify --checkpoint "$OUT/qat/final.h5" --deploy "$OUT/lenet5-int8.h5"

accuracy() { "$@" | sed -nE 's/.*test accuracy ([0-9.]+%).*/\1/p' | head -1; }
echo
echo "== test accuracy, 10 000 Fashion-MNIST images"
printf '%-34s %s\n' "float (shipped)"                "$(accuracy $QAT eval --checkpoint Checkpoints/lenet5-float.h5)"
printf '%-34s %s\n' "float fine-tune (control)"      "$(accuracy $QAT eval --checkpoint "$OUT/float-finetune/final.h5")"
printf '%-34s %s\n' "fake quant (QAT)"               "$(accuracy $QAT eval --checkpoint "$OUT/qat/final.h5")"
printf '%-34s %s\n' "INT8 kernels ($($QAT eval --deploy "$OUT/lenet5-int8.h5" | sed -nE 's/.*(portable|avx2|vnni).*/\1/p' | head -1))" \
                                                     "$(accuracy $QAT eval --deploy "$OUT/lenet5-int8.h5")"
echo "metrics and plot: $OUT/qat/metrics.csv, $OUT/qat/metrics.svg"
