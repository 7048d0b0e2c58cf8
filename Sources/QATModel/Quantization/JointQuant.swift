import QATCore
import QATIO

// AMCT's `joint_quant` (docs/CONFIG.md, docs/ALGORITHMS.md §5 "joint quantization"): the two
// operands of every eltwise add are fake-quantized on one shared INT8 grid before the float sum,
// so the INT8 engine adds codes of equal scale and zero point exactly as fake quant adds them.
// The grid is calibrated once on both operands' values together (the calibrator receives the
// batches of both inputs), not as the union of two separately calibrated ranges: one outlier
// operand would otherwise widen the grid for both, and IFMR/HFMG choose the range that fits all
// the values the grid quantizes.

/// The resolved shared input grid of one add under `joint_quant`: INT8, float scale, half to even,
/// calibrated with `calibration`; the lower bound is free (an add's operands may be negative).
public struct JointQuantSettings: Equatable, Sendable {
    public var calibration: CalibrationMethod

    public init(calibration: CalibrationMethod) { self.calibration = calibration }
}

/// The fake quantization of an add's two operands on one shared grid (ULQ with learnable clip
/// bounds, as a conv's input quantizer, but one state for both operands).
public final class JointAddQuantizer {
    public let layerName: String
    public let settings: JointQuantSettings
    public let activation: ActivationQuantizerState
    /// Set during calibration and verification: receives every operand batch, first then second.
    package var collectInput: ((Tensor) -> Void)?

    public init(layerName: String, settings: JointQuantSettings) {
        self.layerName = layerName
        self.settings = settings
        activation = ActivationQuantizerState(fixedMin: false)
    }

    /// Both operands on the shared grid.
    public func quantize(_ operands: [Variable], tape: Tape?) -> [Variable] {
        operands.map { x in
            collectInput?(x.value)
            return ulqFakeQuantize(x, state: activation, tape: tape)
        }
    }

    public var parameters: [NamedVariable] {
        [NamedVariable(FakeQuantizer.clipMaxName, activation.clipMax), NamedVariable(FakeQuantizer.clipMinName, activation.clipMin)]
    }

    /// The shared grid of the eval forward, without a batch (as `FakeQuantizer.inputGrid`); nil
    /// when the quantizer was never calibrated or its bounds are invalid with no previous pair.
    public func grid() -> QuantizationGrid? {
        let a = activation
        guard a.initialized else { return nil }
        let m = a.clipMin.value.storage[0], M = a.clipMax.value.storage[0]
        if (M <= m || !M.isFinite || M < 0 || !m.isFinite || m > 0) && !a.hasValidPreviousPair { return nil }
        let (clipMax, clipMin) = a.resolveClipRange(batch: Tensor(shape: [0]))
        return QuantizationGrid(bits: a.numBits, clipMax: clipMax, clipMin: clipMin, roundMode: a.roundMode, narrowRange: a.narrowRange)
    }
}

/// An add layer: the float sum of its two inputs, with `joint_quant` their shared fake quantizer first.
public final class AddLayer: Layer {
    public let spec: LayerSpec
    public var jointQuantizer: JointAddQuantizer?

    init(spec: LayerSpec) { self.spec = spec }

    public var parameters: [NamedVariable] {
        (jointQuantizer?.parameters ?? []).map { NamedVariable("\(spec.name).\($0.name)", $0.variable) }
    }

    public func forward(_ inputs: [Variable], training: Bool, tape: Tape?) -> Variable {
        let operands = jointQuantizer?.quantize(inputs, tape: tape) ?? inputs
        return add(operands[0], operands[1], tape: tape)
    }
}

extension ModelGraph.Wiring {
    /// True when layer `index` is an add of two values of the same shape, neither a constant:
    /// the eltwise add `joint_quant` quantizes (an add of a constant is a bias, and stays float).
    func isEltwiseAdd(layerAt index: Int) -> Bool {
        guard case .add = spec.layers[index].kind, sources[index].count == 2 else { return false }
        return sources[index].allSatisfy { source in
            if source < 0 { return true }
            if case .constant = spec.layers[source].kind { return false }
            return true
        }
    }
}

extension Model {
    /// The add layers with a shared input quantizer (`joint_quant`), in layer order.
    public var jointAddQuantizers: [JointAddQuantizer] {
        layers.compactMap { ($0 as? AddLayer)?.jointQuantizer }
    }

    /// Attaches the plan's shared add quantizers (and removes any others).
    func applyJointQuantization(_ plan: QuantizationPlan) {
        for case let layer as AddLayer in layers {
            layer.jointQuantizer = plan.layer(named: layer.name)?.jointQuant.map { JointAddQuantizer(layerName: layer.name, settings: $0) }
        }
    }

    /// Runs `body` with the shared add quantizers detached (the float model), then puts them back.
    public func withoutJointQuantizers<T>(_ body: () throws -> T) rethrows -> T {
        let adds = layers.compactMap { $0 as? AddLayer }
        let quantizers = adds.map(\.jointQuantizer)
        for layer in adds { layer.jointQuantizer = nil }
        defer { for (layer, quantizer) in zip(adds, quantizers) { layer.jointQuantizer = quantizer } }
        return try body()
    }

    /// The checkpoint state of the shared add quantizers, under the same keys as a layer's input
    /// quantizer (/state/quant/<add>/…): the last valid clip pair, `initialized`, the grid.
    func jointQuantizerStateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for q in jointAddQuantizers {
            func set(_ key: QuantizerStateKey, _ tensor: Tensor) { state[key.key(layer: q.layerName)] = tensor }
            let a = q.activation
            set(.previousClip, Tensor(shape: [2], storage: [a.previousClipMax, a.previousClipMin]))
            set(.initialized, .scalar(a.initialized ? 1 : 0))
            set(.activationScale, .scalar(a.scale))
            set(.activationOffset, .scalar(Float(a.offset)))
        }
        return state
    }

    /// Restores what `jointQuantizerStateTensors` saved; errors as `loadQuantizerState`.
    func loadJointQuantizerState(_ state: [String: Tensor], file: String, skippingMissingLayers: Bool) throws {
        for q in jointAddQuantizers {
            if skippingMissingLayers && state[QuantizerStateKey.initialized.key(layer: q.layerName)] == nil { continue }
            func value(_ key: QuantizerStateKey, count: Int = 1) throws -> [Float] {
                let keyPath = "/state/" + key.key(layer: q.layerName)
                guard let t = state[key.key(layer: q.layerName)], t.count == count else {
                    throw InputError(file: file, keyPath: keyPath, message: "missing or wrong size (expected \(count) values): "
                                     + "the checkpoint has no shared input quantizer state for add layer \(q.layerName) (joint_quant)")
                }
                guard t.storage.allSatisfy(\.isFinite) else { throw InputError(file: file, keyPath: keyPath, message: "holds a value that is not finite") }
                return t.storage
            }
            let a = q.activation
            let previous = try value(.previousClip, count: 2)
            (a.previousClipMax, a.previousClipMin) = (previous[0], previous[1])
            let initialized = try value(.initialized)[0]
            guard initialized == 0 || initialized == 1 else {
                throw InputError(file: file, keyPath: "/state/" + QuantizerStateKey.initialized.key(layer: q.layerName),
                                 message: "must be 0 or 1, got \(initialized)")
            }
            a.initialized = initialized == 1
            a.scale = try value(.activationScale)[0]
            let offset = try value(.activationOffset)[0]
            guard offset == offset.rounded(), abs(offset) <= 128 else {
                throw InputError(file: file, keyPath: "/state/" + QuantizerStateKey.activationOffset.key(layer: q.layerName),
                                 message: "must be an integer offset of the INT8 grid, got \(offset)")
            }
            a.offset = Int(offset)
        }
    }
}
