#!/usr/bin/env python3
"""Fuzz the `qat` binary from outside: mutated configs, checkpoints, deploy files, ONNX models and data.

Every case copies good inputs into its own folder, damages one file, runs one command on it as a
subprocess with a time limit and classifies the outcome (docs/FUZZING.md):
  PASS  exit 0 with the same result as the undamaged input, or exit 0 where a changed result is
        legitimate (a still-valid config, ONNX model or dataset file), or exit 1 with exactly one
        line on stderr;
  FAIL  a signal, a timeout, another exit code, a multi-line error, or exit 0 from an input that
        must be refused (invalid JSON, broken IDX, a truncated .npy) or with a different result from a damaged
        checkpoint/deploy file ("silently accepted").
Standard library only (plus h5import from hdf5-tools, when installed, to write the HDF5 dataset file).
Usage: scripts/fuzz.py [--cases N] [--seed S] [--qat PATH] [--case I]
"""
import argparse
import collections
import concurrent.futures
import gzip
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "/usr/share/datasets/fashion-mnist"
IDX_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
TRAIN_IMAGES, TEST_IMAGES = 512, 256
LENET5_SPEC = os.path.join(REPO, "Configs/models/lenet5.json")
EVAL_LIMITS = ["--test-limit", "64", "--threads", "1"]
LIMITS = ["--train-limit", "128"] + EVAL_LIMITS
# The ONNX models `qat import` is fuzzed with: name in the case folder -> committed file.
ONNX_MODELS = {"lenet.onnx": "Tests/Fixtures/onnx/lenet.onnx", "mobile.onnx": "Tests/Fixtures/onnx/mobile.onnx",
               "old-opset.onnx": "Tests/Fixtures/onnx/old-opset.onnx",
               "resnet18-tiny.onnx": "examples/onnx-models/resnet18-tiny.onnx",
               "mobilenetv2-tiny.onnx": "examples/onnx-models/mobilenetv2-tiny.onnx"}
# The test split as .npy files and as an HDF5 dataset file (`data` sections of npy.json, hdf5.json).
NPY_FILES = ["test-images.npy", "test-labels.npy"]
HDF5_DATA = "test-data.h5"
GOOD_FILES = ["ckpt.h5", "step.h5", "int8.h5", "config.json", "simple.json", "quant.cfg", "npy.json", "hdf5.json",
              "vitis.json", "nuq.cfg", "pow2.h5", "pow2-int8.h5", "nuq.h5", "dpu.json", "bf16.json", "ptq.json",
              "dpu.h5", "bf16.h5", "bf16-int8.h5", "tq.h5", "tq-int8.h5"] \
    + list(ONNX_MODELS) + NPY_FILES + [HDF5_DATA]
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ---------------------------------------------------------------- good inputs, made once

def write_idx_subset(src, dst, count):
    """Copies the first `count` items of a gzip IDX file (header kept, count rewritten)."""
    with gzip.open(src, "rb") as f:
        magic, _ = struct.unpack(">II", f.read(8))
        rank = (magic & 0xFF) - 1
        dims = struct.unpack(">%dI" % rank, f.read(4 * rank))
        item = 1
        for d in dims:
            item *= d
        payload = f.read(item * count)
    with open(dst, "wb") as f:
        f.write(gzip.compress(struct.pack(">II", magic, count) + struct.pack(">%dI" % rank, *dims) + payload, mtime=0))


def make_dataset(folder):
    os.makedirs(folder, exist_ok=True)
    for name in IDX_FILES:
        count = TRAIN_IMAGES if name.startswith("train") else TEST_IMAGES
        write_idx_subset(os.path.join(DATASET, name), os.path.join(folder, name), count)


def make_configs(work, data):
    """config.json: Configs/retrain.json; simple.json: the simple form plus model/data sections."""
    with open(os.path.join(REPO, "Configs/retrain.json")) as f:
        full = json.load(f)
    model = {"spec": os.path.join(REPO, "Configs/models/lenet5.json"),
             "init": os.path.join(REPO, "Checkpoints/lenet5-float.h5")}
    full["model"] = model
    full["data"] = {"path": data}
    full["train"]["epochs"] = 1
    full["checkpoint"] = {"dir": "epochs"}
    with open(os.path.join(REPO, "Configs/amct/simple.json")) as f:
        simple = json.load(f)
    simple = dict({"model": model, "data": {"path": data}}, **simple)
    for name, doc in (("config.json", full), ("simple.json", simple)):
        with open(os.path.join(work, name), "w") as f:
            json.dump(doc, f, indent=2)
    # quant.cfg: AMCT's simple config in proto text (it has no model or data section).
    shutil.copyfile(os.path.join(REPO, "Configs/amct/simple-uniform-plain.cfg"), os.path.join(work, "quant.cfg"))
    # vitis.json: Vitis AI JSON with power-of-two scales; nuq.cfg: proto text with NUQ weights on conv1.
    shutil.copyfile(os.path.join(REPO, "Configs/vitis/plain-poweroftwo.json"), os.path.join(work, "vitis.json"))
    shutil.copyfile(os.path.join(REPO, "Configs/amct/simple-nuq-plain.cfg"), os.path.join(work, "nuq.cfg"))
    # dpu.json: the Vitis manual's default (DPU rules, quantized biases); bf16.json: its bfloat16
    # cast layers; ptq.json: AMCT's PTQ example (DMQ, tensor_quantize on a max pool).
    shutil.copyfile(os.path.join(REPO, "Configs/vitis/default.json"), os.path.join(work, "dpu.json"))
    shutil.copyfile(os.path.join(REPO, "Configs/vitis/bfloat16_config.json"), os.path.join(work, "bf16.json"))
    shutil.copyfile(os.path.join(REPO, "Configs/amct/ptq-ifmr.json"), os.path.join(work, "ptq.json"))


def npy_bytes(descr, shape, payload):
    """An .npy file (format version 1.0): magic, header padded to a multiple of 64 bytes, payload."""
    sizes = "(%d,)" % shape[0] if len(shape) == 1 else "(%s)" % ", ".join(map(str, shape))
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, sizes)
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def make_user_data(good, data):
    """The IDX test subset as uint8 .npy files and as an HDF5 file (written by h5import from
    Debian's hdf5-tools, when installed), and configs that evaluate on them."""
    with gzip.open(os.path.join(data, IDX_FILES[2]), "rb") as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(data, IDX_FILES[3]), "rb") as f:
        labels = f.read()[8:]
    for name, shape, payload in ((NPY_FILES[0], [TEST_IMAGES, 28, 28], images), (NPY_FILES[1], [TEST_IMAGES], labels)):
        with open(os.path.join(good, name), "wb") as f:
            f.write(npy_bytes("|u1", shape, payload))
    # Both splits are the same files, so `train` reads the damaged one whichever split it loads first.
    sections = {"npy.json": {"format": "npy", "train_images": NPY_FILES[0], "train_labels": NPY_FILES[1],
                             "test_images": NPY_FILES[0], "test_labels": NPY_FILES[1]},
                "hdf5.json": {"format": "hdf5", "train": HDF5_DATA, "test": HDF5_DATA}}
    model = {"spec": os.path.join(REPO, "Configs/models/lenet5.json"),
             "init": os.path.join(REPO, "Checkpoints/lenet5-float.h5")}
    for name, section in sections.items():
        with open(os.path.join(good, name), "w") as f:
            json.dump({"model": model, "data": dict(section, mean=0.2860, std=0.3530)}, f, indent=2)
    h5import = shutil.which("h5import")
    if h5import is None:
        return False
    args = []
    for path, payload, dims in (("images", images, "%d 28 28" % TEST_IMAGES), ("labels", labels, str(TEST_IMAGES))):
        raw = os.path.join(good, path + ".bin")
        with open(raw, "wb") as f:
            f.write(payload)
        with open(raw + ".cfg", "w") as f:
            f.write("PATH %s\nINPUT-CLASS UIN\nINPUT-SIZE 8\nRANK %d\nDIMENSION-SIZES %s\n"
                    "OUTPUT-CLASS UIN\nOUTPUT-SIZE 8\nOUTPUT-ARCHITECTURE NATIVE\nOUTPUT-BYTE-ORDER LE\n"
                    % (path, len(dims.split()), dims))
        args += [raw, "-c", raw + ".cfg"]
    subprocess.run([h5import] + args + ["-o", os.path.join(good, HDF5_DATA)], check=True, capture_output=True)
    return True


def run(qat, args, cwd, timeout):
    """Runs qat; returns (returncode or 'timeout', stdout, stderr, seconds)."""
    start = time.monotonic()
    try:
        p = subprocess.run([qat] + args, cwd=cwd, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = "timeout", e.stdout or b"", e.stderr or b""
    return code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.monotonic() - start


def prepare(qat, work, timeout):
    """Good inputs in `work/good`: dataset, configs, a QAT checkpoint (ckpt.h5), its deploy file
    (int8.h5) and a mid-epoch checkpoint of the same run (step.h5) to resume from."""
    good = os.path.join(work, "good")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(good)
    make_dataset(os.path.join(work, "data"))
    make_configs(good, os.path.join(work, "data"))
    if not make_user_data(good, os.path.join(work, "data")):
        for name in [n for n, (kind, _, _) in COMMANDS.items() if kind == "hdf5-data"]:
            del COMMANDS[name]  # no h5import: no HDF5 dataset file to damage
    for name, source in ONNX_MODELS.items():
        shutil.copyfile(os.path.join(REPO, source), os.path.join(good, name))
    steps = [["train", "--config", "config.json", "--train-limit", "256", "--epochs", "1",
              "--test-limit", "128", "--threads", "1", "--output", "ckpt.h5", "--save-every", "2"],
             ["deploy", "--checkpoint", "ckpt.h5", "--output", "int8.h5"]]
    # PTQ checkpoints with the grid options: power-of-two scales (deployed: requantized by
    # shifts) and NUQ weight levels (stored as quantizer state).
    float_run = ["--checkpoint", os.path.join(REPO, "Checkpoints/lenet5-float.h5"), "--model", LENET5_SPEC,
                 "--data", os.path.join(work, "data"), "--batch-num", "1", "--test-limit", "64", "--threads", "1"]
    steps += [["calibrate", "--config", "vitis.json", "--output", "pow2.h5"] + float_run,
              ["deploy", "--checkpoint", "pow2.h5", "--output", "pow2-int8.h5"],
              ["calibrate", "--config", "nuq.cfg", "--output", "nuq.h5"] + float_run,
              # Issue 12's last records: bias grids (dpu.h5), cast layers and a max pool's own grid
              # in deploy files (bf16-int8.h5: input_cast; tq-int8.h5: shared_input_scale).
              ["calibrate", "--config", "dpu.json", "--output", "dpu.h5"] + float_run,
              ["calibrate", "--config", "bf16.json", "--output", "bf16.h5"] + float_run,
              ["deploy", "--checkpoint", "bf16.h5", "--output", "bf16-int8.h5"],
              ["calibrate", "--config", "ptq.json", "--output", "tq.h5"] + float_run,
              ["deploy", "--checkpoint", "tq.h5", "--output", "tq-int8.h5"]]
    for args in steps:
        code, out, err, _ = run(qat, args, good, timeout * 10)
        if code != 0:
            sys.exit("fuzz: preparing good inputs failed: qat %s\n%s" % (" ".join(args), err))
    shutil.move(os.path.join(good, "epochs", "step-2.h5"), os.path.join(good, "step.h5"))
    shutil.rmtree(os.path.join(good, "epochs"))
    return good


# ---------------------------------------------------------------- commands under test

# name -> (kind of file mutated, arguments run in the case folder, result files or None).
# The mutated file always has the same name as the good one (ckpt.h5, int8.h5, config.json,
# simple.json, data/...), so a result can be compared byte for byte with the good run's.
COMMANDS = {
    "eval-checkpoint": ("checkpoint", ["eval", "--checkpoint", "ckpt.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "inspect": ("checkpoint", ["inspect", "ckpt.h5"], None),
    "deploy": ("checkpoint", ["deploy", "--checkpoint", "ckpt.h5", "--output", "out.h5"], ["out.h5"]),
    "resume": ("resume", ["train", "--config", "config.json", "--resume", "step.h5", "--epochs", "1",
                          "--output", "out.h5", "--train-limit", "256", "--test-limit", "128", "--threads", "1"],
               ["out.h5"]),
    "compare": ("checkpoint", ["compare", "--checkpoint", "ckpt.h5", "--batches", "1", "--batch-size", "32",
                               "--data", "DATA", "--json"], None),
    "verify-checkpoint": ("checkpoint", ["verify", "--checkpoint", "ckpt.h5", "--deploy", "int8.h5",
                                         "--data", "DATA"] + EVAL_LIMITS, None),
    "eval-deploy": ("deploy", ["eval", "--deploy", "int8.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "verify-deploy": ("deploy", ["verify", "--checkpoint", "ckpt.h5", "--deploy", "int8.h5",
                                 "--data", "DATA"] + EVAL_LIMITS, None),
    "plan": ("config", ["plan", "--config", "config.json"], None),
    "plan-simple": ("config-simple", ["plan", "--config", "simple.json"], None),
    "plan-prototext": ("config-prototext", ["plan", "--config", "quant.cfg", "--model",
                                            os.path.join(REPO, "Configs/models/lenet5.json")], None),
    "plan-vitis": ("config-vitis", ["plan", "--config", "vitis.json", "--model",
                                    os.path.join(REPO, "Configs/models/lenet5.json")], None),
    "plan-nuq": ("config-nuq", ["plan", "--config", "nuq.cfg", "--model",
                                os.path.join(REPO, "Configs/models/lenet5.json")], None),
    "eval-deploy-pow2": ("deploy-pow2", ["eval", "--deploy", "pow2-int8.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "eval-checkpoint-nuq": ("checkpoint-nuq", ["eval", "--checkpoint", "nuq.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "plan-vitis-dpu": ("config-dpu", ["plan", "--config", "dpu.json", "--model",
                                      os.path.join(REPO, "Configs/models/lenet5.json")], None),
    "plan-ptq": ("config-ptq", ["plan", "--config", "ptq.json", "--model",
                                os.path.join(REPO, "Configs/models/lenet5.json")], None),
    "eval-checkpoint-dpu": ("checkpoint-dpu", ["eval", "--checkpoint", "dpu.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "eval-deploy-cast": ("deploy-cast", ["eval", "--deploy", "bf16-int8.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "eval-deploy-tq": ("deploy-tq", ["eval", "--deploy", "tq-int8.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "check-model": ("config", ["check", "model", "--config", "config.json"], None),
    "train-config": ("config", ["train", "--config", "config.json", "--epochs", "1", "--output", "out.h5",
                                "--batch-size", "32"] + LIMITS, None),
    "train-data": ("data", ["train", "--config", "config.json", "--epochs", "1", "--output", "out.h5",
                            "--batch-size", "32"] + LIMITS, None),
    "eval-data": ("data", ["eval", "--checkpoint", "ckpt.h5", "--data", "DATA"] + EVAL_LIMITS, None),
    "eval-npy": ("npy-data", ["eval", "--checkpoint", "ckpt.h5", "--config", "npy.json"] + EVAL_LIMITS, None),
    "eval-hdf5": ("hdf5-data", ["eval", "--checkpoint", "ckpt.h5", "--config", "hdf5.json"] + EVAL_LIMITS, None),
    "train-npy": ("npy-data", ["train", "--config", "npy.json", "--epochs", "1", "--output", "out.h5",
                               "--batch-size", "32"] + LIMITS, None),
    "train-hdf5": ("hdf5-data", ["train", "--config", "hdf5.json", "--epochs", "1", "--output", "out.h5",
                                 "--batch-size", "32"] + LIMITS, None),
    "create-config-onnx": ("onnx:lenet.onnx", ["create-config", "--model", "lenet.onnx"], None),
}
# `qat import` of each ONNX model, damaged; the imported files are not compared (a flipped weight
# byte is still a model).
for _model in ONNX_MODELS:
    COMMANDS["import-" + _model[:-5]] = ("onnx:" + _model, ["import", _model, "--output-dir", "out"], None)
FILE_OF_KIND = {"checkpoint": "ckpt.h5", "resume": "step.h5", "deploy": "int8.h5", "config": "config.json",
                "config-simple": "simple.json", "config-prototext": "quant.cfg", "hdf5-data": HDF5_DATA,
                "config-vitis": "vitis.json", "config-nuq": "nuq.cfg", "deploy-pow2": "pow2-int8.h5",
                "checkpoint-nuq": "nuq.h5", "config-dpu": "dpu.json", "config-ptq": "ptq.json",
                "checkpoint-dpu": "dpu.h5", "deploy-cast": "bf16-int8.h5", "deploy-tq": "tq-int8.h5"}
# The damaged HDF5 files whose result must equal the good run's when a command accepts them.
CHECKSUMMED = ("checkpoint", "resume", "deploy", "deploy-pow2", "checkpoint-nuq", "checkpoint-dpu", "deploy-cast",
               "deploy-tq")
FILE_OF_KIND.update({"onnx:" + m: m for m in ONNX_MODELS})

# Lines of stdout that carry a result; timings and progress are dropped before comparing.
TIMING = re.compile(r"\d+(\.\d+)?\s*(s|ms|µs|sec|seconds|img/s|images/s)\b|elapsed.*|\d+:\d\d")


def result_of(stdout, folder, files):
    """What a run produced: its stdout without timings, plus the digests of its output files."""
    lines = [TIMING.sub("<t>", line.rstrip()) for line in stdout.replace("\r", "\n").splitlines()]
    digest = hashlib.sha256("\n".join(l for l in lines if l.strip()).encode())
    for name in files or []:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------- mutations

def flip_bytes(data, rng):
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= rng.randint(1, 255)
    return bytes(data), "flip"


def zero_block(data, rng):
    start = rng.randrange(0, max(1, len(data) // 512)) * 512
    return data[:start] + bytes(min(512, len(data) - start)) + data[start + 512:], "zero-block"


def truncate(data, rng):
    return data[:rng.randrange(len(data))], "truncate"


def append_garbage(data, rng):
    return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))), "append"


def tail_bytes(data, rng):
    """A few changed bytes near the end, where libhdf5 keeps heaps and attribute tables."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = len(data) - 1 - rng.randrange(min(len(data), 256))
        data[i] = rng.randrange(256)
    return bytes(data), "tail"


def superblock(data, rng):
    """Changed bytes in the HDF5 superblock (at 0, 512, 1024, … when a user block precedes it)."""
    at = next((o for o in [0] + [512 << k for k in range(12)] if data[o:o + 8] == HDF5_SIGNATURE), 0)
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = min(len(data) - 1, at + 8 + rng.randrange(88))
        data[i] = rng.randrange(256)
    return bytes(data), "superblock"


HDF5_MUTATIONS = [flip_bytes, zero_block, truncate, append_garbage, tail_bytes, superblock]


def read_varint(data, i, end):
    """(value, next offset) of the protobuf varint at `i`, or (None, i) if there is none."""
    value, shift = 0, 0
    while i < end and shift < 70:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i
    return None, i


def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def protobuf_fields(data, start, end, depth, found):
    """Adds to `found` the varint and length-delimited fields of data[start:end] if it parses as a
    protobuf message, and those of every length-delimited value that parses as one too, as
    (wire type, offset of the value's varint, offset after it, length or None)."""
    fields, i = [], start
    while i < end:
        key, i = read_varint(data, i, end)
        if key is None or key >> 3 == 0:
            return
        wire = key & 7
        if wire in (0, 2):
            value, after = read_varint(data, i, end)
            if value is None or (wire == 2 and after + value > end):
                return
            fields.append((wire, i, after, value if wire == 2 else None))
            i = after + (value if wire == 2 else 0)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            return
    if i != end:
        return
    found.extend(fields)
    for wire, _, after, length in fields:
        if wire == 2 and depth < 8 and length:
            protobuf_fields(data, after, after + length, depth + 1, found)


def protobuf_number(data, rng):
    """A length field (of a graph, node, tensor, string …) or a plain varint (a dimension, an
    attribute, a data type) given another value: off by one, zero, or past 2³¹, 2³², 2⁶³."""
    found = []
    protobuf_fields(data, 0, len(data), 0, found)
    wire = rng.choice([0, 2])
    fields = [f for f in found if f[0] == wire] or found
    _, at, after, length = rng.choice(fields)
    old = read_varint(data, at, after)[0]
    new = rng.choice([0, old + 1, max(old - 1, 0), old * 2 + 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32 + 1,
                      2**63 - 1, 2**64 - 1])
    return data[:at] + varint(new) + data[after:], "length" if wire == 2 else "varint"


ONNX_MUTATIONS = [flip_bytes, truncate, append_garbage, zero_block, protobuf_number, protobuf_number]


def npy_mutation(data, rng):
    """Damage to an .npy file: truncation (must be refused), flipped header bytes, or a header
    whose shape or dtype says something else than the bytes that follow."""
    end = 10 + struct.unpack_from("<H", data, 8)[0]
    kind = rng.choice(["truncate", "header-flip", "shape", "descr", "header-length"])
    if kind == "truncate":
        return data[:rng.randrange(len(data))], kind
    if kind == "header-flip":
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(end)] ^= rng.randint(1, 255)
        return bytes(data), kind
    if kind == "header-length":
        return data[:8] + struct.pack("<H", rng.choice([0, 1, end - 11, end - 9, 65535])) + data[10:], kind
    header = data[10:end].decode("latin-1")
    if kind == "shape":
        number = rng.choice(["0", "1", "-1", "27", "29", "2147483648", "9223372036854775807", "99999999999999999999"])
        at = header.find("'shape'")
        header = header[:at] + re.sub(r"\d+", number, header[at:], count=rng.randint(1, 3))
    else:
        header = re.sub(r"'descr': '[^']*'", "'descr': '%s'" % rng.choice(["<f4", "<f8", "<i8", ">i4", "|b1", "<U3", "O", "|V4"]), header)
    header = header.rstrip("\n").rstrip(" ")
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return data[:8] + struct.pack("<H", len(header)) + header.encode("latin-1") + data[end:], kind


def json_text_mutation(text, rng):
    """Byte-level damage: flips, a deleted span, truncation."""
    kind = rng.choice(["flip", "delete", "truncate"])
    if kind == "flip":
        data, _ = flip_bytes(text.encode(), rng)
        return data, kind
    i = rng.randrange(len(text))
    if kind == "delete":
        return (text[:i] + text[i + rng.randint(1, 40):]).encode(), kind
    return text[:i].encode(), kind


def json_structure_mutation(text, rng):
    """Textual edits a person or a bad tool makes: duplicated keys, type swaps, huge numbers, deep nesting."""
    lines = text.splitlines(keepends=True)
    keyed = [i for i, l in enumerate(lines) if re.match(r'\s*"[^"]+":', l)]
    kind = rng.choice(["duplicate-key", "type-swap", "huge-number", "deep-nesting", "null-section"])
    i = rng.choice(keyed)
    key = re.match(r'(\s*"[^"]+":)', lines[i]).group(1)
    if kind == "duplicate-key":
        lines.insert(i, key + ' "duplicate",\n')
    elif kind == "null-section":
        obj = [j for j in keyed if lines[j].rstrip().endswith("{")]
        j = rng.choice(obj)
        lines[j] = lines[j].rstrip()[:-1] + ' null, "x": {\n'
    else:
        value = {"type-swap": rng.choice(['"x"', "true", "[]", "{}", "-1", "0", "1.5"]),
                 "huge-number": rng.choice(["1e300", "9223372036854775808", "-9223372036854775809",
                                            "100000000000000", "2147483648", "1e-45", "-1e40"]),
                 "deep-nesting": "[" * 600 + "1" + "]" * 600}[kind]
        rest = lines[i][len(key):].strip()
        if rest.endswith("{") or rest.endswith("["):
            lines.insert(i, key + " " + value + ",\n")  # a duplicate too; the section stays intact
            kind += "+duplicate"
        else:
            lines[i] = key + " " + value + ("," if rest.endswith(",") else "") + "\n"
    return "".join(lines).encode(), kind


def prototext_structure_mutation(text, rng):
    """Edits of a proto-text file: a repeated field, a value of another type, huge numbers, deep
    nesting, an unterminated string or message, stray punctuation."""
    lines = text.splitlines(keepends=True)
    fields = [i for i, l in enumerate(lines) if re.match(r"\s*\w+\s*:", l)]
    kind = rng.choice(["duplicate-field", "type-swap", "huge-number", "deep-nesting", "unterminated", "punctuation"])
    i = rng.choice(fields)
    name = re.match(r"(\s*\w+)\s*:", lines[i]).group(1)
    must_refuse = kind == "deep-nesting"
    if kind == "duplicate-field":
        lines.insert(i, name + ": 1\n" if lines[i].rstrip().endswith("{") else lines[i])
    elif kind == "deep-nesting":
        depth = rng.choice([101, 600, 5000])
        lines.insert(i, name + " " + "{ x " * depth + "}" * depth + "\n")
    elif kind == "unterminated":
        lines[i] = lines[i].rstrip("\n") + rng.choice(['"', "'", "{", "[", "<", "\\"])
        must_refuse = True
    elif kind == "punctuation":
        lines[i] = lines[i].replace(":", rng.choice(["", "::", ": :", "=", ": ,", ": [", ": ]"]), 1)
    else:
        value = {"type-swap": rng.choice(['"x"', "true", "[]", "{}", "-1", "0", "1.5", "INT8", "-inf", "nan", "0x", "1e"]),
                 "huge-number": rng.choice(["1e300", "9223372036854775808", "-9223372036854775809", "0x" + "f" * 40,
                                            "2147483648", "4294967296", "1e-45", "-1e40", "0" * 500 + "1"])}[kind]
        if lines[i].rstrip().endswith("{"):
            lines.insert(i, name + ": " + value + "\n")
        else:
            lines[i] = name + ": " + value + "\n"
    return "".join(lines).encode(), kind, must_refuse


def strict_json_ok(data):
    """True if `data` is JSON without duplicate keys, NaN/Infinity or over 512 levels of nesting."""
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate key")
        return dict(pairs)

    def bad_constant(name):
        raise ValueError(name)
    try:
        text = data.decode("utf-8")
        json.loads(text, object_pairs_hook=no_duplicates, parse_constant=bad_constant)
    except (ValueError, RecursionError):
        return False
    depth, deepest, in_string, escape = 0, 0, False, False
    for ch in text:
        if in_string:
            escape, in_string = (not escape and ch == "\\"), in_string and (escape or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest <= 512


def read_idx(path):
    with gzip.open(path, "rb") as f:
        return bytearray(f.read())


def write_idx(path, raw, cut=None):
    data = gzip.compress(bytes(raw), mtime=0)
    with open(path, "wb") as f:
        f.write(data if cut is None else data[:cut])


def idx_consistent_mutation(folder, rng, name):
    """Well-formed files the model cannot use: 14×14 images, or an empty split (images and labels)."""
    if "images" in name and rng.random() < 0.5:
        raw = read_idx(os.path.join(folder, name))
        count = struct.unpack_from(">I", raw, 4)[0]
        images = [raw[16 + i * 784:16 + i * 784 + 196] for i in range(count)]
        write_idx(os.path.join(folder, name), raw[:8] + struct.pack(">II", 14, 14) + b"".join(images))
        return "14x14-images"
    split = name.split("-")[0]
    for part in ("images-idx3", "labels-idx1"):
        path = os.path.join(folder, "%s-%s-ubyte.gz" % (split, part))
        raw = read_idx(path)
        rank = raw[3] - 1
        struct.pack_into(">I", raw, 4, 0)
        write_idx(path, raw[:8 + 4 * rank])
    return "empty-split"


def idx_mutation(folder, rng, names):
    """Damages one of the IDX files `names` in the case's data folder; returns (file name, kind)."""
    name = rng.choice(names)
    path = os.path.join(folder, name)
    raw = read_idx(path)
    rank = raw[3] - 1
    kind = rng.choice(["magic", "count", "dims", "truncate-payload", "gzip-truncate", "consistent"]
                      + (["label-range"] if rank == 0 else []))
    if kind == "consistent":
        return name, idx_consistent_mutation(folder, rng, name)
    if kind == "magic":
        raw[rng.randrange(4)] ^= rng.randint(1, 255)
    elif kind == "count":
        struct.pack_into(">I", raw, 4, rng.choice([0, TRAIN_IMAGES * 3, 2**31 - 1, 2**32 - 1]))
    elif kind == "dims" and rank > 0:
        struct.pack_into(">I", raw, 8 + 4 * rng.randrange(rank), rng.choice([0, 1, 14, 29, 2**31, 2**32 - 1]))
    elif kind == "dims":
        raw[3] = rng.choice([0, 3, 255])
    elif kind == "truncate-payload":
        raw = raw[:rng.randrange(8 + 4 * rank, len(raw) - 1)]
    elif kind == "label-range":
        raw[8 + rng.randrange(32)] = rng.choice([10, 11, 128, 255])
    write_idx(path, raw, rng.randrange(len(gzip.compress(bytes(raw)))) if kind == "gzip-truncate" else None)
    return name, kind


# ---------------------------------------------------------------- one case

class Case:
    """One command on one damaged file, in its own folder `work/cases/<index>`."""

    def __init__(self, index, seed, command, work, good):
        self.index, self.command = index, command
        self.rng = random.Random("%d-%d" % (seed, index))
        self.folder = os.path.join(work, "cases", str(index))
        self.work, self.good = work, good
        self.kind, args, self.outputs = COMMANDS[command]
        self.data = os.path.join(work, "data")
        self.mutation, self.must_refuse = "", False
        self.setup()
        self.args = [self.data if a == "DATA" else a for a in args]

    def setup(self):
        shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.folder)
        for name in GOOD_FILES:
            os.symlink(os.path.join(self.good, name), os.path.join(self.folder, name))
        if self.kind == "data":
            self.setup_data()
            return
        if self.kind == "npy-data":
            name = self.rng.choice(NPY_FILES)
            target = os.path.join(self.folder, name)
            with open(os.readlink(target), "rb") as f:
                data = f.read()
            os.remove(target)
            data, mutation = npy_mutation(data, self.rng)
            self.mutation = name[5:-4] + ":" + mutation
            self.must_refuse = mutation == "truncate"
            with open(target, "wb") as f:
                f.write(data)
            return
        name = FILE_OF_KIND[self.kind]
        target = os.path.join(self.folder, name)
        with open(os.readlink(target), "rb") as f:
            data = f.read()
        os.remove(target)
        if self.kind in CHECKSUMMED + ("hdf5-data",):
            data, self.mutation = self.rng.choice(HDF5_MUTATIONS)(data, self.rng)
        elif self.kind.startswith("onnx:"):
            data, self.mutation = self.rng.choice(ONNX_MUTATIONS)(data, self.rng)
        elif self.kind in ("config-prototext", "config-nuq"):
            if self.rng.random() < 0.5:
                data, self.mutation = json_text_mutation(data.decode(), self.rng)
            else:
                data, self.mutation, self.must_refuse = prototext_structure_mutation(data.decode(), self.rng)
        else:
            mutate = self.rng.choice([json_text_mutation, json_structure_mutation])
            data, self.mutation = mutate(data.decode(), self.rng)
            self.must_refuse = not strict_json_ok(data)
        with open(target, "wb") as f:
            f.write(data)

    def setup_data(self):
        """A copy of the dataset with one file damaged; config.json points at it."""
        shutil.copytree(os.path.join(self.work, "data"), os.path.join(self.folder, "data"))
        self.data = "data"  # relative to the case folder, so that the folder is a self-contained reproducer
        read = IDX_FILES if self.command.startswith("train") else IDX_FILES[2:]  # eval reads the test set only
        name, self.mutation = idx_mutation(os.path.join(self.folder, "data"), self.rng, read)
        self.mutation = name.split("-")[0] + "-" + name.split("-")[1] + ":" + self.mutation
        self.must_refuse = True
        config = os.path.join(self.folder, "config.json")
        with open(config) as f:
            doc = json.load(f)
        doc["data"]["path"] = self.data
        os.remove(config)
        with open(config, "w") as f:
            json.dump(doc, f, indent=2)

    def command_line(self, qat):
        return "cd %s && %s %s" % (shlex.quote(self.folder), shlex.quote(qat), shlex.join(self.args))


def classify(case, code, stdout, stderr, result, baseline):
    """(passed, reason) by the rules at the top of this file."""
    if code == "timeout":
        return False, "timeout"
    if code < 0 or code >= 128:
        return False, "signal %d" % (-code if code < 0 else code - 128)
    if code == 1:
        lines = [l for l in stderr.splitlines() if l.strip()]
        if not lines and case.command == "check-model" and " error(s), " in stdout:
            return True, "findings"  # `check model` reports a bad config as a table of findings, exit 1
        return (True, "refused") if len(lines) == 1 else (False, "%d-line error" % len(lines))
    if code != 0:
        return False, "exit %d" % code
    if case.must_refuse:
        return False, "invalid input accepted"
    if case.kind in CHECKSUMMED and result != baseline:
        return False, "silently accepted (different result)"
    return True, "ok"


def run_case(index, command, opts, baselines):
    """Builds case `index` (in the worker, so only a few case folders exist at a time) and runs it."""
    case = Case(index, opts.seed, command, opts.work, os.path.join(opts.work, "good"))
    qat, failures = opts.qat, os.path.join(opts.work, "failures")
    code, out, err, _ = run(qat, case.args, case.folder, opts.timeout)
    result = result_of(out, case.folder, case.outputs)
    passed, reason = classify(case, code, out, err, result, baselines[case.command])
    if passed:
        shutil.rmtree(case.folder, ignore_errors=True)
        return case, passed, reason, None
    kept = os.path.join(failures, "case-%d" % case.index)
    shutil.rmtree(kept, ignore_errors=True)
    shutil.move(case.folder, kept)
    case.folder = kept
    for name in GOOD_FILES:  # the good inputs are remade by the next run: keep copies, not links
        path = os.path.join(kept, name)
        if os.path.islink(path):
            target = os.readlink(path)
            os.remove(path)
            shutil.copyfile(target, path)
    last = (err.strip().splitlines() or ["(no stderr)"])[-1][:200]
    with open(os.path.join(kept, "repro.sh"), "w") as f:
        f.write("#!/bin/sh\n# %s %s: %s\n%s\n" % (case.command, case.mutation, reason, case.command_line(qat)))
    return case, passed, reason, "%s\n    last stderr line: %s" % (case.command_line(qat), last)


# ---------------------------------------------------------------- the run

def baselines_for(qat, work, good, timeout):
    """Each command's result on the undamaged inputs (run twice: the result must be reproducible)."""
    results = {}
    for name, (_, args, outputs) in COMMANDS.items():
        seen = []
        for attempt in range(2):
            folder = os.path.join(work, "baseline", "%s-%d" % (name, attempt))
            os.makedirs(folder)
            for f in GOOD_FILES:
                os.symlink(os.path.join(good, f), os.path.join(folder, f))
            argv = [os.path.join(work, "data") if a == "DATA" else a for a in args]
            code, out, err, _ = run(qat, argv, folder, timeout * 5)
            if code != 0:
                sys.exit("fuzz: qat %s fails on the good inputs:\n%s" % (" ".join(argv), err))
            seen.append(result_of(out, folder, outputs))
        if seen[0] != seen[1]:
            sys.exit("fuzz: qat %s does not give the same result twice" % name)
        results[name] = seen[0]
    return results


def schedule(count, seed, only):
    """Case index -> command, cheap commands more often than training runs."""
    weights = {"resume": 1, "train-config": 1, "train-data": 1, "train-npy": 1, "train-hdf5": 1, "compare": 1, "verify-checkpoint": 1,
               "verify-deploy": 1}
    names = [n for n in COMMANDS for _ in range(weights.get(n, 2))]
    rng = random.Random(seed)
    plan = [(i, rng.choice(names)) for i in range(count)]
    return [p for p in plan if only is None or p[0] == only]


def report(stats, failing, passed, failed):
    print("\n%-24s %-40s %6s %6s" % ("command", "mutation", "pass", "fail"))
    for (command, mutation), (p, f) in sorted(stats.items()):
        print("%-24s %-40s %6d %6d" % (command, mutation, p, f))
    reasons = collections.Counter(reason for _, reason, _ in failing)
    if failing:
        print("\nfailures by reason: " + ", ".join("%s %d" % kv for kv in reasons.most_common()))
        print("\nfailing cases (each folder holds the damaged file and repro.sh):")
        for case, reason, repro in sorted(failing, key=lambda x: x[0].index):
            print("  #%d %s %s: %s\n    %s" % (case.index, case.command, case.mutation, reason, repro))
    print("%d passed, %d failed" % (passed, failed))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--case", type=int, help="run only this case index (of the same --cases/--seed)")
    ap.add_argument("--qat", default=os.path.join(REPO, ".build/release/qat"))
    ap.add_argument("--work", default=os.path.join(REPO, ".build/fuzz"))
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    opts = ap.parse_args()
    opts.qat, opts.work = os.path.abspath(opts.qat), os.path.abspath(opts.work)
    qat, work = opts.qat, opts.work
    if not os.access(qat, os.X_OK):
        sys.exit("fuzz: no qat binary at %s (run: swift build -c release --product qat)" % qat)
    start = time.monotonic()
    good = prepare(qat, work, opts.timeout)
    baselines = baselines_for(qat, work, good, opts.timeout)
    os.makedirs(os.path.join(work, "failures"), exist_ok=True)
    print("fuzz: good inputs and baselines in %.1f s; seed %d, %d cases" % (time.monotonic() - start, opts.seed, opts.cases))
    stats, failing = collections.defaultdict(lambda: [0, 0]), []
    with concurrent.futures.ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        plan = schedule(opts.cases, opts.seed, opts.case)
        futures = [pool.submit(run_case, i, c, opts, baselines) for i, c in plan]
        for future in concurrent.futures.as_completed(futures):
            case, passed, reason, repro = future.result()
            stats[(case.command, case.mutation)][0 if passed else 1] += 1
            if not passed:
                failing.append((case, reason, repro))
    passed = sum(p for p, _ in stats.values())
    print("fuzz: %d cases in %.1f s" % (passed + len(failing), time.monotonic() - start))
    report(stats, failing, passed, len(failing))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
