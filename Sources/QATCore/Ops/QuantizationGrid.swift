import Foundation
import QATIO

/// A quantization grid: `bits`-bit codes with scale s and offset o, i.e. the values
/// s·(q − o) for q in [qmin, qmax]. Fake quant, deployment and the comparison tools share it.
public struct QuantizationGrid: Equatable, Sendable, Codable {
    /// Activation bit width: 8 or 16.
    public var bits: Int
    public var scale: Float
    public var offset: Int
    /// Grid-aligned clip bounds [L, U] (ALGORITHMS.md §1 step 4): L = s·(qmin − o), U = L + n·s.
    public var lower: Float
    public var upper: Float

    public init(bits: Int, scale: Float, offset: Int) {
        self.bits = bits
        self.scale = scale
        self.offset = offset
        let range = QuantizationRange(bits: bits)
        lower = scale * Float(range.qmin - offset)
        upper = lower + Float(range.levels) * scale
    }

    /// Fake-quantizes `values` in place: x̂ = s·round(clamp(x/s, qmin − o, qmax − o)), exactly the
    /// fake-quant forward (ALGORITHMS.md §1 step 4).
    public func apply(_ values: inout [Float]) {
        let range = QuantizationRange(bits: bits)
        let (s, low, high) = (scale, Float(range.qmin - offset), Float(range.qmax - offset))
        for i in values.indices { values[i] = (min(max(values[i] / s, low), high)).rounded(.toNearestOrEven) * s }
    }
}
