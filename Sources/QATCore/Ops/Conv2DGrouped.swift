import CKernels
import QATIO

/// 2-D convolution with groups, dilation, asymmetric padding and rectangular kernels and strides
/// (ONNX Conv, PyTorch conv2d). Weight [O, C / groups, KH, KW].
public func conv2d(_ x: Variable, weight: Variable, bias: Variable?, stride: Size2D, padding: Padding2D,
                   dilation: Size2D, groups: Int, tape: Tape?) -> Variable {
    fatalError("conv2d(groups:) not written yet")
}
