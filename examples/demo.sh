#!/usr/bin/env bash
# The embedded default job: QAT of LeNet-5 on Fashion-MNIST, starting from the shipped float
# checkpoint, then the float and fake-quant accuracies side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
QAT=.build/release/qat
OUT=${QAT_DEMO_DIR:-runs/demo}

$QAT plan --config Configs/retrain.json
$QAT train --config Configs/retrain.json --checkpoint-dir "$OUT" --output "$OUT/final.h5"
echo
$QAT eval --checkpoint Checkpoints/lenet5-float.h5 | sed 's/^/float      /'
$QAT eval --checkpoint "$OUT/final.h5" | sed 's/^/fake-quant /'
