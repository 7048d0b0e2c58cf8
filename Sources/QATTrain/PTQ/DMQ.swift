import Foundation
import QATCore
import QATIO
import QATModel

/// DMQ, AMCT's activation balancing (`dmq_balancer_param`, docs/ALGORITHMS.md §2.5), in
/// SmoothQuant's form (Xiao et al. 2023): a quantized conv/linear L with strength α gets, per
/// input channel j, s_j = a_j^α / w_j^(1−α), where a_j = max |X_j| over the calibration batches
/// (X is L's input in the float model) and w_j = max |W[:, j, …]|. L's weights W[:, j] are
/// multiplied by s_j and the layer that made channel j divides its output channel by s_j (its
/// weight row and bias, or a BatchNorm's γ_j and β_j); the ops between them are positively
/// homogeneous (`ModelGraph.Wiring.channelProducer`), so L's float output is unchanged while the
/// channels of its input, which one per-tensor activation scale must cover, come closer together.
///
/// After a flatten, L's input features j·g … j·g+g−1 all come from producer channel j: they form
/// one channel with one scale (a_j and w_j are maxima over the group). A grouped or depthwise L
/// takes input channel j's weights from the outputs of j's group.
public enum DMQ {
    /// What DMQ did to one layer.
    public struct Migration: Equatable, Sendable {
        public var layer: String
        /// The layer whose output channels took the division.
        public var producer: String
        public var strength: Double
        /// s_j per channel of the producer (1 where a_j or w_j is 0 or not finite).
        public var scales: [Double]
    }

    /// One layer to balance: its index, its producer and α.
    struct Target {
        var layer: Int
        var producer: Int
        var strength: Double
    }

    /// Balances every quantized layer the plan gives a strength, in model order, with
    /// statistics from one float pass (fake quantizers detached) over `batches`. Balancing one
    /// layer changes no other target's input, so one pass serves them all.
    public static func apply(to model: Model, plan: QuantizationPlan, batches: [Tensor]) throws -> [Migration] {
        let targets = try self.targets(in: model, plan: plan)
        guard !targets.isEmpty else { return [] }
        let maxima = inputMaxima(of: targets, in: model, batches: batches)
        return zip(targets, maxima).map { target, activation in
            let layer = model.layers[target.layer] as! WeightedLayer
            let columns = weightColumns(of: model, layer: target.layer, channels: activation.count)
            var scales: [Double] = []
            for (channel, ranges) in columns.enumerated() {
                var weight = 0.0
                for range in ranges {
                    for i in range { weight = max(weight, Double(abs(layer.weight.value.storage[i]))) }
                }
                let s = scale(activation: activation[channel], weight: weight, strength: target.strength)
                scales.append(s)
                for range in ranges {
                    for i in range { layer.weight.value.storage[i] *= Float(s) }
                }
            }
            divideOutputChannels(of: model.layers[target.producer], by: scales)
            return Migration(layer: model.spec.layers[target.layer].name, producer: model.spec.layers[target.producer].name,
                             strength: target.strength, scales: scales)
        }
    }

    /// s = a^α / w^(1−α), or 1 when a or w is 0 or not finite (nothing to balance; a NaN stays
    /// where it is rather than spreading into the weights).
    static func scale(activation a: Double, weight w: Double, strength α: Double) -> Double {
        guard a > 0, w > 0, a.isFinite, w.isFinite else { return 1 }
        let s = pow(a, α) / pow(w, 1 - α)
        return s.isFinite && s > 0 ? s : 1
    }

    /// The plan's DMQ layers with their producers, in model order.
    static func targets(in model: Model, plan: QuantizationPlan) throws -> [Target] {
        var targets: [Target] = []
        for (index, layer) in plan.layers.enumerated() {
            guard let strength = layer.quantizer?.dmqStrength else { continue }
            switch model.graph.wiring.channelProducer(ofLayerAt: index) {
            case .success(let found): targets.append(Target(layer: index, producer: found.producer, strength: strength))
            case .failure(let refusal):
                // The plan was resolved against this model, which refuses this already.
                throw refusal.dmqError(layer: layer.name, file: plan.configFile, keyPath: "\(layer.name).dmq_balancer_param")
            }
        }
        return targets
    }

    /// a_j per producer channel for each target: max |x| over the batches, images and positions
    /// of the target's input (a NaN is skipped; an infinity makes that channel's scale 1).
    static func inputMaxima(of targets: [Target], in model: Model, batches: [Tensor]) -> [[Double]] {
        var targetBySource: [Int: Int] = [:]
        for (position, target) in targets.enumerated() { targetBySource[model.graph.sources[target.layer][0]] = position }
        var maxima = targets.map { [Float](repeating: 0, count: model.graph.shape(of: $0.producer)[0]) }
        model.withoutFakeQuantizers {
            for batch in batches {
                _ = model.forward(batch, training: false, tape: nil) { index, output in
                    guard let position = targetBySource[index] else { return }
                    let x = output.value
                    let channels = maxima[position].count
                    let perChannel = x.count / (x.shape[0] * channels)
                    x.storage.withUnsafeBufferPointer { values in
                        for start in stride(from: 0, to: values.count, by: perChannel) {
                            let channel = (start / perChannel) % channels
                            var m = maxima[position][channel]
                            for i in start..<(start + perChannel) where abs(values[i]) > m { m = abs(values[i]) }
                            maxima[position][channel] = m
                        }
                    }
                }
            }
        }
        return maxima.map { $0.map(Double.init) }
    }

    /// For each producer channel j, the index ranges of the weights of `layer` that read it:
    /// W[o, j·g … j·g+g−1] of a linear (g features per channel after a flatten, else 1), and
    /// W[o, j mod c, :, :] for the outputs o of j's group of a conv (c input channels per group).
    static func weightColumns(of model: Model, layer index: Int, channels: Int) -> [[Range<Int>]] {
        switch model.spec.layers[index].kind {
        case .linear(let attributes):
            let (inputs, outputs) = (attributes.inputFeatures, attributes.outputFeatures)
            let group = inputs / channels
            return (0..<channels).map { j in (0..<outputs).map { o in (o * inputs + j * group)..<(o * inputs + (j + 1) * group) } }
        case .conv2d(let convolution):
            let perGroupIn = convolution.inputChannels / convolution.groups
            let perGroupOut = convolution.outputChannels / convolution.groups
            let taps = convolution.kernel.height * convolution.kernel.width
            return (0..<channels).map { j in
                let group = j / perGroupIn
                return (group * perGroupOut..<(group + 1) * perGroupOut).map { o in
                    let start = (o * perGroupIn + j % perGroupIn) * taps
                    return start..<(start + taps)
                }
            }
        case .batchnorm2d, .relu, .relu6, .maxpool2d, .avgpool2d, .flatten, .add, .clip, .leakyReLU, .sigmoid,
             .hardSigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat, .constant:
            preconditionFailure("DMQ balances conv2d and linear layers only; the plan quantizes no other kind")
        }
    }

    /// Divides output channel j of a conv/linear (weight row and bias) or BatchNorm (γ and β) by s_j.
    static func divideOutputChannels(of producer: any Layer, by scales: [Double]) {
        if let batchNorm = producer as? BatchNorm2DLayer {
            for (j, s) in scales.enumerated() {
                batchNorm.gamma.value.storage[j] *= Float(1 / s)
                batchNorm.beta.value.storage[j] *= Float(1 / s)
            }
        } else if let weighted = producer as? WeightedLayer {
            let row = weighted.weight.value.count / scales.count
            for (j, s) in scales.enumerated() {
                for i in (j * row)..<((j + 1) * row) { weighted.weight.value.storage[i] *= Float(1 / s) }
                weighted.bias?.value.storage[j] *= Float(1 / s)
            }
        } else {
            preconditionFailure("a DMQ producer is a conv2d, linear or batchnorm2d (ModelGraph.Wiring.channelProducer)")
        }
    }
}
