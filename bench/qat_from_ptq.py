#!/usr/bin/env python3
"""QAT started from PTQ checkpoints against QAT with its own IFMR calibration (issue 12), on
LeNet-5: for each calibration method, `qat calibrate` with Configs/retrain.json's layer rules,
`calibration.act_algo` set to the method and batch_num 4; then `qat train` (Configs/retrain.json,
2 epochs) from that checkpoint (`--init`, bounds not recalibrated) and, as the reference, from
the float checkpoint with its own IFMR calibration (batch_num 1), for each of five seeds.
Prints one markdown row per start: the test accuracy per seed, the mean and the mean paired
difference to the reference. Standard library only; run from the repository root after
`swift build -c release --product qat` (about 5 minutes on 2 cores).
"""
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


def main():
    work = tempfile.mkdtemp(prefix="qat-from-ptq-")
    starts = {"own IFMR calibration (batch_num 1)": None}
    with open("Configs/retrain.json") as f:
        base = json.load(f)
    for method in METHODS:
        config = dict(base, calibration={"act_algo": method}, batch_num=4)
        path = os.path.join(work, f"{method}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        checkpoint = os.path.join(work, f"ptq-{method}.h5")
        run("calibrate", "--config", path, "--output", checkpoint)
        starts[f"PTQ {method} (batch_num 4)"] = checkpoint
    results = {}
    for seed in SEEDS:
        for name, checkpoint in starts.items():
            arguments = ["train", "--config", "Configs/retrain.json", "--seed", str(seed),
                         "--checkpoint-dir", os.path.join(work, f"run-{len(results)}-{seed}")]
            if checkpoint:
                arguments += ["--init", checkpoint]
            results.setdefault(name, []).append(final_accuracy(run(*arguments)))
    reference = results["own IFMR calibration (batch_num 1)"]
    print("| start | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean | mean paired difference |")
    print("|---|" + "---|" * (len(SEEDS) + 2))
    for name, accuracies in results.items():
        difference = statistics.mean(a - r for a, r in zip(accuracies, reference))
        print(f"| {name} | " + " | ".join(f"{a:.2f} %" for a in accuracies)
              + f" | {statistics.mean(accuracies):.3f} % | {difference:+.3f} pp |")


if __name__ == "__main__":
    main()
