import Foundation
import QATCore
import QATModel

/// Empirical bias correction (Nagel et al. 2019, §4.2): quantization shifts the mean of a layer's
/// output; on the calibration batches, the per-channel mean of each quantized conv/linear
/// output in the fake-quant model is brought back to the float model's.
///
/// Layers are corrected in model order, each measured after the layers before it were corrected,
/// so a correction also absorbs the shift its inputs still carry. A layer with a bias gets
/// b_c −= δ_c; a conv without bias whose BatchNorm folds into it gets μ_c += δ_c on the BN's
/// running mean (the same shift of its output: the BN subtracts μ); any other layer without a
/// bias is left as it is and reported. Afterwards each corrected mean matches the float model's
/// to within one accumulator unit: eval mode rounds the bias to that grid (ALGORITHMS §5).
public enum BiasCorrection {
    /// A corrected layer and its largest |δ_c|.
    public struct Correction: Equatable, Sendable {
        public var layer: String
        public var largestShift: Float
    }

    public struct Result: Equatable, Sendable {
        /// Layers whose bias (or folded BN mean) was corrected.
        public var corrected: [Correction]
        /// Quantized layers with no bias and no folded BN to carry a correction.
        public var skipped: [String]
    }

    /// Corrects `model` (its quantizers calibrated) on `batches`. The float reference is the
    /// model as it is on entry, with the fake quantizers detached.
    public static func apply(to model: Model, batches: [Tensor]) -> Result {
        let quantized = model.layers.indices.filter { ((model.layers[$0] as? WeightedLayer)?.quantizer as? FakeQuantizer) != nil }
        let reference = model.withoutFakeQuantizers { channelMeans(of: model, layers: Set(quantized), batches: batches) }
        var result = Result(corrected: [], skipped: [])
        for index in quantized {
            let layer = model.layers[index] as! WeightedLayer
            let batchNorm = model.graph.batchNormFolds[index].map { model.layers[$0] as! BatchNorm2DLayer }
            guard layer.bias != nil || batchNorm != nil else {
                result.skipped.append(model.spec.layers[index].name)
                continue
            }
            let now = channelMeans(of: model, layers: [index], batches: batches)[index]!
            let shift = zip(now, reference[index]!).map { Float($0 - $1) }
            if let bias = layer.bias {
                for c in shift.indices { bias.value.storage[c] -= shift[c] }
            } else if let bn = batchNorm {
                for c in shift.indices { bn.statistics.mean.storage[c] += shift[c] }
            }
            result.corrected.append(Correction(layer: model.spec.layers[index].name, largestShift: shift.map(abs).max() ?? 0))
        }
        return result
    }

    /// Per layer in `layers`, the mean of each output channel over the batches (all images and
    /// positions), in Double, from eval-mode forwards.
    static func channelMeans(of model: Model, layers: Set<Int>, batches: [Tensor]) -> [Int: [Double]] {
        var sums: [Int: [Double]] = [:]
        var counts: [Int: Int] = [:]
        for batch in batches {
            _ = model.forward(batch, training: false, tape: nil) { index, output in
                guard layers.contains(index) else { return }
                let y = output.value
                let (n, c) = (y.shape[0], y.shape[1])
                let plane = y.count / (n * c)
                var sum = sums[index] ?? [Double](repeating: 0, count: c)
                y.storage.withUnsafeBufferPointer { values in
                    for image in 0..<n {
                        for channel in 0..<c {
                            let start = (image * c + channel) * plane
                            var s = 0.0
                            for j in start..<(start + plane) { s += Double(values[j]) }
                            sum[channel] += s
                        }
                    }
                }
                sums[index] = sum
                counts[index, default: 0] += n * plane
            }
        }
        var means: [Int: [Double]] = [:]
        for (index, sum) in sums { means[index] = sum.map { $0 / Double(counts[index]!) } }
        return means
    }
}
