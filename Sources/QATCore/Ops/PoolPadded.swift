import CKernels
import QATIO

/// Max and average pooling with rectangular windows and strides, asymmetric padding and ceil
/// mode (ONNX MaxPool/AveragePool, PyTorch max_pool2d/avg_pool2d), and global average pooling.
/// Square windows without padding go to the original loops in Pool.swift (same bytes, same speed).
public func maxPool2d(_ x: Variable, kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool,
                      tape: Tape?) -> Variable {
    fatalError("maxPool2d(kernel: Size2D …) not written yet")
}

public func avgPool2d(_ x: Variable, kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool,
                      countIncludePad: Bool, tape: Tape?) -> Variable {
    fatalError("avgPool2d(kernel: Size2D …) not written yet")
}

/// [N, C, H, W] → [N, C, 1, 1]: the mean of each plane.
public func globalAveragePool(_ x: Variable, tape: Tape?) -> Variable {
    fatalError("globalAveragePool not written yet")
}
