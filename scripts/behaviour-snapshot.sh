#!/usr/bin/env bash
# Runs a fixed set of short, seeded, single-threaded jobs with one `qat` binary and writes a
# manifest: one line per HDF5 dataset (path, shape, SHA-256 of its little-endian bytes) of every
# checkpoint and deploy file they produce, plus the `compare --json` reports verbatim.
# Two binaries that behave the same give identical manifests (scripts/behaviour-check.sh).
#
# usage: scripts/behaviour-snapshot.sh QAT_BINARY OUT_DIR
# The record of run settings (root string attributes) is left out on purpose: its format may change.
set -euo pipefail
QAT=$(realpath "$1"); OUT=$(realpath -m "$2")
cd "$(dirname "$0")/.."
rm -rf "$OUT"; mkdir -p "$OUT/work"
W=$OUT/work
DATA=${QAT_DATA:-/usr/share/datasets/fashion-mnist}
common=(--threads 1 --seed 3 --epochs 1 --train-limit 640 --test-limit 256)

echo "== LeNet-5 QAT (Configs/retrain.json)"
"$QAT" train --config Configs/retrain.json "${common[@]}" --save-every 4 \
    --checkpoint-dir "$W/lenet5" --output "$W/lenet5/final.h5" >"$W/lenet5.log"
"$QAT" deploy --checkpoint "$W/lenet5/final.h5" --output "$W/lenet5-int8.h5" >/dev/null
"$QAT" compare --checkpoint "$W/lenet5/final.h5" --json --batches 2 --batch-size 64 --data "$DATA" \
    >"$OUT/compare-lenet5-float-fakequant.json"
"$QAT" compare --checkpoint "$W/lenet5/final.h5" --deploy "$W/lenet5-int8.h5" --sides fakequant,int8 \
    --json --batches 2 --batch-size 64 --data "$DATA" >"$OUT/compare-lenet5-fakequant-int8.json"
"$QAT" compare --checkpoint Checkpoints/lenet5-float.h5 --config Configs/retrain.json --train-limit 640 \
    --json --batches 2 --batch-size 64 >"$OUT/compare-lenet5-calibrated.json"

echo "== resnet-tiny: float, then QAT from it"
cat >"$W/resnet-float.json" <<JSON
{"model": {"spec": "Configs/models/resnet-tiny.json"}, "data": {"path": "$DATA"},
 "train": {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9,
           "weight_decay": 0.0005, "schedule": "cosine", "seed": 3, "threads": 1},
 "checkpoint": {"output": "$W/resnet/float.h5"}}
JSON
"$QAT" train --config "$W/resnet-float.json" "${common[@]}" >"$W/resnet-float.log"
"$QAT" create-config --model Configs/models/resnet-tiny.json --output "$W/resnet-layers.json"
python3 - "$W/resnet-layers.json" "$W/resnet-qat.json" "$W" "$DATA" <<'PY'
import json, sys
layers = json.load(open(sys.argv[1]))
layers.update({"model": {"spec": "Configs/models/resnet-tiny.json", "init": sys.argv[3] + "/resnet/float.h5"},
               "data": {"path": sys.argv[4]},
               "train": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.001,
                         "seed": 3, "threads": 1},
               "checkpoint": {"dir": sys.argv[3] + "/resnet-qat"}})
layers["batch_num"] = 2
json.dump(layers, open(sys.argv[2], "w"), indent=1)
PY
"$QAT" train --config "$W/resnet-qat.json" "${common[@]}" --save-every 7 >"$W/resnet-qat.log"
"$QAT" deploy --checkpoint "$W/resnet-qat/final.h5" --output "$W/resnet-int8.h5" >/dev/null
"$QAT" compare --checkpoint "$W/resnet-qat/final.h5" --deploy "$W/resnet-int8.h5" --sides float,int8 \
    --json --batches 2 --batch-size 64 --data "$DATA" >"$OUT/compare-resnet-float-int8.json"

echo "== manifest"
manifest=$OUT/manifest.txt; : >"$manifest"
tmp=$(mktemp)
for f in $(cd "$W" && find . -name '*.h5' | sort); do
    h5ls -r "$W/$f" | awk '$2 == "Dataset" {print $1}' | while read -r ds; do
        h5dump -d "$ds" -b LE -o "$tmp" "$W/$f" >/dev/null
        shape=$(h5ls "$W/$f$ds" | sed -E 's/^[^ ]+ +Dataset //')
        echo "$f $ds $shape $(sha256sum <"$tmp" | cut -c1-64)" >>"$manifest"
    done
    # int64 root attributes (epoch, step, seed, progress) are state, not the settings record
    for a in epoch step seed progress_batch progress_correct progress_seen progress_loss_sum_bits; do
        v=$(h5dump -a "/$a" "$W/$f" 2>/dev/null | sed -nE 's/^ *\(0\): (.*)$/\1/p') || true
        [ -n "$v" ] && echo "$f @$a $v" >>"$manifest"
    done
done
rm -f "$tmp"
echo "$(wc -l <"$manifest") datasets and attributes in $manifest"
