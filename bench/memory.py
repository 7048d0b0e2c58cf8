"""Peak RSS of training, qat against PyTorch eager (issue 15's memory target), side by side.

    python3 bench/memory.py                        # all models, 3 rounds (make bench runs this)
    python3 bench/memory.py --model vgg-small --rounds 1

For every model and round, three fresh processes back to back, in an order that rotates from
round to round: qat-bench with the training split in memory (the IDX files as uint8, as
PyTorch's torchvision dataset holds it), qat-bench streaming the same images from an HDF5 copy
(`--train-data`, `in_memory: false`: memory that does not grow with the dataset), and
bench/pytorch_peers.py (float training, 1 thread, batch 64, the same image count). The HDF5 copy
is written once by `qat-bench --write-train-data` (a process of its own). Prints the medians
and PyTorch ÷ qat for both qat rows; --json FILE writes every measurement.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from compare import run_measurement  # noqa: E402
import pytorch_peers  # noqa: E402

SIDES = ["qat in memory", "qat streamed", "PyTorch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=pytorch_peers.MODELS)
    parser.add_argument("--mode", default="train-float", choices=["train-float", "train-qat"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1280, help="training images per run")
    parser.add_argument("--qat-bench", default=os.path.join(ROOT, ".build/release/qat-bench"))
    parser.add_argument("--peer-python", default=os.path.join(ROOT, ".venv-torch/bin/python"))
    parser.add_argument("--train-copy", default=os.path.join(ROOT, ".build/bench-data/fashion-train.h5"))
    parser.add_argument("--json", help="write every measurement to this file")
    args = parser.parse_args()
    models = args.model or pytorch_peers.MODELS
    has_peer = os.path.exists(args.peer_python)
    if not os.path.exists(args.train_copy):
        os.makedirs(os.path.dirname(args.train_copy), exist_ok=True)
        subprocess.run([args.qat_bench, "--write-train-data", args.train_copy], cwd=ROOT, check=True)

    def command(side, model):
        if side == "PyTorch":
            return [args.peer_python, os.path.join(HERE, "pytorch_peers.py"), "--model", model, "--mode", args.mode,
                    "--threads", "1", "--images", str(args.images)]
        base = [args.qat_bench, "--json", "--model", model, "--mode", args.mode, "--threads", "1",
                "--images", str(args.images)]
        return base + (["--train-data", args.train_copy] if side == "qat streamed" else [])

    sides = SIDES if has_peer else SIDES[:2]
    results = {model: {side: [] for side in sides} for model in models}
    lines = []
    for round_index in range(args.rounds):
        for model in models:
            order = sides[round_index % len(sides):] + sides[:round_index % len(sides)]
            for side in order:
                line = run_measurement(command(side, model))
                line.update({"side": side, "round": round_index})
                lines.append(line)
                if "error" in line:
                    print(f"{model} {side}: {line['error']}", file=sys.stderr)
                else:
                    results[model][side].append(line["peak_rss_mb"])
    print(f"peak RSS (MB) of {args.mode}, 1 thread, batch 64, {args.images} images; medians of {args.rounds} rounds")
    header = "| model | qat, data in memory | qat, data streamed |"
    header += " PyTorch | PyTorch ÷ qat (in memory) | PyTorch ÷ qat (streamed) |" if has_peer else ""
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for model in models:
        median = {side: statistics.median(values) if values else None for side, values in results[model].items()}
        row = f"| {model} | {median['qat in memory']} | {median['qat streamed']} |"
        if has_peer and median["PyTorch"]:
            row += (f" {median['PyTorch']} | {median['PyTorch'] / median['qat in memory']:.2f}× |"
                    f" {median['PyTorch'] / median['qat streamed']:.2f}× |")
        print(row)
    if not has_peer:
        print(f"(no PyTorch side: {args.peer_python} is missing; make venv-torch)")
    if args.json:
        with open(args.json, "w") as out:
            for line in lines:
                out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
