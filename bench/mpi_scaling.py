#!/usr/bin/env python3
"""Data-parallel scaling of QAT training (issue 13), for `make bench`.

Measures qat-bench's train-qat img/s for 1 rank x 1 thread, 1 rank x 2 threads and 2 ranks x
1 thread (mpirun on loopback), in interleaved rounds (the machine is shared: ratios, medians),
then one profiled 2-rank run per model for the allreduce time per step and the bytes summed per
step, and prints a model of the speed-up on K machines:

    step(K) = compute(1) / K + sum(K),  sum(K) = (K - 1) * (latency + bytes / bandwidth)

(each rank gathers every other rank's gradients and adds them in rank order, MPI.swift). The
latency and bandwidth measured here are loopback's; put a network's in for real machines.

Each round also times the ceiling of 2 ranks on this machine without MPI: two independent
1-thread qat-bench processes, pinned to cores 0 and 1 as mpirun binds the ranks, each training
on batches of 32 (a rank's shard) at the same time; their img/s added. What 2 ranks lose
against that ceiling is the exchange and the waiting; what the ceiling loses against twice one
process alone is the two cores' shared resources (caches, memory, clock).
Standard library only. Run from the repository root after
`swift build -c release --product qat-bench`.
"""
import argparse
import json
import re
import statistics
import subprocess

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def measure(bench, model, ranks, threads, images):
    command = [bench, "--model", model, "--mode", "train-qat", "--threads", str(threads),
               "--images", str(images), "--json"]
    if ranks > 1:
        command = MPIRUN + ["-np", str(ranks)] + command
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next(l for l in output.splitlines() if l.startswith("{"))
    return json.loads(line)


def corun(bench, model, images):
    """Two independent 1-thread processes on batches of 32, pinned to cores 0 and 1, at once."""
    command = [bench, "--model", model, "--mode", "train-qat", "--threads", "1", "--batch", "32",
               "--images", str(images // 2), "--json"]
    runs = [subprocess.Popen(["taskset", "-c", str(core)] + command, stdout=subprocess.PIPE, text=True)
            for core in (0, 1)]
    rates = []
    for run in runs:
        output, _ = run.communicate()
        rates.append(json.loads(next(l for l in output.splitlines() if l.startswith("{")))["img_s"])
    return sum(rates)


def profile(bench, model, images):
    """Rank 0's allreduce ms per step and the bytes summed per step, from a --profile run."""
    command = MPIRUN + ["-np", "2", bench, "--model", model, "--mode", "train-qat", "--threads", "1",
                        "--images", str(images), "--profile"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    row = re.search(r"^allreduce\s+([0-9.]+)", output, re.M)
    summed = re.search(r"\((\d+) bytes\) summed per step", output)
    return (float(row.group(1)) if row else float("nan"), int(summed.group(1)) if summed else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default=".build/release/qat-bench")
    parser.add_argument("--model", action="append", help="default: lenet5 and resnet-tiny")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, help="training images per measurement (batch 64); default "
                        "25,600 for lenet5 (its steps are 2-3 ms: shorter passes measure process jitter) "
                        "and 6,400 for the others")
    args = parser.parse_args()
    configurations = [(1, 1), (1, 2), (2, 1)]   # (ranks, threads per rank)
    for model in args.model or ["lenet5", "resnet-tiny"]:
        images = args.images or (25600 if model == "lenet5" else 6400)
        rates = {c: [] for c in configurations}
        ceiling = []
        for round in range(args.rounds):
            order = configurations if round % 2 == 0 else list(reversed(configurations))
            for ranks, threads in order:
                rates[(ranks, threads)].append(measure(args.bench, model, ranks, threads, images)["img_s"])
            ceiling.append(corun(args.bench, model, images))
        median = {c: statistics.median(v) for c, v in rates.items()}
        base = median[(1, 1)]
        print(f"{model} train-qat, batch 64, {images} images, median of {args.rounds} interleaved rounds:")
        for (ranks, threads), rate in median.items():
            print(f"  {ranks} rank(s) x {threads} thread(s): {rate:8.0f} img/s  {rate / base:5.2f}x of 1 x 1"
                  f"   (rounds: {', '.join(f'{r:.0f}' for r in rates[(ranks, threads)])})")
        print(f"  ceiling, 2 independent processes x 1 thread on batches of 32 at once: "
              f"{statistics.median(ceiling):8.0f} img/s  {statistics.median(ceiling) / base:5.2f}x of 1 x 1"
              f"   (rounds: {', '.join(f'{r:.0f}' for r in ceiling)})")
        target = "meets" if median[(2, 1)] >= 1.7 * base else "misses"
        print(f"  2 ranks x 1 thread against 1 rank x 2 threads: {median[(2, 1)] / median[(1, 2)]:.2f}x; "
              f"{target} the target 2 x 1 >= 1.7 x (1 x 1)")
        sum_ms, summed_bytes = profile(args.bench, model, images)
        step_ms = 64 / base * 1000
        print(f"  allreduce (2 ranks, loopback): {sum_ms:.3f} ms per step, {summed_bytes} bytes per rank per step "
              f"(step of 1 x 1: {step_ms:.2f} ms)")
        print("  model, K machines of 1 rank x 1 thread: speed-up(K) = K * step / (step + K * sum(K)),")
        print("  sum(K) = (K - 1) * (latency + bytes / bandwidth); with loopback's measured sum(2) for one peer:")
        for k in (2, 4, 8, 16):
            sum_k = (k - 1) * sum_ms
            print(f"    K = {k:2d}: {k * step_ms / (step_ms + k * sum_k):5.2f}x")


if __name__ == "__main__":
    main()
