#!/usr/bin/env bash
# The two example networks end to end (README.md beside this script): import the PyTorch export,
# fine-tune it in float on Fashion-MNIST, then from that checkpoint run QAT and a float control
# with the same budget, deploy the QAT result onto the INT8 kernels, verify the deployment
# contract, and compare the accuracies. Exits 1 unless the import's logits equal PyTorch's on the
# stored reference inputs (max abs difference ≤ 1e-4), QAT is within 0.5 pp of the control and
# verify passes.
#
#   examples/onnx-models/run.sh [mobilenetv2-tiny|resnet18-tiny|all]    (default: all)
#
# Environment:
#   QAT_BIN               the qat binary (default .build/release/qat, built if missing)
#   QAT_ONNX_EXAMPLES_DIR output folder (default runs/onnx-examples; one subfolder per model)
#   QAT_ONNX_EXAMPLES_QUICK=1  a smoke run: 1280 training and 500 test images (the checks
#                         still apply, on 500 images)
#
# Budgets (epochs, learning rates, threads) are in configs/<model>-finetune.json (the float
# fine-tune of the import) and configs/<model>-control.json (the float control); the QAT config
# is `qat create-config`'s layer rules for the model plus the trainer sections of the control,
# so QAT and control differ only in the quantization (merged with python3, as scripts/fuzz.py
# of `make test` already needs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
QAT=${QAT_BIN:-.build/release/qat}
ROOT=${QAT_ONNX_EXAMPLES_DIR:-runs/onnx-examples}
HERE=examples/onnx-models
MODELS=(mobilenetv2-tiny resnet18-tiny)
if [[ "${QAT_ONNX_EXAMPLES_QUICK:-0}" == 1 ]]; then
  TRAIN_LIMIT=(--train-limit 1280 --test-limit 500); TEST_LIMIT=(--test-limit 500); IMAGES="500"
else
  TRAIN_LIMIT=(); TEST_LIMIT=(); IMAGES="10 000"
fi

case "${1:-all}" in
  all) ;;
  mobilenetv2-tiny|resnet18-tiny) MODELS=("$1") ;;
  *) echo "usage: $0 [mobilenetv2-tiny|resnet18-tiny|all]" >&2; exit 64 ;;
esac
if [[ ! -x "$QAT" ]]; then
  [[ -z "${QAT_BIN:-}" ]] || { echo "error: QAT_BIN=$QAT is not an executable" >&2; exit 1; }
  echo "== building the release qat"
  swift build -c release --product qat
fi

# The trainer sections of $1 (without its checkpoint section) followed by the layer rules of $2, into $3.
merge_config() {
  python3 - "$@" <<'PY'
import json, sys
trainer, rules, output = sys.argv[1:4]
merged = json.load(open(trainer))
merged.pop("checkpoint", None)
merged.update(json.load(open(rules)))
with open(output, "w") as f:
    json.dump(merged, f, indent=2)
    f.write("\n")
PY
}
step() { printf '\n== %s: %s\n' "$MODEL" "$*"; }

# Import fidelity: the largest |our float logit − PyTorch's| over the stored reference inputs.
# $1: `qat eval --predictions` output (class, then the logits, per line); $2: PyTorch's logits
# (.npy, float32, little-endian, C order: read with the standard library, no numpy needed).
max_logit_difference() {
  python3 - "$@" <<'PY'
import ast, struct, sys
ours = [[float(v) for v in line.split()[1:]] for line in open(sys.argv[1]) if line.strip()]
raw = open(sys.argv[2], "rb").read()
assert raw[:6] == b"\x93NUMPY", "not an .npy file"
header_length = struct.unpack("<H", raw[8:10])[0] if raw[6] == 1 else struct.unpack("<I", raw[8:12])[0]
start = (10 if raw[6] == 1 else 12) + header_length
header = ast.literal_eval(raw[start - header_length:start].decode("latin-1"))
assert header["descr"] == "<f4" and not header["fortran_order"], header
rows, columns = header["shape"]
theirs = struct.unpack("<%df" % (rows * columns), raw[start:start + 4 * rows * columns])
assert len(ours) == rows and all(len(r) == columns for r in ours), "shapes differ"
print("%.3g" % max(abs(ours[i][j] - theirs[i * columns + j]) for i in range(rows) for j in range(columns)))
PY
}
# The test accuracy (a percentage without the sign) that `qat eval` prints.
accuracy() { "$@" "${TEST_LIMIT[@]}" | sed -nE 's/.*test accuracy ([0-9.]+)%.*/\1/p' | head -1; }

run_model() {
  MODEL=$1
  local out="$ROOT/$MODEL" spec_name=${MODEL//-/_}
  local spec="$out/$spec_name.json" imported="$out/$spec_name-float.h5"
  local finetune="$HERE/configs/$MODEL-finetune.json" control="$HERE/configs/$MODEL-control.json"
  local started=$SECONDS
  mkdir -p "$out"

  step "import $HERE/$MODEL.onnx"
  "$QAT" import "$HERE/$MODEL.onnx" --output-dir "$out" | sed -n 1,2p

  step "import fidelity: our float logits vs PyTorch's on the 16 stored inputs"
  # The stored inputs are normalised already: mean 0, std 1 leaves them as they are.
  local references="$out/references.json"
  printf '{"data": {"format": "npy", "mean": 0, "std": 1, %s}}\n' \
    "$(for split in train test; do printf '"%s_images": "%s", "%s_labels": "%s", ' \
         "$split" "$HERE/$MODEL.inputs.npy" "$split" "$HERE/$MODEL.labels.npy"; done | sed 's/, $//')" > "$references"
  "$QAT" eval --checkpoint "$imported" --config "$references" --predictions "$out/import-logits.txt" > /dev/null
  local fidelity
  fidelity=$(max_logit_difference "$out/import-logits.txt" "$HERE/$MODEL.logits.npy")
  echo "max |logit difference| vs PyTorch: $fidelity (limit 1e-4)"

  step "float fine-tune of the import ($finetune)"
  "$QAT" train --config "$finetune" --model "$spec" --init "$imported" \
    "${TRAIN_LIMIT[@]}" --checkpoint-dir "$out/float-finetune" --output "$out/float-finetune/final.h5" | grep -E '^epoch [0-9]+/[0-9]+  lr'

  step "QAT from the fine-tuned checkpoint (qat create-config + the control's trainer sections)"
  "$QAT" create-config --model "$spec" --output "$out/layer-rules.json"
  merge_config "$control" "$out/layer-rules.json" "$out/retrain.json"
  "$QAT" plan --config "$out/retrain.json" --model "$spec" | tail -3
  "$QAT" train --config "$out/retrain.json" --model "$spec" --init "$out/float-finetune/final.h5" \
    "${TRAIN_LIMIT[@]}" --checkpoint-dir "$out/qat" --output "$out/qat/final.h5" | grep -E '^(after calibration|epoch [0-9]+/[0-9]+  lr)'

  step "float fine-tune with the same budget (the control QAT is measured against; $control)"
  "$QAT" train --config "$control" --model "$spec" --init "$out/float-finetune/final.h5" \
    "${TRAIN_LIMIT[@]}" --checkpoint-dir "$out/float-control" --output "$out/float-control/final.h5" | grep -E '^epoch [0-9]+/[0-9]+  lr'

  step "deploy onto the INT8 kernels, and check the contract"
  "$QAT" deploy --checkpoint "$out/qat/final.h5" --output "$out/$MODEL-int8.h5" | sed -n 1p
  local verify_status=0
  "$QAT" verify --checkpoint "$out/qat/final.h5" --deploy "$out/$MODEL-int8.h5" --threads 2 "${TEST_LIMIT[@]}" > "$out/verify.txt" || verify_status=$?
  cat "$out/verify.txt"

  step "test accuracy, $IMAGES Fashion-MNIST images"
  local imported_acc finetuned_acc control_acc fake_acc int8_acc kernels
  imported_acc=$(accuracy "$QAT" eval --checkpoint "$imported" --threads 2)
  finetuned_acc=$(accuracy "$QAT" eval --checkpoint "$out/float-finetune/final.h5" --threads 2)
  control_acc=$(accuracy "$QAT" eval --checkpoint "$out/float-control/final.h5" --threads 2)
  fake_acc=$(accuracy "$QAT" eval --checkpoint "$out/qat/final.h5" --threads 2)
  "$QAT" eval --deploy "$out/$MODEL-int8.h5" --threads 2 "${TEST_LIMIT[@]}" > "$out/eval-int8.txt"
  int8_acc=$(sed -nE 's/.*test accuracy ([0-9.]+)%.*/\1/p' "$out/eval-int8.txt")
  kernels=$(sed -nE 's/.*(portable|avx2|vnni) kernels.*/\1/p' "$out/eval-int8.txt")
  local gap
  gap=$(awk -v q="$fake_acc" -v c="$control_acc" 'BEGIN { printf "%+.2f", q - c }')
  {
    printf '%-40s %s\n' "import vs PyTorch, max |logit diff|" "$fidelity"
    printf '%-40s %s%%\n' "float, imported (before fine-tune)" "$imported_acc"
    printf '%-40s %s%%\n' "float, fine-tuned" "$finetuned_acc"
    printf '%-40s %s%%\n' "float control (same budget as QAT)" "$control_acc"
    printf '%-40s %s%%  (%s pp vs control)\n' "fake quant (QAT)" "$fake_acc" "$gap"
    printf '%-40s %s%%\n' "INT8 ($kernels kernels)" "$int8_acc"
    printf '%-40s %s\n' "verify" "$(tail -1 "$out/verify.txt")"
    printf '%-40s %d s\n' "run time" "$((SECONDS - started))"
  } > "$out/summary.txt"
  cat "$out/summary.txt"

  if ! awk -v q="$fake_acc" -v c="$control_acc" 'BEGIN { exit !(q >= c - 0.5) }'; then
    echo "CHECK FAILED: $MODEL: QAT $fake_acc% is more than 0.5 pp below the control's $control_acc%"; failed+=("$MODEL")
  fi
  if ! awk -v d="$fidelity" 'BEGIN { exit !(d <= 1e-4) }'; then
    echo "CHECK FAILED: $MODEL: the import's logits differ from PyTorch's by $fidelity (> 1e-4)"; failed+=("$MODEL")
  fi
  if [[ $verify_status != 0 ]]; then
    echo "CHECK FAILED: $MODEL: qat verify (exit $verify_status): $out/verify.txt"; failed+=("$MODEL")
  fi
}

# Commands that fail stop the script (set -e); the two checks collect the models that miss them.
failed=()
for model in "${MODELS[@]}"; do
  run_model "$model"
done
echo
for model in "${MODELS[@]}"; do
  printf '\n== summary: %s (test accuracy, %s images)\n' "$model" "$IMAGES"
  cat "$ROOT/$model/summary.txt"
done
if (( ${#failed[@]} > 0 )); then
  echo "FAILED: $(printf '%s\n' "${failed[@]}" | sort -u | tr '\n' ' ')"
  exit 1
fi
echo "all checks passed: import = PyTorch within 1e-4, QAT within 0.5 pp of the float control, verify PASS"
