import QATCore
import QATIO

/// The fake quantization of one conv or linear layer during QAT: ULQ on its input, ARQ (or LSQ,
/// or ARQ with NUQ levels) on its weight, as the layer's `QuantizerSettings` say. A weight-only
/// layer (`weight_compress_only`) passes its input through unchanged; a cast layer (`floatCast`)
/// casts its input, weight and bias to float formats and back instead.
public final class FakeQuantizer: LayerQuantizer {
    public let layerName: String
    public let settings: QuantizerSettings
    public let activation: ActivationQuantizerState
    public let weight: WeightQuantizerState
    /// Set during calibration: receives every input batch the quantizer sees.
    package var collectInput: ((Tensor) -> Void)?

    public init(layerName: String, settings: QuantizerSettings, weightShape: [Int]) {
        self.layerName = layerName
        self.settings = settings
        activation = ActivationQuantizerState(fixedMin: settings.fixedMin, numBits: settings.activationType.bitWidth,
                                              powerOfTwoScale: settings.activationScaleType == .powerOfTwo,
                                              roundMode: settings.activationRoundMode, narrowRange: settings.activationNarrowRange)
        if let clipMax = settings.clipMax, let clipMin = settings.clipMin {
            activation.setClipRange(max: clipMax, min: clipMin)
        }
        // Frozen bounds need no gradient, and then neither does the quantizer's input: for the
        // first conv this spares the whole input-gradient pass.
        activation.clipMax.requiresGrad = settings.learnClip && !settings.weightCompressOnly
        activation.clipMin.requiresGrad = settings.learnClip && !settings.weightCompressOnly
        weight = WeightQuantizerState(weightShape: weightShape, channelWise: settings.channelWise,
                                      algorithm: settings.weightAlgorithm == .ulqRetrain ? .lsq : .arq,
                                      numBits: settings.weightType.bitWidth,
                                      powerOfTwo: settings.weightScaleType == .powerOfTwo,
                                      roundMode: settings.weightRoundMode, narrowRange: settings.weightNarrowRange,
                                      searchesPowerOfTwo: settings.weightScaleMethod == .diffs)
        weight.nonUniform = settings.nonUniform.map(NonUniformWeights.init)
        weight.asymmetric = settings.asymmetricWeights
        weight.rangeMethod = settings.weightScaleMethod.rowThreshold(percentage: settings.weightPercentage)
    }

    /// True when the input goes onto an integer grid (false for weight-only and cast layers).
    public var quantizesInput: Bool { !settings.weightCompressOnly && settings.floatCast == nil }

    public func quantizeInput(_ x: Variable, training: Bool, tape: Tape?) -> Variable {
        if let cast = settings.floatCast { return fakeCast(x, to: cast.input, tape: tape) }
        guard quantizesInput else { return x }
        collectInput?(x.value)
        return ulqFakeQuantize(x, state: activation, tape: tape)
    }

    public func quantizeWeight(_ w: Variable, tape: Tape?) -> Variable {
        if let cast = settings.floatCast { return fakeCast(w, to: cast.weights, tape: tape) }
        return weightFakeQuantize(w, state: weight, tape: tape)
    }

    /// The bias: cast in a cast layer; on its own grid when the plan quantizes biases
    /// (`settings.biasGrid`, straight-through); else float (the eval forward puts it on the
    /// accumulator grid).
    public func quantizeBias(_ bias: Variable, tape: Tape?) -> Variable {
        if let cast = settings.floatCast { return fakeCast(bias, to: cast.bias, tape: tape) }
        guard let grid = settings.biasGrid else { return bias }
        return biasFakeQuantize(bias, grid: grid, tape: tape)
    }

    /// The clip bounds' parameter names, relative to the layer (`conv1.act_quant.clip_max`).
    public static let clipMaxName = "act_quant.clip_max", clipMinName = "act_quant.clip_min"

    public var parameters: [NamedVariable] {
        var list = [NamedVariable(Self.clipMaxName, activation.clipMax),
                    NamedVariable(Self.clipMinName, activation.clipMin)]
        if let scales = weight.learnedScales { list.append(NamedVariable("weight_quant.scale", scales)) }
        return list
    }
}

extension Model {
    /// Attaches a fake quantizer to every layer the plan quantizes, and the shared quantizer of
    /// every add under `joint_quant` (and removes any others).
    public func applyQuantization(_ plan: QuantizationPlan) {
        applyTensorQuantization(plan)
        for layer in layers {
            guard let weighted = layer as? WeightedLayer else { continue }
            if let settings = plan.layer(named: layer.name)?.quantizer {
                weighted.quantizer = FakeQuantizer(layerName: layer.name, settings: settings, weightShape: weighted.weight.shape)
            } else {
                weighted.quantizer = nil
            }
        }
    }

    /// The attached fake quantizers, in layer order.
    public var fakeQuantizers: [FakeQuantizer] {
        layers.compactMap { ($0 as? WeightedLayer)?.quantizer as? FakeQuantizer }
    }

    /// Calibration (docs/ALGORITHMS.md §2): runs `batches` through the model in eval mode, collects each
    /// uncalibrated quantizer's input, and sets its starting clip bounds with the layer's
    /// calibration method (`settings.calibration`, IFMR unless the config says otherwise).
    /// Layers whose bounds came from the config, or that are already initialised (a resumed run),
    /// are left alone. Returns the calibrated layer names.
    @discardableResult
    public func calibrate(on batches: [Tensor]) throws -> [String] {
        let pending = fakeQuantizers.filter { $0.quantizesInput && !$0.activation.initialized }
        // The adds' shared grids (joint_quant) calibrate in the same pass, on both operands' values.
        let pendingAdds = tensorQuantizers.filter { !$0.activation.initialized }
        guard !(pending.isEmpty && pendingAdds.isEmpty), !batches.isEmpty else { return [] }
        var collected = [String: [Tensor]]()
        for quantizer in pending {
            quantizer.collectInput = { collected[quantizer.layerName, default: []].append($0) }
        }
        for quantizer in pendingAdds {
            quantizer.collectInput = { collected[quantizer.layerName, default: []].append($0) }
        }
        defer {
            for quantizer in pending { quantizer.collectInput = nil }
            for quantizer in pendingAdds { quantizer.collectInput = nil }
        }
        for batch in batches { _ = forward(batch, training: false, tape: nil) }
        for quantizer in pendingAdds {
            let bounds = try quantizer.settings.calibration.calibrator
                .startingClipRange(batches: collected[quantizer.layerName] ?? [], layer: quantizer.layerName)
            quantizer.activation.setClipRange(max: bounds.clipMax, min: bounds.clipMin)
        }
        for quantizer in pending {
            let bounds = try quantizer.settings.calibration.calibrator
                .startingClipRange(batches: collected[quantizer.layerName] ?? [], layer: quantizer.layerName)
            // With fixed_min the forward pins m to 0; storing 0 now keeps the state exactly what
            // the forward will use, so an lr = 0 step changes nothing.
            let activation = quantizer.activation
            activation.setClipRange(max: bounds.clipMax, min: activation.fixedMin ? 0 : bounds.clipMin)
        }
        return pendingAdds.map(\.layerName) + pending.map(\.layerName)
    }
}
