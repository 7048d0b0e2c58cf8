"""The two example networks of issue 10, sized for 1x28x28 Fashion-MNIST, and the data reader.

Shared by export.py (train, export to ONNX) and bench/pytorch_peers.py (PyTorch's speed on the
same networks). Needs torch and numpy.
"""

import gzip
import os

import numpy as np
import torch
from torch import nn
from torch.ao.nn.quantized import FloatFunctional

DATA_DIR = "/usr/share/datasets/fashion-mnist"
# The normalisation every qat config and these examples use: (pixel/255 - MEAN) / STD.
MEAN, STD = 0.2860, 0.3530


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST IDX files (gzip'd or plain)

def _open(path):
    if os.path.exists(path):
        return open(path, "rb")
    if os.path.exists(path + ".gz"):
        return gzip.open(path + ".gz", "rb")
    raise FileNotFoundError(f"{path}(.gz): Fashion-MNIST IDX file not found")


def read_idx(path):
    """An IDX file as a uint8 numpy array (magic 0x0000 08 <rank>, big-endian sizes)."""
    with _open(path) as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    rank = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape).copy()


def load_fashion_mnist(split, data_dir=DATA_DIR):
    """(images uint8 [N,28,28], labels int64 [N]) for split 'train' or 't10k'."""
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte")).astype(np.int64)
    return images, labels


def normalise(images_uint8):
    """uint8 [N,28,28] (numpy or torch) -> float32 torch [N,1,28,28]."""
    x = torch.as_tensor(images_uint8).to(torch.float32).unsqueeze(1)
    return (x / 255.0 - MEAN) / STD


# ---------------------------------------------------------------------------------------------
# MobileNetV2-style network

class SqueezeExcite(nn.Module):
    """GlobalAveragePool -> 1x1 conv -> ReLU -> 1x1 conv -> gate -> Mul (as in MobileNetV3)."""

    def __init__(self, channels, reduced, gate):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate
        # FloatFunctional: a plain `*` in float and ONNX (Mul), a quantizable op for PyTorch's
        # eager INT8 conversion (bench/pytorch_peers.py).
        self.scale = FloatFunctional()

    def forward(self, x):
        s = self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))
        return self.scale.mul(x, s)


class InvertedResidual(nn.Module):
    """1x1 expand (BN, activation) -> depthwise 3x3 stride 1/2 (BN, activation) -> optional SE
    -> linear 1x1 bottleneck (BN, no activation); identity residual when shapes match."""

    def __init__(self, cin, cout, stride, expand, activation=nn.ReLU6, se_gate=None):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), activation()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), activation()]
        if se_gate is not None:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4), se_gate()))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = FloatFunctional()  # Add in ONNX; see SqueezeExcite

    def forward(self, x):
        y = self.block(x)
        return self.residual.add(x, y) if self.use_residual else y


class MobileNetV2Tiny(nn.Module):
    """28x28 -> 28 (stem) -> 14 -> 7 -> GAP -> 10 classes. Widths 8-96."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 8, 1, 1),                                 # 28x28, no expand
            InvertedResidual(8, 16, 2, 4),                                 # -> 14x14
            InvertedResidual(16, 16, 1, 4),                                # residual
            InvertedResidual(16, 24, 2, 4, nn.Hardswish, nn.Hardsigmoid),  # -> 7x7, SE
            InvertedResidual(24, 24, 1, 4, nn.Hardswish, nn.Sigmoid),      # residual, SE
            InvertedResidual(24, 32, 1, 4),
        )
        self.head = nn.Sequential(nn.Conv2d(32, 96, 1, bias=False), nn.BatchNorm2d(96),
                                  nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(96, num_classes)

    def forward(self, x):
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------
# ResNet-18-style network

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual = FloatFunctional()  # Add in ONNX; see SqueezeExcite
        self.relu2 = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(self.residual.add(y, identity))


class ResNet18Tiny(nn.Module):
    """Basic blocks [2, 2, 2, 2], widths 8-16-32-64; 28 -> stem 28 -> maxpool 14 -> 14 -> 7 -> 4
    -> 2 -> GAP -> 10 classes."""

    def __init__(self, widths=(8, 16, 32, 64), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


EXAMPLE_MODELS = {
    "mobilenetv2-tiny": MobileNetV2Tiny,
    "resnet18-tiny": ResNet18Tiny,
}
