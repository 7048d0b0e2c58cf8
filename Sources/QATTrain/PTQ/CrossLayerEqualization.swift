import Foundation
import QATCore
import QATModel

/// Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization
/// and Bias Correction", 2019): for two convs A → [BN] → ReLU → B, output channel i of A (or of
/// its BN) is divided by s_i and input channel i of B multiplied by s_i. ReLU(x/s) = ReLU(x)/s for
/// s > 0, so the float model computes the same function, while s_i = √(r_A,i / r_B,i) makes the
/// ranges of A's channel i (r_A,i = max |W_A[i]|, times BN's |γ/√(σ²+ε)| when a BN folds into A)
/// and of B's input channel i (r_B,i = max |W_B[:, i]|) equal, which is what per-tensor and
/// per-output-channel weight grids need.
public enum CrossLayerEqualization {
    /// One equalized pair, for the log.
    public struct Pair: Equatable, Sendable {
        public var first: String
        public var second: String
    }

    /// Sweeps over the pairs until no scale moves by more than 1e-4 (at most 20 sweeps).
    /// Returns the pairs it equalized.
    @discardableResult
    public static func apply(to model: Model) -> [Pair] {
        let pairs = equalizablePairs(in: model)
        for _ in 0..<20 {
            var largestStep = 0.0
            for pair in pairs { largestStep = max(largestStep, equalize(pair, in: model)) }
            if largestStep < 1e-4 { break }
        }
        return pairs.map { Pair(first: model.spec.layers[$0.first].name, second: model.spec.layers[$0.second].name) }
    }

    /// Layer indices of A, its folded BN (if any) and B.
    struct Indices {
        var first: Int
        var batchNorm: Int?
        var second: Int
    }

    /// A conv whose output reaches a plain conv (groups 1) through at most a BN and a ReLU or
    /// leaky ReLU (both positively homogeneous), each the only reader of the value before it.
    static func equalizablePairs(in model: Model) -> [Indices] {
        let graph = model.graph
        let kinds = model.spec.layers.map(\.kind)
        func soleReader(_ value: Int) -> Int? {
            let readers = graph.consumers(of: value)
            return readers.count == 1 && value != kinds.count - 1 ? readers[0] : nil
        }
        var pairs: [Indices] = []
        for (a, kind) in kinds.enumerated() {
            guard case .conv2d = kind, var next = soleReader(a) else { continue }
            var batchNorm: Int?
            if case .batchnorm2d = kinds[next] {
                batchNorm = next
                guard let after = soleReader(next) else { continue }
                next = after
            }
            switch kinds[next] {
            case .relu, .leakyReLU:
                guard let after = soleReader(next) else { continue }
                next = after
            default: break
            }
            guard case .conv2d(let b) = kinds[next], b.groups == 1 else { continue }
            pairs.append(Indices(first: a, batchNorm: batchNorm, second: next))
        }
        return pairs
    }

    /// Equalizes one pair; returns the largest |log s_i|.
    static func equalize(_ pair: Indices, in model: Model) -> Double {
        let first = model.layers[pair.first] as! Conv2DLayer
        let second = model.layers[pair.second] as! Conv2DLayer
        let channels = first.convolution.outputChannels
        let firstRow = first.weight.value.count / channels
        let secondIn = second.convolution.inputChannels
        let taps = second.weight.value.count / (second.convolution.outputChannels * secondIn)
        let batchNorm = pair.batchNorm.map { model.layers[$0] as! BatchNorm2DLayer }
        var largest = 0.0
        for c in 0..<channels {
            var rangeFirst = 0.0
            for j in (c * firstRow)..<((c + 1) * firstRow) { rangeFirst = max(rangeFirst, Double(abs(first.weight.value.storage[j]))) }
            if let bn = batchNorm {
                let invStd = 1 / (Double(bn.statistics.variance.storage[c]) + Double(bn.attributes.epsilon)).squareRoot()
                rangeFirst *= abs(Double(bn.gamma.value.storage[c])) * invStd
            }
            var rangeSecond = 0.0
            for o in 0..<second.convolution.outputChannels {
                let start = (o * secondIn + c) * taps
                for j in start..<(start + taps) { rangeSecond = max(rangeSecond, Double(abs(second.weight.value.storage[j]))) }
            }
            guard rangeFirst > 0, rangeSecond > 0, rangeFirst.isFinite, rangeSecond.isFinite else { continue }
            let s = (rangeFirst / rangeSecond).squareRoot()
            largest = max(largest, abs(log(s)))
            let down = Float(1 / s), up = Float(s)
            if let bn = batchNorm {
                bn.gamma.value.storage[c] *= down
                bn.beta.value.storage[c] *= down
            } else {
                for j in (c * firstRow)..<((c + 1) * firstRow) { first.weight.value.storage[j] *= down }
                first.bias?.value.storage[c] *= down
            }
            for o in 0..<second.convolution.outputChannels {
                let start = (o * secondIn + c) * taps
                for j in start..<(start + taps) { second.weight.value.storage[j] *= up }
            }
        }
        return largest
    }
}
