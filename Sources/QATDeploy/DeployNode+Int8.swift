import QATCore

/// How `Int8Model` runs a deploy node.
extension DeployNode {
    /// An integer node whose output codes come from accumulators by rounding right shifts (every
    /// multiplier an exact 2^−k, no bias residual; docs/ALGORITHMS.md §5.1), as `Int8Model`
    /// decides when it loads the node.
    public var requantizesByShift: Bool {
        guard isInteger, output != nil else { return false }
        return Int8Kernels.Requantization.shifts(of: multipliers, offsets: biasResidual) != nil
    }

    /// A max pool the integer kernel takes: square window and stride, no padding, no ceil mode.
    var hasPlainPoolGeometry: Bool {
        kernel.height == kernel.width && stride.height == stride.width && padding == Padding2D(0) && !ceilMode
    }
}
