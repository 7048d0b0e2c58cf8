"""Train the two example networks briefly on Fashion-MNIST and export them to ONNX.

    make examples-export        (or: .venv-torch/bin/python examples/onnx-models/export.py)

Writes, beside this script, for each model NAME in tiny_models.EXAMPLE_MODELS:
    NAME.onnx                opset 17, eval mode, BatchNormalization kept (not folded), batch axis dynamic
    NAME.inputs.npy          16 Fashion-MNIST test images, float32 [16,1,28,28], normalised
    NAME.labels.npy          their labels, int64 [16]
    NAME.logits.npy          PyTorch's logits for them, float32 [16,10]
and reference.json with the float test accuracy, ONNX Runtime's max abs difference from
PyTorch's logits and the versions. Needs torch, numpy, onnx, onnxruntime.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_models import EXAMPLE_MODELS, load_fashion_mnist, normalise  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
SAMPLE_COUNT = 16
MAX_ABS_DIFF = 1e-4


def train(model, images, labels, epochs, batch_size, seed):
    """SGD with momentum and a cosine learning rate over all steps; seeded order."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = len(images) // batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    order_rng = np.random.default_rng(seed)
    model.train()
    for epoch in range(epochs):
        order = order_rng.permutation(len(images))
        started, total_loss = time.time(), 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x, y = normalise(images[idx]), torch.from_numpy(labels[idx])
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
            if (step + 1) % 200 == 0:
                print(f"    step {step + 1}/{steps_per_epoch} ({time.time() - started:.0f} s)",
                      flush=True)
        print(f"  epoch {epoch + 1}: mean loss {total_loss / steps_per_epoch:.4f} "
              f"({time.time() - started:.0f} s)", flush=True)


@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(normalise(images[start:start + batch_size]))
        correct += (logits.argmax(1).numpy() == labels[start:start + batch_size]).sum()
    return float(correct) / len(images)


def export(model, path):
    """Legacy (TorchScript) exporter: the dynamo exporter and the legacy one in EVAL mode fold
    BatchNormalization into the preceding Conv. PRESERVE with the model in eval mode skips that
    fusion and writes BatchNormalization in inference form (training_mode 0, running stats);
    do_constant_folding=False keeps the initializers as the module's own tensors."""
    model.eval()
    torch.onnx.export(
        model, (torch.zeros(1, 1, 28, 28),), path,
        dynamo=False,
        export_params=True,
        opset_version=OPSET,
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


def op_types(model_proto):
    return sorted({node.op_type for node in model_proto.graph.node})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=60000,
                        help="how many training images to use (the first N)")
    parser.add_argument("--output-dir", default=HERE)
    parser.add_argument("--models", nargs="*", default=list(EXAMPLE_MODELS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    train_images, train_labels = load_fashion_mnist("train")
    train_images, train_labels = train_images[:args.train_images], train_labels[:args.train_images]
    test_images, test_labels = load_fashion_mnist("t10k")
    os.makedirs(args.output_dir, exist_ok=True)

    reference_path = os.path.join(args.output_dir, "reference.json")
    reference = {}
    if os.path.exists(reference_path):
        with open(reference_path) as f:
            reference = json.load(f)
    reference["versions"] = {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": ort.__version__, "numpy": np.__version__}
    reference["normalisation"] = "(pixel / 255 - 0.2860) / 0.3530"
    reference.setdefault("models", {})

    failed = False
    for name in args.models:
        print(f"== {name}", flush=True)
        torch.manual_seed(args.seed)
        model = EXAMPLE_MODELS[name]()
        params = sum(p.numel() for p in model.parameters())
        print(f"  {params} parameters", flush=True)
        train(model, train_images, train_labels, args.epochs, args.batch_size, args.seed)
        test_accuracy = accuracy(model, test_images, test_labels)
        print(f"  float test accuracy (10,000 images): {100 * test_accuracy:.2f} %", flush=True)

        onnx_path = os.path.join(args.output_dir, f"{name}.onnx")
        export(model, onnx_path)
        proto = onnx.load(onnx_path)
        onnx.checker.check_model(proto, full_check=True)
        ops = op_types(proto)
        if "BatchNormalization" not in ops:
            raise SystemExit(f"{onnx_path}: BatchNormalization was folded away by the exporter")

        # The first SAMPLE_COUNT test images: real inputs and PyTorch's logits for them.
        inputs = normalise(test_images[:SAMPLE_COUNT])
        with torch.no_grad():
            logits = model(inputs).numpy().astype(np.float32)
        np.save(os.path.join(args.output_dir, f"{name}.inputs.npy"), inputs.numpy().astype(np.float32))
        np.save(os.path.join(args.output_dir, f"{name}.labels.npy"), test_labels[:SAMPLE_COUNT])
        np.save(os.path.join(args.output_dir, f"{name}.logits.npy"), logits)

        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        ort_logits = session.run(None, {"input": inputs.numpy()})[0]
        max_diff = float(np.abs(ort_logits - logits).max())
        verdict = "ok" if max_diff <= MAX_ABS_DIFF else "TOO LARGE"
        print(f"  ONNX Runtime vs PyTorch logits, max abs diff: {max_diff:.3g} ({verdict}, "
              f"limit {MAX_ABS_DIFF:g})", flush=True)
        failed |= max_diff > MAX_ABS_DIFF
        size = os.path.getsize(onnx_path)
        print(f"  {onnx_path}: {size} bytes, {len(proto.graph.node)} nodes, ops: {', '.join(ops)}",
              flush=True)

        reference["models"][name] = {
            "onnx": f"{name}.onnx", "bytes": size, "parameters": params, "opset": OPSET,
            "op_types": ops, "nodes": len(proto.graph.node),
            "float_test_accuracy": round(test_accuracy, 4),
            "samples": {"inputs": f"{name}.inputs.npy", "labels": f"{name}.labels.npy",
                        "logits": f"{name}.logits.npy", "count": SAMPLE_COUNT,
                        "which": "the first 16 images of t10k"},
            "onnxruntime_max_abs_diff": max_diff,
            "training": {"epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                         "train_images": len(train_images), "optimizer": "sgd",
                         "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                         "schedule": "cosine", "threads": args.threads},
        }
    with open(reference_path, "w") as f:
        json.dump(reference, f, indent=2, sort_keys=True)
        f.write("\n")
    if failed:
        raise SystemExit("ONNX Runtime's logits differ from PyTorch's by more than the limit")


if __name__ == "__main__":
    main()
