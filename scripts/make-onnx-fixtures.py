#!/usr/bin/env python3
"""Writes the ONNX test fixtures in Tests/Fixtures/onnx with the `onnx` Python package.

Run once by hand (the files are committed; `make test` does not need Python's onnx):
    python3 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install onnx numpy
    /tmp/onnx-venv/bin/python scripts/make-onnx-fixtures.py

lenet.onnx: a LeNet-style classifier for 28×28 images with the layer set qat imports today, and
lenet-input.pb / lenet-output.pb: a batch of 3 inputs and the outputs of onnx's own
reference evaluator (onnx.reference.ReferenceEvaluator), the outside reference the import
is checked against. The bad-*.onnx files each carry one defect the importer must report.
"""
import os
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "onnx")
rng = np.random.default_rng(7)


def init(name, shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def save(model, name, check=True):
    model.ir_version = 8  # Debian's libonnx 1.12 reads IR ≤ 8
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name))


def opsets(version=13):
    return [helper.make_opsetid("", version)]


def lenet():
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="/features/conv1/Conv",
                         kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("BatchNormalization", ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["b1"],
                         name="/features/bn1/BatchNormalization", epsilon=1e-3),
        helper.make_node("Relu", ["b1"], ["r1"], name="/features/relu1/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="/features/pool1/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight"], ["c2"], name="/features/conv2/Conv", kernel_shape=[3, 3],
                         auto_pad="SAME_UPPER"),
        helper.make_node("Constant", [], ["clip_min"], value=numpy_helper.from_array(np.array(0, np.float32))),
        helper.make_node("Constant", [], ["clip_max"], value=numpy_helper.from_array(np.array(6, np.float32))),
        helper.make_node("Clip", ["c2", "clip_min", "clip_max"], ["r2"], name="/features/relu6/Clip"),
        helper.make_node("Conv", ["r2", "conv3.weight", "conv3.bias"], ["c3"], name="/features/conv3/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r2"], ["res"], name="/features/residual/Add"),
        helper.make_node("AveragePool", ["res"], ["p2"], name="/features/pool2/AveragePool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Identity", ["p2"], ["p2i"]),
        helper.make_node("Constant", [], ["flat_shape"], value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Reshape", ["p2i", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["f1"], name="/classifier/fc1/Gemm",
                         transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["f1"], ["fr1"], name="/classifier/relu/Relu"),
        helper.make_node("Dropout", ["fr1"], ["d1"], name="/classifier/dropout/Dropout"),
        helper.make_node("MatMul", ["d1", "fc2.weight"], ["m2"], name="/classifier/fc2/MatMul"),
        helper.make_node("Add", ["m2", "fc2.bias"], ["logits"], name="/classifier/fc2/Add"),
    ]
    inits = [
        init("conv1.weight", [4, 1, 5, 5]), init("conv1.bias", [4]),
        init("bn1.scale", [4]), init("bn1.bias", [4]), init("bn1.mean", [4], 0.1),
        numpy_helper.from_array((rng.random(4) + 0.5).astype(np.float32), "bn1.var"),
        init("conv2.weight", [6, 4, 3, 3]), init("conv3.weight", [6, 6, 3, 3]), init("conv3.bias", [6]),
        init("fc1.weight", [16, 6 * 7 * 7], 0.1), init("fc1.bias", [16]),
        init("fc2.weight", [16, 10]), init("fc2.bias", [10]),
    ]
    graph = helper.make_graph(nodes, "lenet", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    # Opset 15: onnx's ReferenceEvaluator runs opset 9-13 BatchNormalization with a momentum
    # attribute as a training-mode update (not what ONNX specifies for one output); 14+ is exact.
    model = helper.make_model(graph, opset_imports=opsets(15), producer_name="qat make-onnx-fixtures.py")
    save(model, "lenet.onnx")
    x = rng.standard_normal([3, 1, 28, 28]).astype(np.float32)
    (y,) = ReferenceEvaluator(model).run(None, {"image": x})
    onnx.save_tensor(numpy_helper.from_array(x, "image"), os.path.join(OUT, "lenet-input.pb"))
    onnx.save_tensor(numpy_helper.from_array(y, "logits"), os.path.join(OUT, "lenet-output.pb"))
    return model


def mobile():
    """A MobileNetV3-style block set: depthwise and grouped conv, HardSwish, squeeze-and-excitation
    (GlobalAveragePool, 1×1 convs, HardSigmoid, Mul), Concat, LeakyRelu, Sigmoid, a general Clip,
    an Add and a Mul with constants, asymmetric pads, dilation, ceil-mode pooling."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["image", "stem.w", "stem.b"], ["s"], name="stem", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["s"], ["s1"], name="stem_act"),
        helper.make_node("Conv", ["s1", "dw.w"], ["d"], name="block1.dw", kernel_shape=[3, 3], group=c, pads=[0, 1, 2, 1], dilations=[1, 1]),
        helper.make_node("BatchNormalization", ["d", "dw.scale", "dw.bias", "dw.mean", "dw.var"], ["db"], name="block1.bn"),
        helper.make_node("Clip", ["db", "clip_lo", "clip_hi"], ["dc"], name="block1.clip"),
        helper.make_node("GlobalAveragePool", ["dc"], ["g"], name="block1.se.pool"),
        helper.make_node("Conv", ["g", "se1.w", "se1.b"], ["g1"], name="block1.se.fc1", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["g1"], ["g2"], name="block1.se.relu"),
        helper.make_node("Conv", ["g2", "se2.w", "se2.b"], ["g3"], name="block1.se.fc2", kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["g3"], ["g4"], name="block1.se.gate", alpha=1.0 / 6, beta=0.5),
        helper.make_node("Mul", ["dc", "g4"], ["se"], name="block1.se.scale"),
        helper.make_node("Conv", ["se", "pw.w"], ["p"], name="block1.pw", kernel_shape=[1, 1], group=2),
        helper.make_node("Conv", ["s1", "dil.w"], ["q"], name="block1.dilated", kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("LeakyRelu", ["q"], ["q1"], name="block1.leaky", alpha=0.1),
        helper.make_node("Concat", ["p", "q1"], ["cat"], name="block1.concat", axis=1),
        helper.make_node("Mul", ["cat", "channel_scale"], ["cs"], name="block1.channel_scale"),
        helper.make_node("Add", ["channel_shift", "cs"], ["csh"], name="block1.channel_shift"),
        helper.make_node("Sigmoid", ["csh"], ["sg"], name="block1.sigmoid"),
        helper.make_node("MaxPool", ["sg"], ["mp"], name="block1.pool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["mp"], ["ap"], name="head.pool", kernel_shape=[2, 2], pads=[1, 1, 1, 1], strides=[2, 2],
                         count_include_pad=0),
        helper.make_node("Flatten", ["ap"], ["f"], name="head.flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="head.fc", transB=1),
    ]
    inits = [
        init("stem.w", [c, 1, 3, 3]), init("stem.b", [c]), init("dw.w", [c, 1, 3, 3]),
        init("dw.scale", [c]), init("dw.bias", [c]), init("dw.mean", [c], 0.1),
        numpy_helper.from_array((rng.random(c) + 0.5).astype(np.float32), "dw.var"),
        numpy_helper.from_array(np.array(-0.5, np.float32), "clip_lo"), numpy_helper.from_array(np.array(1.5, np.float32), "clip_hi"),
        init("se1.w", [4, c, 1, 1]), init("se1.b", [4]), init("se2.w", [c, 4, 1, 1]), init("se2.b", [c]),
        init("pw.w", [c, c // 2, 1, 1]), init("dil.w", [4, c, 3, 3]),
        init("channel_scale", [1, c + 4, 1, 1], 1.0), init("channel_shift", [c + 4, 1, 1], 1.0),
        init("fc.w", [10, (c + 4) * 2 * 2]), init("fc.b", [10]),
    ]
    graph = helper.make_graph(nodes, "mobile", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 14, 14])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=opsets(15), producer_name="qat make-onnx-fixtures.py")
    save(model, "mobile.onnx")
    x = rng.standard_normal([2, 1, 14, 14]).astype(np.float32)
    (y,) = ReferenceEvaluator(model).run(None, {"image": x})
    onnx.save_tensor(numpy_helper.from_array(x, "image"), os.path.join(OUT, "mobile-input.pb"))
    onnx.save_tensor(numpy_helper.from_array(y, "logits"), os.path.join(OUT, "mobile-output.pb"))


def old_opset():
    """Opset 10: Clip's bounds are attributes. Also two nodes of one name and a node without one."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c"], ["r"], name="act", min=0.0, max=6.0),
        helper.make_node("Clip", ["r"], ["y"], name="act", min=-1.0, max=2.5),
    ]
    graph = helper.make_graph(nodes, "old-opset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8])], [init("w", [4, 4, 3, 3], 1.0)])
    model = helper.make_model(graph, opset_imports=opsets(10))
    save(model, "old-opset.onnx")
    x = rng.standard_normal([2, 4, 8, 8]).astype(np.float32)
    (y,) = ReferenceEvaluator(model).run(None, {"x": x})
    onnx.save_tensor(numpy_helper.from_array(x, "x"), os.path.join(OUT, "old-opset-input.pb"))
    onnx.save_tensor(numpy_helper.from_array(y, "y"), os.path.join(OUT, "old-opset-output.pb"))


def tensors():
    """float16, double and int8 tensors (raw_data and typed fields) and numpy's float32 reading of
    them: the shim's conversions are checked against numpy's."""
    half = np.array([0, -0.0, 1, -2.5, 65504, 6.1035e-05, 5.96e-08, -3.0e-07, np.inf, -np.inf, 0.333], np.float16)
    wide = np.array([[1.0, -1e-3], [1e30, 3.141592653589793]], np.float64)
    small_ints = np.array([-128, -1, 0, 7, 127], np.int8)
    for name, array in [("half", half), ("double", wide), ("int8", small_ints)]:
        raw = numpy_helper.from_array(array, name)
        onnx.save_tensor(raw, os.path.join(OUT, f"tensor-{name}-raw.pb"))
        # The same values in the typed repeated field instead of raw_data.
        typed = helper.make_tensor(name, raw.data_type, array.shape, array.reshape(-1).tolist())
        onnx.save_tensor(typed, os.path.join(OUT, f"tensor-{name}-typed.pb"))
        onnx.save_tensor(numpy_helper.from_array(array.astype(np.float32), name), os.path.join(OUT, f"tensor-{name}-as-float32.pb"))


def small(nodes, inits, name, output_shape=("batch", 4, 8, 8), check=True, opset=13):
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))], inits)
    save(helper.make_model(graph, opset_imports=opsets(opset)), name + ".onnx", check)


def bad():
    w = init("w", [4, 4, 3, 3])
    # An op qat does not import.
    small([helper.make_node("Softmax", ["x"], ["y"], name="head/softmax")], [], "bad-unsupported-op")
    # The conv weight names an initializer that is not there.
    small([helper.make_node("Conv", ["x", "w_missing"], ["y"], name="conv_missing", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
          [], "bad-missing-initializer", check=False)
    # Two nodes reading each other's outputs.
    small([helper.make_node("Add", ["x", "b"], ["a"], name="add_a"), helper.make_node("Relu", ["a"], ["b"], name="relu_b"),
           helper.make_node("Relu", ["a"], ["y"], name="relu_y")], [], "bad-cycle", check=False)
    # A residual Add of 4 and 6 channels.
    small([helper.make_node("Conv", ["x", "w6"], ["c"], name="conv6", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
           helper.make_node("Add", ["x", "c"], ["y"], name="residual_add")],
          [init("w6", [6, 4, 3, 3])], "bad-shape-mismatch", check=False)
    # A 3-D convolution.
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w3"], ["y"], name="conv3d", kernel_shape=[1, 3, 3])], "bad-conv3d",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 2, 6, 6])], [init("w3", [4, 4, 1, 3, 3])])
    save(helper.make_model(graph, opset_imports=opsets()), "bad-conv3d.onnx")
    # An attribute value qat refuses: a dilated max pool.
    small([helper.make_node("MaxPool", ["x"], ["y"], name="pool_dilated", kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2])],
          [], "bad-unsupported-attribute")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    lenet()
    mobile()
    tensors()
    bad()
    old_opset()
    print("wrote", sorted(os.listdir(OUT)))
