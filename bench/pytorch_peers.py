"""PyTorch eager and ONNX Runtime figures on this CPU, the peers of `make bench` (issue 15).

    make bench-peers                          (creates .venv-torch if missing, runs everything)
    .venv-torch/bin/python bench/pytorch_peers.py --model resnet-tiny --mode train-float --threads 1

Prints one JSON line per measurement on stdout (progress goes to stderr):
    {"peer": "pytorch", "model": "lenet5", "mode": "train-float", "threads": 1, "batch": 64,
     "images": 20000, "seconds": 1.9, "img_s": 10500.0, "peak_rss_mb": 410.2, "versions": {...}}
Each measurement runs in a fresh child process so that its peak RSS is its own (ru_maxrss of
the child: torch, the dataset and the run, as a user's training script would have).

Modes:
  train-float              SGD (lr 0.05, momentum 0.9, weight decay 5e-4), batch 64, one full
                           pass over --images training images (or as many steps as fit in
                           --max-seconds), timed end to end including the data pipeline
                           (shuffle, uint8 -> normalised float batch), after 5 warm-up steps
  train-qat                the same on the model after fuse_modules_qat + prepare_qat with
                           get_default_qat_qconfig("x86") (fake quant of weights and activations)
  train-qat-frozen-input   train-qat with the model input's fake quantizer frozen after the
                           warm-up (disable_observer), as qat's `learn_clip: false` freezes ours
  infer-int8-torch         fuse_modules + prepare + calibrate (1024 training images) + convert
                           with the x86 (fbgemm) engine; batch 256 over --infer-images test
                           images already normalised (the data pipeline is not timed)
  infer-int8-ort           ONNX Runtime on a static-quantized (QDQ, per-channel int8 weights,
                           uint8 activations) ONNX model from quantize_static, same batches; if
                           quantization fails the float model is measured and the line says so
  infer-float-ort          ONNX Runtime on the float ONNX model, same batches
  infer-int8-ort-qat-export  ONNX Runtime on OUR QDQ export (`qat export` of a QAT checkpoint,
                           docs/DEPLOY-FORMAT.md "ONNX"), same batches: --qdq-model FILE, made by
                           export_our_qdq (bench/compare.py does it once per model)

Models: lenet5 and resnet-tiny (Configs/models/*.json), vgg-small (bench/models/vgg-small.json,
written from VGG_SMALL below), and the two example networks of examples/onnx-models. Weights
are freshly initialised (seeded): speed does not depend on them.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "onnx-models"))

MODELS = ["lenet5", "resnet-tiny", "vgg-small", "mobilenetv2-tiny", "resnet18-tiny"]
MODES = ["train-float", "train-qat", "train-qat-frozen-input",
         "infer-int8-torch", "infer-int8-ort", "infer-float-ort", "infer-int8-ort-qat-export"]
SPEC_FILES = {
    "lenet5": os.path.join(ROOT, "Configs", "models", "lenet5.json"),
    "resnet-tiny": os.path.join(ROOT, "Configs", "models", "resnet-tiny.json"),
    "vgg-small": os.path.join(ROOT, "bench", "models", "vgg-small.json"),
}
# Training images per timed pass: about 5 s of PyTorch float training each on this machine kind.
TRAIN_IMAGES = {"lenet5": 20000, "resnet-tiny": 20000, "vgg-small": 2560,
                "mobilenetv2-tiny": 5120, "resnet18-tiny": 10240}
INFER_IMAGES = {"lenet5": 10000, "resnet-tiny": 10000, "vgg-small": 2560,
                "mobilenetv2-tiny": 5120, "resnet18-tiny": 10000}
TRAIN_BATCH, INFER_BATCH, WARMUP_STEPS = 64, 256, 5


def _conv(name, cin, cout):
    return {"name": name, "type": "conv2d", "in_channels": cin, "out_channels": cout,
            "kernel_size": 3, "padding": 1, "bias": False}


def _bn_relu(prefix, channels):
    return [{"name": f"{prefix}_bn", "type": "batchnorm2d", "num_features": channels},
            {"name": f"{prefix}_relu", "type": "relu"}]


# The VGG-style CNN of issue 15: 32-128 channels, 3x3 pad 1, BN, ReLU, max pool, in qat's model
# spec format (docs/CONFIG.md). 28 -> 14 -> 7 -> global 7x7 average -> 10 classes.
VGG_SMALL = {
    "name": "vgg-small",
    "input": [1, 28, 28],
    "layers": [
        _conv("conv1", 1, 32), *_bn_relu("conv1", 32),
        _conv("conv2", 32, 32), *_bn_relu("conv2", 32),
        {"name": "pool1", "type": "maxpool2d", "kernel_size": 2},
        _conv("conv3", 32, 64), *_bn_relu("conv3", 64),
        _conv("conv4", 64, 64), *_bn_relu("conv4", 64),
        {"name": "pool2", "type": "maxpool2d", "kernel_size": 2},
        _conv("conv5", 64, 128), *_bn_relu("conv5", 128),
        _conv("conv6", 128, 128), *_bn_relu("conv6", 128),
        {"name": "pool3", "type": "avgpool2d", "kernel_size": 7},
        {"name": "flatten", "type": "flatten"},
        {"name": "fc", "type": "linear", "in_features": 128, "out_features": 10},
    ],
}


def write_vgg_spec():
    """bench/models/vgg-small.json, one layer a line as Configs/models/*.json."""
    lines = [json.dumps(layer) for layer in VGG_SMALL["layers"]]
    text = ('{\n  "name": "vgg-small",\n  "input": [1, 28, 28],\n  "layers": [\n    '
            + ",\n    ".join(lines) + "\n  ]\n}\n")
    path = SPEC_FILES["vgg-small"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def export_our_qdq(model, qat, folder, data="/usr/share/datasets/fashion-mnist"):
    """`qat export`'s QDQ model of `model` after a short QAT run (1 epoch on 256 images; speed
    does not depend on the weights): the examples are imported first and trained from the
    import, the specs from a seeded initialisation. Returns the .onnx path. Standard library only."""
    def run(*command):
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    out = os.path.join(folder, model)
    os.makedirs(out, exist_ok=True)
    init = []
    spec = SPEC_FILES.get(model)
    if spec is None:
        run(qat, "import", os.path.join(ROOT, "examples", "onnx-models", model + ".onnx"), "--output-dir", out)
        stem = model.replace("-", "_")
        spec, init = os.path.join(out, stem + ".json"), ["--init", os.path.join(out, stem + "-float.h5")]
    rules = os.path.join(out, "rules.json")
    run(qat, "create-config", "--model", spec, "--output", rules)
    config = {"data": {"path": data},
              "train": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.001,
                        "momentum": 0.9, "seed": 1, "threads": 2}}
    with open(rules) as f:
        config.update(json.load(f))
    with open(os.path.join(out, "qat.json"), "w") as f:
        json.dump(config, f)
    run(qat, "train", "--config", os.path.join(out, "qat.json"), "--model", spec, *init, "--train-limit", "256",
        "--test-limit", "256", "--checkpoint-dir", os.path.join(out, "run"), "--output", os.path.join(out, "qat.h5"))
    path = os.path.join(out, model + "-qdq.onnx")
    run(qat, "export", "--checkpoint", os.path.join(out, "qat.h5"), "--output", path, "--opset", "17")
    return path


# ---------------------------------------------------------------------------------------------
# Everything below runs in the child process (torch imported there only).

def build_model(name):
    import torch
    from torch import nn
    from torch.ao.nn.quantized import FloatFunctional
    from tiny_models import EXAMPLE_MODELS

    if name in EXAMPLE_MODELS:
        return EXAMPLE_MODELS[name]()

    class SpecModel(nn.Module):
        """A qat model spec (conv2d, linear, batchnorm2d, relu, relu6, maxpool2d, avgpool2d,
        flatten, add) as a PyTorch module with the same layers and wiring."""

        def __init__(self, spec):
            super().__init__()
            self.spec = spec["layers"]
            self.layers = nn.ModuleDict()
            for layer in self.spec:
                kind = layer["type"]
                if kind == "conv2d":
                    module = nn.Conv2d(layer["in_channels"], layer["out_channels"],
                                       layer["kernel_size"], stride=layer.get("stride", 1),
                                       padding=layer.get("padding", 0), bias=layer.get("bias", True))
                elif kind == "linear":
                    module = nn.Linear(layer["in_features"], layer["out_features"],
                                       bias=layer.get("bias", True))
                elif kind == "batchnorm2d":
                    module = nn.BatchNorm2d(layer["num_features"], eps=layer.get("eps", 1e-5),
                                            momentum=layer.get("momentum", 0.1))
                elif kind == "relu":
                    module = nn.ReLU()
                elif kind == "relu6":
                    module = nn.ReLU6()
                elif kind == "maxpool2d":
                    module = nn.MaxPool2d(layer["kernel_size"], layer.get("stride"))
                elif kind == "avgpool2d":
                    module = nn.AvgPool2d(layer["kernel_size"], layer.get("stride"))
                elif kind == "flatten":
                    module = nn.Flatten()
                elif kind == "add":
                    module = FloatFunctional()
                else:
                    raise ValueError(f"layer {layer['name']}: type {kind} not supported here")
                self.layers[layer["name"]] = module

        def forward(self, x):
            outputs, previous = {"input": x}, "input"
            for layer in self.spec:
                sources = layer.get("inputs", [previous])
                module = self.layers[layer["name"]]
                if layer["type"] == "add":
                    y = module.add(outputs[sources[0]], outputs[sources[1]])
                else:
                    y = module(outputs[sources[0]])
                outputs[layer["name"]] = y
                previous = layer["name"]
            return outputs[previous]

        def fusion_groups(self):
            """conv2d + batchnorm2d (+ relu) and linear + relu runs that read each other in a
            line and whose inner outputs nobody else reads."""
            read = {}
            for i, layer in enumerate(self.spec):
                for source in layer.get("inputs", [self.spec[i - 1]["name"] if i else "input"]):
                    read[source] = read.get(source, 0) + 1

            def follows(i, kind):
                return (i < len(self.spec) and self.spec[i]["type"] == kind
                        and "inputs" not in self.spec[i] and read.get(self.spec[i - 1]["name"]) == 1)

            groups, i = [], 0
            while i < len(self.spec):
                kind = self.spec[i]["type"]
                group = [i]
                if kind == "conv2d" and follows(i + 1, "batchnorm2d"):
                    group.append(i + 1)
                    if follows(i + 2, "relu"):
                        group.append(i + 2)
                elif kind in ("conv2d", "linear") and follows(i + 1, "relu"):
                    group.append(i + 1)
                if len(group) > 1:
                    groups.append([f"layers.{self.spec[j]['name']}" for j in group])
                i += len(group)
            return groups

    with open(SPEC_FILES[name]) as f:
        return SpecModel(json.load(f))


def fusion_groups(model):
    from torch import nn
    from tiny_models import BasicBlock
    if hasattr(model, "fusion_groups"):
        return model.fusion_groups()
    groups = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, BasicBlock):
            groups += [[f"{prefix}conv1", f"{prefix}bn1", f"{prefix}relu1"],
                       [f"{prefix}conv2", f"{prefix}bn2"]]
        elif isinstance(module, nn.Sequential):
            children = list(module.named_children())
            i = 0
            while i < len(children):
                group = [i]
                if (isinstance(children[i][1], nn.Conv2d) and i + 1 < len(children)
                        and isinstance(children[i + 1][1], nn.BatchNorm2d)):
                    group.append(i + 1)
                    if i + 2 < len(children) and type(children[i + 2][1]) is nn.ReLU:
                        group.append(i + 2)
                elif (isinstance(children[i][1], nn.Conv2d) and i + 1 < len(children)
                        and type(children[i + 1][1]) is nn.ReLU):
                    group.append(i + 1)
                if len(group) > 1:
                    groups.append([prefix + children[j][0] for j in group])
                i += len(group)
    return groups


def quantizable(model, qat):
    """QuantStub -> model (fused) -> DeQuantStub, prepared for QAT or post-training quantization
    with the x86 (fbgemm) backend."""
    import torch
    import torch.ao.quantization as tq
    torch.backends.quantized.engine = "x86"
    if qat:
        model.train()
        tq.fuse_modules_qat(model, fusion_groups(model), inplace=True)
    else:
        model.eval()
        tq.fuse_modules(model, fusion_groups(model), inplace=True)
    wrapped = torch.nn.Sequential(tq.QuantStub(), model, tq.DeQuantStub())
    if qat:
        wrapped.qconfig = tq.get_default_qat_qconfig("x86")
        return tq.prepare_qat(wrapped.train())
    wrapped.qconfig = tq.get_default_qconfig("x86")
    return tq.prepare(wrapped.eval())


def measure_training(model, mode, images, labels, count, seed, max_seconds):
    import numpy as np
    import torch
    import torch.ao.quantization as tq
    from torch.nn import functional as F
    from tiny_models import normalise

    if mode != "train-float":
        model = quantizable(model, qat=True)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)

    def step(indices):
        x, y = normalise(images[indices]), torch.from_numpy(labels[indices])
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step(rng.choice(len(images), TRAIN_BATCH, replace=False))
    if mode == "train-qat-frozen-input":
        model[0].apply(tq.disable_observer)  # the QuantStub's fake quantizer: the model input

    steps = count // TRAIN_BATCH
    started = time.perf_counter()
    order = rng.permutation(len(images))[:steps * TRAIN_BATCH]
    done = 0
    while done < steps and time.perf_counter() - started < max_seconds:
        step(order[done * TRAIN_BATCH:(done + 1) * TRAIN_BATCH])
        done += 1
    return done * TRAIN_BATCH, time.perf_counter() - started


def timed_inference(run, batches, max_seconds):
    for batch in batches[:2]:
        run(batch)
    started, images = time.perf_counter(), 0
    for batch in batches:
        if time.perf_counter() - started >= max_seconds:
            break
        run(batch)
        images += len(batch)
    return images, time.perf_counter() - started


def export_onnx(model, path):
    import torch
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def ort_session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def quantize_for_ort(float_path, quantized_path, calibration):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    prepared = float_path.replace(".onnx", ".pre.onnx")
    quant_pre_process(float_path, prepared)
    quantize_static(prepared, quantized_path, Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)


def measure_inference(model, mode, threads, train_images, test_images, count, max_seconds, qdq_model=None):
    import numpy as np
    import torch
    from tiny_models import normalise

    batches = [normalise(test_images[s:s + INFER_BATCH])
               for s in range(0, count - INFER_BATCH + 1, INFER_BATCH)]
    calibration = [normalise(train_images[s:s + INFER_BATCH]) for s in range(0, 1024, INFER_BATCH)]
    note = None
    if mode == "infer-int8-torch":
        prepared = quantizable(model, qat=False)
        with torch.inference_mode():
            for batch in calibration:
                prepared(batch)
        import torch.ao.quantization as tq
        quantized = tq.convert(prepared)
        with torch.inference_mode():
            images, seconds = timed_inference(quantized, batches, max_seconds)
        return images, seconds, note

    if mode == "infer-int8-ort-qat-export":
        if not qdq_model:
            raise SystemExit("infer-int8-ort-qat-export needs --qdq-model (bench/compare.py makes it)")
        session = ort_session(qdq_model, threads)
        arrays = [np.ascontiguousarray(b.numpy()) for b in batches]
        images, seconds = timed_inference(lambda a: session.run(None, {"input": a}), arrays, max_seconds)
        return images, seconds, "qat export QDQ (int8 activations with qat's zero points, per-channel int8 weights)"

    with tempfile.TemporaryDirectory() as folder:
        float_path = os.path.join(folder, "model.onnx")
        export_onnx(model, float_path)
        path = float_path
        if mode == "infer-int8-ort":
            path = os.path.join(folder, "model.int8.onnx")
            # Quantized in a process of its own: calibration holds every intermediate tensor,
            # which is not the inference's memory.
            calibration_path = os.path.join(folder, "calibration.npy")
            np.save(calibration_path, np.stack([b.numpy() for b in calibration]))
            result = subprocess.run([sys.executable, os.path.abspath(__file__), "--quantize-ort",
                                     float_path, calibration_path, path],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode == 0:
                note = "quantize_static QDQ, per-channel QInt8 weights, QUInt8 activations"
            else:  # measured on the float model instead, and said so
                path = float_path
                reason = (result.stdout.strip().splitlines() or ["?"])[-1]
                note = f"FLOAT MODEL: quantize_static failed: {reason}"
        session = ort_session(path, threads)
        arrays = [np.ascontiguousarray(b.numpy()) for b in batches]
        images, seconds = timed_inference(lambda a: session.run(None, {"input": a}), arrays,
                                          max_seconds)
    return images, seconds, note


def run_child(args):
    import numpy as np
    import torch
    from tiny_models import load_fashion_mnist

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_images, train_labels = load_fashion_mnist("train")
    test_images, _ = load_fashion_mnist("t10k")
    model = build_model(args.model)
    peer = "onnxruntime" if "-ort" in args.mode else "pytorch"
    if args.mode.startswith("train"):
        count = args.images or TRAIN_IMAGES[args.model]
        images, seconds = measure_training(model, args.mode, train_images, train_labels, count,
                                           args.seed, args.max_seconds)
        note, batch = None, TRAIN_BATCH
    else:
        count = args.infer_images or INFER_IMAGES[args.model]
        images, seconds, note = measure_inference(model, args.mode, args.threads, train_images,
                                                  test_images, count, args.max_seconds, args.qdq_model)
        batch = INFER_BATCH
    versions = {"torch": torch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    if peer == "onnxruntime":
        import onnxruntime
        versions["onnxruntime"] = onnxruntime.__version__
    line = {"peer": peer, "model": args.model, "mode": args.mode, "threads": args.threads,
            "batch": batch, "images": images, "seconds": round(seconds, 4),
            "img_s": round(images / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "load_1min": round(os.getloadavg()[0], 2), "versions": versions}
    if note:
        line["note"] = note
    print(json.dumps(line), flush=True)


def main():
    parser = argparse.ArgumentParser(description="PyTorch eager / ONNX Runtime peer figures "
                                     "(one JSON line per measurement).")
    parser.add_argument("--model", action="append", choices=MODELS,
                        help="only this model (repeatable; default all)")
    parser.add_argument("--mode", action="append", choices=MODES,
                        help="only this mode (repeatable; default all)")
    parser.add_argument("--threads", action="append", type=int,
                        help="thread count (repeatable; default 1 and 2)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each combination this many times (rounds interleaved)")
    parser.add_argument("--images", type=int, help="training images per timed pass "
                        "(default per model, about 5 s of float training)")
    parser.add_argument("--infer-images", type=int, help="test images per timed inference run")
    parser.add_argument("--max-seconds", type=float, default=6.0,
                        help="end a timed pass early after this long (img/s counts the steps "
                        "done), so that a loaded machine cannot stretch a full run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 640 training / 512 inference images")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qdq-model", help="infer-int8-ort-qat-export: qat export's QDQ model of --model")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quantize-ort", nargs=3, help=argparse.SUPPRESS,
                        metavar=("FLOAT_ONNX", "CALIBRATION_NPY", "OUTPUT_ONNX"))
    args = parser.parse_args()
    if args.quantize_ort:
        import numpy as np
        float_path, calibration_path, output_path = args.quantize_ort
        quantize_for_ort(float_path, output_path, list(np.load(calibration_path)))
        return
    if args.quick:
        args.images = args.images or 640
        args.infer_images = args.infer_images or 512

    if args.child:
        args.model, args.mode, args.threads = args.model[0], args.mode[0], args.threads[0]
        run_child(args)
        return

    write_vgg_spec()
    failures = 0
    for round_index in range(args.repeat):
        for model in args.model or MODELS:
            for mode in args.mode or MODES:
                for threads in args.threads or [1, 2]:
                    command = [sys.executable, os.path.abspath(__file__), "--child",
                               "--model", model, "--mode", mode, "--threads", str(threads),
                               "--seed", str(args.seed), "--max-seconds", str(args.max_seconds)]
                    if args.images:
                        command += ["--images", str(args.images)]
                    if args.infer_images:
                        command += ["--infer-images", str(args.infer_images)]
                    if args.qdq_model:
                        command += ["--qdq-model", args.qdq_model]
                    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                               MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
                    print(f"[{round_index + 1}/{args.repeat}] {model} {mode} {threads} thread(s)",
                          file=sys.stderr, flush=True)
                    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
                    if result.returncode != 0:
                        failures += 1
                        print(json.dumps({"model": model, "mode": mode, "threads": threads,
                                          "error": f"exit code {result.returncode}"}), flush=True)
                    else:
                        sys.stdout.write(result.stdout)
                        sys.stdout.flush()
    if failures:
        sys.exit(f"{failures} measurement(s) failed")


if __name__ == "__main__":
    main()
