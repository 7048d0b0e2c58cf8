#!/usr/bin/env bash
# PTQ accuracy of LeNet-5 for each calibration method (docs/PTQ.md): `qat calibrate` from
# Checkpoints/lenet5-float.h5 on BATCHES training batches, the full test set, then deploy and
# verify. Two rule sets per method: qat's simple form (`act_algo`, symmetric, fixed_min by the
# graph rule, per-channel conv weights) and, for the Vitis methods, Configs/vitis/plain-<method>.json
# (signed symmetric, zero point 0, per-tensor weights).
#
# usage: scripts/ptq-table.sh [QAT_BINARY] [BATCHES]   (default: .build/release/qat, 4)
set -euo pipefail
cd "$(dirname "$0")/.."
QAT=${1:-.build/release/qat}
BATCHES=${2:-4}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

row() {  # name config
    local name=$1 config=$2
    local log verify
    log=$("$QAT" calibrate --config "$config" --checkpoint Checkpoints/lenet5-float.h5 --output "$WORK/$name.h5" \
        --batch-num "$BATCHES" 2>&1)
    "$QAT" deploy --checkpoint "$WORK/$name.h5" --output "$WORK/$name-int8.h5" >/dev/null 2>&1
    verify=$("$QAT" verify --checkpoint "$WORK/$name.h5" --deploy "$WORK/$name-int8.h5" 2>&1)
    local float ptq int8 result
    float=$(grep '^float ' <<<"$log" | awk '{print $2}')
    ptq=$(grep '^PTQ (fake)' <<<"$log" | awk '{print $3}')
    int8=$(grep '^accuracy:' <<<"$verify" | sed 's/.*INT8 \([0-9.]*%\).*/\1/')
    result=$(grep -o 'PASS\|FAIL' <<<"$verify" | head -1)
    echo "| $name | $float | $ptq | $int8 | $result |"
}

echo "| method (rules) | float | PTQ (fake quant) | INT8 engine | verify |"
echo "|---|---|---|---|---|"
for method in ifmr hfmg maxmin percentile entropy mse; do
    echo "{\"retrain_data_config\": {\"act_algo\": \"$method\"}}" > "$WORK/$method.json"
    row "$method (qat simple form)" "$WORK/$method.json"
done
for method in maxmin percentile entropy mse; do
    row "$method (Vitis plain-$method.json)" "Configs/vitis/plain-$method.json"
done
