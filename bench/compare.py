"""qat against PyTorch eager and ONNX Runtime, pairs interleaved (issue 15's bench harness).

    python3 bench/compare.py                      # all models, 5 pairs (make bench runs this)
    python3 bench/compare.py --quick              # 1 pair, few images: a smoke run
    .venv-torch/bin/python bench/compare.py --model mobilenetv2-tiny --mode train-qat --pairs 7

Standard library only. Each measurement is a fresh process: ours is
`.build/release/qat-bench --json --model M --mode MODE --threads T`, the peer's is
`bench/pytorch_peers.py --model M --mode PEER_MODE --threads T` run with the venv's python
(`.venv-torch/bin/python`, `--peer-python`). For every (model, mode, threads) a pair is one
measurement of ours and one of each peer mode, back to back; the order within a pair
alternates from pair to pair, and the pairs of all combinations are interleaved round by round,
so that a pair's two sides ran under the same load. The table gives the medians over the pairs
and the median of the per-pair ratios (ours / peer), of img/s and of peak RSS (peer / ours).

Modes (ours → peers): train-float → PyTorch train-float; train-qat → PyTorch train-qat (and
train-qat-frozen-input with --frozen-input); infer-int8 → PyTorch x86 INT8 and ONNX Runtime
INT8 (the ratio against the faster of the two in each pair is the "best peer" row);
infer-float (not by default) → ONNX Runtime float.

Beside them (not in the "best peer" row): ONNX Runtime INT8 on OUR QDQ export of the model
(`qat export` of a short QAT run, made once per model before the measurements:
infer-int8-ort-qat-export), for every model in the infer-int8 mode; --no-ort-export leaves it out.
It needs the release `qat` (built here if missing).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import pytorch_peers  # noqa: E402  (stdlib only at import time; torch only in its children)

MODELS = pytorch_peers.MODELS
PEER_MODES = {
    "train-float": ["train-float"],
    "train-qat": ["train-qat"],
    "infer-int8": ["infer-int8-torch", "infer-int8-ort"],
    "infer-float": ["infer-float-ort"],
}
DEFAULT_MODES = ["train-float", "train-qat", "infer-int8"]
# ONNX Runtime on qat export's QDQ model: a row of its own beside infer-int8's peers.
OUR_EXPORT = "infer-int8-ort-qat-export"


def last_json_line(text):
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def run_measurement(command, env=None):
    """Runs one measurement process; returns its JSON line, or {"error": ...}."""
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = last_json_line(result.stdout) if result.returncode == 0 else None
    if line is None or "error" in line:
        reason = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
        return {"error": reason, "command": " ".join(command)}
    line["wall_seconds"] = round(time.time() - started, 2)
    return line


def our_command(args, model, mode, threads):
    command = [args.qat_bench, "--json", "--model", model, "--mode", mode,
               "--threads", str(threads), "--max-seconds", str(args.max_seconds)]
    images = args.images if mode.startswith("train") else args.infer_images
    if images:
        command += ["--images", str(images)]
    return command


def peer_modes_of(args, model, mode):
    modes = list(PEER_MODES[mode])
    if mode == "train-qat" and args.frozen_input:
        modes.append("train-qat-frozen-input")
    if mode == "infer-int8" and model in args.qdq_models:
        modes.append(OUR_EXPORT)
    return modes


def prepare_our_exports(args):
    """qat export's QDQ model of each model (a short QAT run first), once; a model whose export
    fails is measured without it, and the reason is printed."""
    args.qdq_models = {}
    if not args.ort_export or "infer-int8" not in args.mode:
        return
    if not os.access(args.qat, os.X_OK):
        subprocess.run(["swift", "build", "-c", "release", "--product", "qat"], cwd=ROOT, check=True)
    folder = os.path.join(ROOT, ".build", "bench-ort-export")
    for model in args.model:
        try:
            args.qdq_models[model] = pytorch_peers.export_our_qdq(model, args.qat, folder)
            print(f"our QDQ export of {model}: {args.qdq_models[model]}", file=sys.stderr, flush=True)
        except subprocess.CalledProcessError as error:
            reason = (error.stderr or b"").decode().strip().splitlines() or [str(error)]
            print(f"no ORT run of our QDQ export of {model}: {reason[-1]}", file=sys.stderr, flush=True)


def peer_command(args, model, peer_mode, threads):
    command = [args.peer_python, os.path.join(HERE, "pytorch_peers.py"), "--model", model,
               "--mode", peer_mode, "--threads", str(threads), "--max-seconds", str(args.max_seconds)]
    if peer_mode == OUR_EXPORT:
        command += ["--qdq-model", args.qdq_models[model]]
    if args.images:
        command += ["--images", str(args.images)]
    if args.infer_images:
        command += ["--infer-images", str(args.infer_images)]
    return command


def median(values):
    return statistics.median(values) if values else None


def summarise(measurements, args):
    """Per (model, mode, threads, peer mode): medians and median per-pair ratios."""
    by_key = {}
    for m in measurements:
        by_key.setdefault((m["model"], m["mode"], m["threads"], m["side"], m["pair"]), m)
    rows = []
    for model in args.model:
        for mode in args.mode:
            for threads in args.threads:
                peer_modes = peer_modes_of(args, model, mode)
                ours = [by_key.get((model, mode, threads, "qat", p)) for p in range(args.pairs)]
                peers = {pm: [by_key.get((model, mode, threads, pm, p)) for p in range(args.pairs)]
                         for pm in peer_modes}
                best_of = [pm for pm in peer_modes if pm != OUR_EXPORT]
                if len(best_of) > 1 and mode == "infer-int8":
                    best = []
                    for p in range(args.pairs):
                        candidates = [peers[pm][p] for pm in best_of
                                      if peers[pm][p] and "error" not in peers[pm][p]]
                        best.append(max(candidates, key=lambda m: m["img_s"]) if candidates else None)
                    peers["best of " + " / ".join(best_of)] = best
                for peer_mode, theirs in peers.items():
                    pairs = [(o, t) for o, t in zip(ours, theirs)
                             if o and t and "error" not in o and "error" not in t]
                    row = {"model": model, "mode": mode, "threads": threads, "peer_mode": peer_mode,
                           "pairs": len(pairs)}
                    if pairs:
                        row.update({
                            "qat_img_s": round(median([o["img_s"] for o, _ in pairs]), 1),
                            "peer_img_s": round(median([t["img_s"] for _, t in pairs]), 1),
                            "ratio": round(median([o["img_s"] / t["img_s"] for o, t in pairs]), 3),
                            "qat_peak_rss_mb": round(median([o["peak_rss_mb"] for o, _ in pairs]), 1),
                            "peer_peak_rss_mb": round(median([t["peak_rss_mb"] for _, t in pairs]), 1),
                            "rss_ratio": round(median([t["peak_rss_mb"] / o["peak_rss_mb"] for o, t in pairs]), 2),
                            "load_1min": [min(m["load_1min"] for p in pairs for m in p),
                                          max(m["load_1min"] for p in pairs for m in p)],
                        })
                    rows.append(row)
    return rows


def step_ratios(measurements, args):
    """QAT step / float step of each side: per pair, float img/s over QAT img/s, then the median."""
    if not {"train-float", "train-qat"} <= set(args.mode):
        return []
    index = {(m["model"], m["mode"], m["threads"], m["side"], m["pair"]): m for m in measurements
             if "error" not in m}
    rows = []
    sides = [("qat", "train-float", "train-qat"), ("pytorch", "train-float", "train-qat")]
    if args.frozen_input:
        sides.append(("pytorch frozen input", "train-float", "train-qat-frozen-input"))
    for model in args.model:
        for threads in args.threads:
            row = {"model": model, "threads": threads}
            for name, float_side, qat_side in sides:
                ratios = []
                for p in range(args.pairs):
                    if name == "qat":
                        f = index.get((model, "train-float", threads, "qat", p))
                        q = index.get((model, "train-qat", threads, "qat", p))
                    else:
                        f = index.get((model, "train-float", threads, float_side, p))
                        q = index.get((model, "train-qat", threads, qat_side, p))
                    if f and q:
                        ratios.append(f["img_s"] / q["img_s"])
                row[name] = round(median(ratios), 2) if ratios else None
            rows.append(row)
    return rows


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def print_tables(rows, ratios, args):
    print(f"\n{args.pairs} pair(s) per row; medians; ratio = median over pairs of qat / peer img/s; "
          "RSS ratio = median of peer / qat peak RSS")
    print("| model | mode | threads | qat img/s | peer | peer img/s | ratio | qat RSS MB | peer RSS MB | RSS ratio | load 1 min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        load = r.get("load_1min")
        print(f"| {r['model']} | {r['mode']} | {r['threads']} | {fmt(r.get('qat_img_s'))} | {r['peer_mode']} | "
              f"{fmt(r.get('peer_img_s'))} | {fmt(r.get('ratio'), 2)}× | {fmt(r.get('qat_peak_rss_mb'))} | "
              f"{fmt(r.get('peer_peak_rss_mb'))} | {fmt(r.get('rss_ratio'), 1)}× | "
              f"{'–' if not load else f'{load[0]:.1f}–{load[1]:.1f}'} |")
    if ratios:
        names = [k for k in ratios[0] if k not in ("model", "threads")]
        print("\nQAT step / float step (median over pairs of float img/s / QAT img/s)")
        print("| model | threads | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for r in ratios:
            print(f"| {r['model']} | {r['threads']} | " + " | ".join(
                f"{fmt(r[n], 2)}×" if r[n] else "–" for n in names) + " |")


def main():
    parser = argparse.ArgumentParser(description="qat vs PyTorch eager / ONNX Runtime, interleaved pairs.")
    parser.add_argument("--model", action="append", choices=MODELS, help="repeatable; default all")
    parser.add_argument("--mode", action="append", choices=list(PEER_MODES),
                        help="repeatable; default " + ", ".join(DEFAULT_MODES))
    parser.add_argument("--threads", action="append", type=int, help="repeatable; default 1 and 2")
    parser.add_argument("--pairs", type=int, default=5, help="pairs per (model, mode, threads); default 5")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 pair, 640 training / 512 inference images")
    parser.add_argument("--images", type=int, help="training images per timed pass (default per model)")
    parser.add_argument("--infer-images", type=int, help="test images per timed inference run")
    parser.add_argument("--max-seconds", type=float, default=6.0,
                        help="end a timed pass early after this long, on both sides (default 6)")
    parser.add_argument("--frozen-input", action="store_true",
                        help="also pair train-qat with PyTorch's train-qat-frozen-input")
    parser.add_argument("--no-ort-export", dest="ort_export", action="store_false",
                        help="leave out ONNX Runtime on our own QDQ export (" + OUR_EXPORT + ")")
    parser.add_argument("--qat", default=os.path.join(ROOT, ".build", "release", "qat"),
                        help="the qat binary that makes the QDQ exports")
    parser.add_argument("--qat-bench", default=os.path.join(ROOT, ".build", "release", "qat-bench"))
    parser.add_argument("--peer-python", default=os.path.join(ROOT, ".venv-torch", "bin", "python"))
    parser.add_argument("--json", metavar="FILE",
                        help="also write every measurement and the summary to FILE ('-': stdout, no table)")
    parser.add_argument("--raw", metavar="FILE",
                        help="append each measurement to FILE as a JSON line as soon as it is made")
    parser.add_argument("--from", dest="from_file", metavar="FILE",
                        help="measure nothing: summarise the JSON lines of an earlier --raw FILE")
    args = parser.parse_args()
    if args.quick:
        args.pairs = 1
        args.images = args.images or 640
        args.infer_images = args.infer_images or 512
    args.model = args.model or MODELS
    args.mode = args.mode or DEFAULT_MODES
    args.threads = args.threads or [1, 2]
    if args.from_file:
        with open(args.from_file) as f:
            measurements = [json.loads(line) for line in f if line.startswith("{")]
        args.pairs = max(m["pair"] for m in measurements) + 1
        args.model = [m for m in MODELS if any(x["model"] == m for x in measurements)]
        args.mode = [m for m in PEER_MODES if any(x["mode"] == m for x in measurements)]
        args.threads = sorted({x["threads"] for x in measurements})
        args.frozen_input = any(x["side"] == "train-qat-frozen-input" for x in measurements)
        args.qdq_models = {x["model"]: None for x in measurements if x["side"] == OUR_EXPORT}
        report(measurements, args, time.time())
        return
    for path, what in ((args.qat_bench, "qat-bench (swift build -c release --product qat-bench)"),
                       (args.peer_python, "the peers' python (make venv-torch)")):
        if not os.access(path, os.X_OK):
            sys.exit(f"compare.py: {path}: not found or not executable: {what}")
    pytorch_peers.write_vgg_spec()
    prepare_our_exports(args)

    measurements = []
    total = args.pairs * len(args.threads) * sum(
        1 + len(peer_modes_of(args, model, m)) for model in args.model for m in args.mode)
    started = time.time()
    for pair in range(args.pairs):
        for model in args.model:
            for threads in args.threads:
                for mode in args.mode:
                    peer_modes = peer_modes_of(args, model, mode)
                    sides = [("qat", our_command(args, model, mode, threads))] + [
                        (pm, peer_command(args, model, pm, threads)) for pm in peer_modes]
                    if pair % 2 == 1:
                        sides.reverse()
                    for side, command in sides:
                        line = run_measurement(command)
                        line.update({"side": side, "pair": pair, "model": model, "mode": mode,
                                     "threads": threads})
                        measurements.append(line)
                        if args.raw:
                            with open(args.raw, "a") as f:
                                f.write(json.dumps(line) + "\n")
                        shown = (f"ERROR {line['error']}" if "error" in line
                                 else f"{line['img_s']:,.0f} img/s, {line['peak_rss_mb']:.0f} MB, "
                                      f"load {line['load_1min']:.1f}")
                        print(f"[{len(measurements)}/{total} {time.time() - started:5.0f} s] pair {pair + 1} "
                              f"{model} {mode} {threads}t {side}: {shown}", file=sys.stderr, flush=True)
    report(measurements, args, started)


def report(measurements, args, started):
    failures = sum("error" in m for m in measurements)
    rows, ratios = summarise(measurements, args), step_ratios(measurements, args)
    if args.json:
        document = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
                    "measurements": measurements, "summary": rows, "qat_over_float_step": ratios}
        if args.json == "-":
            json.dump(document, sys.stdout, indent=1)
            print()
        else:
            with open(args.json, "w") as f:
                json.dump(document, f, indent=1)
    if args.json != "-":
        print_tables(rows, ratios, args)
    print(f"{len(measurements)} measurements in {time.time() - started:.0f} s, {failures} failed",
          file=sys.stderr)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
