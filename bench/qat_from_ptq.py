#!/usr/bin/env python3
"""QAT started from PTQ checkpoints against QAT with its own IFMR calibration (issue 12), on
LeNet-5: for each calibration method, `qat calibrate` with Configs/retrain.json's layer rules,
`calibration.act_algo` set to the method and batch_num 4; then `qat train` (Configs/retrain.json,
2 epochs) from that checkpoint (`--init`, bounds not recalibrated) and, as the reference, from
the float checkpoint with its own IFMR calibration (batch_num 1), for each of five seeds.
Prints one markdown row per start: the test accuracy per seed, the mean and the mean paired
difference to the reference. Standard library only; run from the repository root after
`swift build -c release --product qat` (about 5 minutes on 2 cores).

`--model resnet-tiny` does the same on resnet-tiny, from the float checkpoint bench/ptq_table.py
makes (.build/ptq-table/resnet-tiny-float.h5: one float epoch on 20,000 images), with
`qat create-config`'s layer rules, one QAT epoch (SGD, learning rate 0.002, momentum 0.9) on
`--train-limit` images, and the starts given by `--methods` (default: ifmr, and entropy, the
method that loses most there).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

METHODS = ["ifmr", "hfmg", "maxmin", "percentile", "entropy", "mse"]
SEEDS = [1, 2, 3, 4, 5]
QAT = ".build/release/qat"


def run(*arguments):
    result = subprocess.run([QAT, *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"qat {' '.join(arguments)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def final_accuracy(log):
    return float(re.findall(r"test acc ([0-9.]+)%", log)[-1])


def retrain_config(model, work):
    """(path of the QAT config, extra `qat train` arguments) for one model."""
    if model == "lenet5":
        return "Configs/retrain.json", []
    float_checkpoint = ".build/ptq-table/resnet-tiny-float.h5"
    if not os.path.exists(float_checkpoint):
        sys.exit(f"{float_checkpoint} is missing: run python3 bench/ptq_table.py --models resnet-tiny first")
    spec = "Configs/models/resnet-tiny.json"
    config = json.loads(run("create-config", "--model", spec))
    config.update(model={"spec": spec, "init": float_checkpoint},
                  data={"path": "/usr/share/datasets/fashion-mnist"},
                  train={"epochs": 1, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.002,
                         "momentum": 0.9, "seed": 1})
    path = os.path.join(work, "retrain.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path, ["--model", spec]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["lenet5", "resnet-tiny"], default="lenet5")
    parser.add_argument("--methods", help="comma-separated (default: all six on lenet5; ifmr,entropy on resnet-tiny)")
    parser.add_argument("--seeds", type=int, default=len(SEEDS))
    parser.add_argument("--train-limit", type=int, help="training images per epoch (default: all)")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else (METHODS if args.model == "lenet5" else ["ifmr", "entropy"])
    seeds = list(range(1, args.seeds + 1))
    work = tempfile.mkdtemp(prefix="qat-from-ptq-")
    retrain, model_arguments = retrain_config(args.model, work)
    limit = ["--train-limit", str(args.train_limit)] if args.train_limit else []
    starts = {"own IFMR calibration (batch_num 1)": None}
    with open(retrain) as f:
        base = json.load(f)
    for method in methods:
        config = dict(base, calibration={"act_algo": method}, batch_num=4)
        path = os.path.join(work, f"{method}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        checkpoint = os.path.join(work, f"ptq-{method}.h5")
        log = run("calibrate", "--config", path, *model_arguments, "--output", checkpoint)
        ptq = re.search(r"^PTQ \(fake\)\s+([0-9.]+)%", log, re.M).group(1)
        starts[f"PTQ {method} (batch_num 4, PTQ {ptq} %)"] = checkpoint
    results = {}
    for seed in seeds:
        for name, checkpoint in starts.items():
            arguments = ["train", "--config", retrain, *model_arguments, *limit, "--seed", str(seed),
                         "--checkpoint-dir", os.path.join(work, f"run-{len(results)}-{seed}")]
            if checkpoint:
                arguments += ["--init", checkpoint]
            results.setdefault(name, []).append(final_accuracy(run(*arguments)))
    reference = results["own IFMR calibration (batch_num 1)"]
    print("| start | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | mean paired difference |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for name, accuracies in results.items():
        difference = statistics.mean(a - r for a, r in zip(accuracies, reference))
        print(f"| {name} | " + " | ".join(f"{a:.2f} %" for a in accuracies)
              + f" | {statistics.mean(accuracies):.3f} % | {difference:+.3f} pp |")


if __name__ == "__main__":
    main()
