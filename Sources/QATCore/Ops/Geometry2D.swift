import QATIO

/// A height and a width: kernel sizes, strides and dilations of the 2-D ops.
public struct Size2D: Equatable, Sendable {
    public var height, width: Int

    /// The same value along both axes (what an int in a spec means).
    public init(_ both: Int) { (height, width) = (both, both) }
    public init(height: Int, width: Int) { (self.height, self.width) = (height, width) }

    var isSquare: Bool { height == width }
}

/// Zero (or −∞, for max pooling) rows and columns added around an image before a window slides.
public struct Padding2D: Equatable, Sendable {
    public var top, left, bottom, right: Int

    /// The same amount on all four sides.
    public init(_ all: Int) { (top, left, bottom, right) = (all, all, all, all) }
    public init(top: Int, left: Int, bottom: Int, right: Int) {
        (self.top, self.left, self.bottom, self.right) = (top, left, bottom, right)
    }

    /// Top equals bottom and left equals right (what PyTorch's `padding=[ph, pw]` can express).
    public var isSymmetric: Bool { top == bottom && left == right }
    /// All four sides the same (what the square fast paths handle).
    var isUniform: Bool { isSymmetric && top == left }
}

/// Output length of a window sliding along one axis (ONNX/PyTorch rule):
/// floor_or_ceil((in + padBegin + padEnd − dilation·(kernel − 1) − 1) / stride) + 1; with
/// `ceilMode`, a last window that would start past the input and the begin padding is dropped.
/// Returns 0 or less when the (dilated) kernel does not fit.
func slidingWindowCount(input: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int,
                        dilation: Int = 1, ceilMode: Bool = false) -> Int {
    let span = input + padBegin + padEnd - dilation * (kernel - 1) - 1
    if span < 0 { return 0 }
    var count = (ceilMode ? (span + stride - 1) / stride : span / stride) + 1
    if ceilMode && (count - 1) * stride >= input + padBegin { count -= 1 }
    return count
}
