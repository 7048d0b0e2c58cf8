#!/usr/bin/env python3
"""PTQ accuracy table (issue 12): float vs `qat calibrate` for each calibration method and the
PTQ transforms, on LeNet-5, resnet-tiny and the two imported example networks; every result is
deployed and checked with `qat verify`. Prints a markdown table (docs/PTQ.md records one).

For each model: a float checkpoint (LeNet-5: the shipped one; resnet-tiny: one float epoch on
20,000 training images with Configs/float.json; the example networks: their ONNX weights as
imported), then `qat create-config` for the layer rules with a `calibration` section naming
act_algo, and `qat calibrate` on batch_num = 4 batches of 64. Rows: each method alone
(ifmr, hfmg, maxmin, percentile, entropy, mse), IFMR with --cle, --bias-correction, both, and
IFMR with DMQ (`dmq_balancer_param` 0.2, 0.5, 0.8 on every layer DMQ can run on: `qat plan`
names each layer it refuses, which the script then leaves without DMQ), and each Vitis AI config
of VITIS_CONFIGS (Configs/vitis, layer rules by type, so one file serves every model).
`--rows dmq` or `--rows vitis` runs only those rows.
LeNet-5 also gets QAT (one epoch of Configs/retrain.json) from the best PTQ checkpoint against
QAT with its own IFMR calibration. Standard library only; run from the repository root after
`swift build -c release --product qat` (make ptq-table).
"""
import argparse
import json
import os
import re
import subprocess
import sys

METHODS = ["ifmr", "hfmg", "maxmin", "percentile", "entropy", "mse"]
TRANSFORMS = [["--cle"], ["--bias-correction"], ["--cle", "--bias-correction"]]
DMQ_STRENGTHS = [0.2, 0.5, 0.8]
# (file in Configs/vitis, the row's label)
VITIS_CONFIGS = [("plain-maxmin", "maxmin"), ("plain-percentile", "percentile"), ("plain-entropy", "entropy"),
                 ("plain-mse", "mse"), ("plain-diffs", "diffs, power-of-two scales"),
                 ("plain-poweroftwo", "maxmin, power-of-two scales"), ("plain-std-round", "maxmin, round_mode std_round"),
                 ("plain-narrow-range", "maxmin, narrow_range"), ("plain-weights-mse", "maxmin, weights mse"),
                 ("int_config", "maxmin, biases on their own 8-bit grids"),
                 ("default", "DPU default: diffs + modal, power-of-two, narrow, quantized biases, CLE + bias correction"),
                 ("bfloat16_config", "bfloat16 cast layers")]


def run(qat, *arguments):
    result = subprocess.run([qat, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"qat {' '.join(arguments)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def accuracy(log, label):
    match = re.search(rf"^{re.escape(label)}\s+([0-9.]+)%", log, re.M)
    return float(match.group(1))


def float_checkpoint(qat, work, model):
    """(model spec or ONNX file, float checkpoint) of one model."""
    if model == "lenet5":
        return "Configs/models/lenet5.json", "Checkpoints/lenet5-float.h5"
    if model == "resnet-tiny":
        out = os.path.join(work, "resnet-tiny-float.h5")
        if not os.path.exists(out):
            run(qat, "train", "--config", "Configs/float.json", "--model", "Configs/models/resnet-tiny.json",
                "--epochs", "1", "--threads", "2", "--train-limit", "20000",
                "--checkpoint-dir", os.path.join(work, "resnet-tiny-float"), "--output", out)
        return "Configs/models/resnet-tiny.json", out
    folder = os.path.join(work, model)
    run(qat, "import", f"examples/onnx-models/{model}.onnx", "--output-dir", folder)
    stem = model.replace("-", "_")
    return os.path.join(folder, f"{stem}.json"), os.path.join(folder, f"{stem}-float.h5")


def config_for(qat, work, model, spec, method, dmq=None):
    rules = json.loads(run(qat, "create-config", "--model", spec))
    rules["calibration"] = {"act_algo": method}
    rules["batch_num"] = 4
    path = os.path.join(work, f"{model}-{method}" + (f"-dmq{dmq}" if dmq else "") + ".json")
    layers = [name for name, entry in rules.items() if isinstance(entry, dict) and "retrain_enable" in entry]
    for name in layers if dmq else []:
        rules[name]["dmq_balancer_param"] = dmq
    while True:
        with open(path, "w") as f:
            json.dump(rules, f, indent=2)
        if not dmq:
            return path
        # qat plan refuses one layer at a time ("conv1.dmq_balancer_param: DMQ cannot run on conv1: …").
        result = subprocess.run([qat, "plan", "--config", path, "--model", spec], capture_output=True, text=True)
        refused = re.search(r"(\S+)\.dmq_balancer_param: DMQ cannot run", result.stdout + result.stderr)
        if result.returncode == 0:
            return path
        if not refused or refused.group(1) not in rules:
            sys.exit(f"qat plan --config {path} failed:\n{result.stdout}{result.stderr}")
        del rules[refused.group(1)]["dmq_balancer_param"]


def ptq(qat, work, model, spec, checkpoint, method, transforms, dmq=None, config=None):
    """One row; `config` (a file) replaces the generated layer rules, and names the row's files."""
    name = f"{model}-" + (os.path.basename(config).removesuffix(".json") if config else method)
    name += "".join(t.replace("--", "-") for t in transforms) + (f"-dmq{dmq}" if dmq else "")
    output = os.path.join(work, name + ".h5")
    config = config or config_for(qat, work, model, spec, method, dmq)
    log = run(qat, "calibrate", "--config", config, "--model", spec, "--batch-num", "4",
              "--checkpoint", checkpoint, "--output", output, *transforms)
    balanced = re.findall(r"^DMQ on (\S+) ", log, re.M)
    deployed = os.path.join(work, name + "-int8.h5")
    run(qat, "deploy", "--checkpoint", output, "--output", deployed)
    verify = subprocess.run([qat, "verify", "--checkpoint", output, "--deploy", deployed], capture_output=True, text=True)
    int8 = re.search(r"INT8 ([0-9.]+)%", verify.stdout)
    return {"float": accuracy(log, "float"), "ptq": accuracy(log, "PTQ (fake)"),
            "int8": float(int8.group(1)) if int8 else None, "verify": "PASS" if verify.returncode == 0 else "FAIL",
            "checkpoint": output, "balanced": balanced}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qat", default=".build/release/qat")
    parser.add_argument("--work", default=".build/ptq-table")
    parser.add_argument("--models", default="lenet5,resnet-tiny,mobilenetv2-tiny,resnet18-tiny")
    parser.add_argument("--rows", choices=["all", "dmq", "vitis"], default="all")
    parser.add_argument("--vitis", help="comma-separated Configs/vitis files (without .json) for the Vitis rows; default all")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    print("| model | calibration | float | PTQ (fake quant) | INT8 engine | verify |")
    print("|---|---|---|---|---|---|")
    best = {}
    for model in args.models.split(","):
        spec, checkpoint = float_checkpoint(args.qat, args.work, model)
        rows = []
        if args.rows == "all":
            rows += [(method, [], None, None) for method in METHODS] + [("ifmr", t, None, None) for t in TRANSFORMS]
        if args.rows in ("all", "dmq"):
            rows += [("ifmr", [], strength, None) for strength in DMQ_STRENGTHS]
        if args.rows in ("all", "vitis"):
            chosen = args.vitis.split(",") if args.vitis else [file for file, _ in VITIS_CONFIGS]
            rows += [(label, [], None, f"Configs/vitis/{file}.json") for file, label in VITIS_CONFIGS if file in chosen]
        for method, transforms, dmq, config in rows:
            r = ptq(args.qat, args.work, model, spec, checkpoint, method, transforms, dmq, config)
            label = method + "".join(" " + t for t in transforms)
            if dmq:
                label += f" + DMQ α {dmq} ({len(r['balanced'])} layer(s): {', '.join(r['balanced'])})"
            if config:
                label += f" ({config})"
            int8 = f"{r['int8']:.2f} %" if r["int8"] is not None else "–"
            print(f"| {model} | {label} | {r['float']:.2f} % | {r['ptq']:.2f} % | {int8} | {r['verify']} |", flush=True)
            if model not in best or r["ptq"] > best[model][0]:
                best[model] = (r["ptq"], label, r["checkpoint"])
    if "lenet5" in best and args.rows == "all":
        # QAT from the best PTQ checkpoint against QAT with its own IFMR calibration, same budget.
        _, label, start = best["lenet5"]
        common = ["--config", "Configs/retrain.json", "--epochs", "1"]
        own = run(args.qat, "train", *common, "--checkpoint-dir", os.path.join(args.work, "qat-ifmr"),
                  "--output", os.path.join(args.work, "qat-ifmr.h5"))
        fromptq = run(args.qat, "train", *common, "--init", start, "--checkpoint-dir", os.path.join(args.work, "qat-ptq"),
                      "--output", os.path.join(args.work, "qat-ptq.h5"))
        pick = lambda log: re.findall(r"test acc\s+([0-9.]+)%", log)[-1]
        print(f"\nLeNet-5 QAT, one epoch of Configs/retrain.json: from its own IFMR calibration {pick(own)} %, "
              f"from the PTQ checkpoint ({label}) {pick(fromptq)} %")


if __name__ == "__main__":
    main()
