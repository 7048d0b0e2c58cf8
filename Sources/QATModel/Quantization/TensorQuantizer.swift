import QATCore
import QATIO

// Quantizers on the input tensors of layers without weights (docs/CONFIG.md, docs/ALGORITHMS.md
// §5): AMCT's `joint_quant` fake-quantizes the two operands of every eltwise add on one shared
// INT8 grid before the float sum, so the INT8 engine adds codes of equal scale and zero point
// exactly as fake quant adds them; AMCT's `tensor_quantize` puts a grid on a max pool's input,
// so the engine pools codes (max commutes with the monotone quantizer), or on one input of an
// add (`input_index`), whose other input stays as it is and whose sum stays float. A shared grid is
// calibrated once on both operands' values together (the calibrator receives the batches of
// both inputs), not as the union of two separately calibrated ranges: one outlier operand would
// otherwise widen the grid for both, and IFMR/HFMG choose the range that fits all the values the
// grid quantizes.

/// The resolved input grid of an add under `joint_quant` (both operands), of a max pool under
/// `tensor_quantize`, or of one input of an add under `tensor_quantize`: INT8, float scale, half
/// to even, calibrated with `calibration`; the lower bound is free (an add's operands may be negative).
public struct TensorQuantizerSettings: Equatable, Sendable {
    public var calibration: CalibrationMethod
    /// The one input on the grid (an add's `input_index` under `tensor_quantize`), or nil: every
    /// input (joint_quant's two operands, a max pool's only input).
    public var inputIndex: Int?

    public init(calibration: CalibrationMethod, inputIndex: Int? = nil) {
        self.calibration = calibration
        self.inputIndex = inputIndex
    }

    /// True when input `k` of the layer is fake-quantized on the grid.
    public func quantizes(input k: Int) -> Bool { inputIndex.map { $0 == k } ?? true }
}

/// One `tensor_quantize` entry: a quantizer on input `inputIndex` of the layer `layerName` (a
/// max pool or an add), calibrated as `calibration` says; `keyPath` names the entry in messages.
public struct TensorQuantizeEntry: Equatable, Sendable {
    public var keyPath: String
    public var layerName: String
    public var inputIndex: Int
    public var calibration: CalibrationConfig
    /// Where a proto-text entry starts (its messages begin with it, as the parser's); nil in JSON.
    public var position: TextPosition?

    public init(keyPath: String, layerName: String, inputIndex: Int, calibration: CalibrationConfig, position: TextPosition? = nil) {
        (self.keyPath, self.layerName, self.inputIndex, self.calibration) = (keyPath, layerName, inputIndex, calibration)
        self.position = position
    }
}

extension RetrainConfig {
    /// Resolves `tensor_quantize` into `layers`: each entry names a max pool or an add of
    /// `wiring`'s model and an input it has; errors name the entry's key path. An add under
    /// `joint_quant` is refused (its inputs share one grid already), and so is a second entry
    /// on one add (one input per add has a grid of its own; joint_quant puts both on one).
    func applyTensorQuantize(to layers: inout [LayerPlan], wiring: ModelGraph.Wiring, warnings: inout [String]) throws {
        let model = wiring.spec
        for entry in tensorQuantize {
            func fail(_ key: String, _ message: String) -> InputError {
                InputError(file: file, keyPath: "\(entry.keyPath).\(key)", message: (entry.position.map { "\($0): " } ?? "") + message)
            }
            func names(_ type: LayerType) -> String {
                let found = model.layers.filter { $0.kind.layerType == type }.map(\.name)
                return found.isEmpty ? "none" : found.joined(separator: ", ")
            }
            let name = truncatedForMessage(entry.layerName)
            guard let index = model.layers.firstIndex(where: { $0.name == entry.layerName }) else {
                throw fail("layer_name", "no layer named \"\(name)\" in model \(model.name) (max pools: \(names(.maxpool2d)); adds: \(names(.add)))")
            }
            let kind = model.layers[index].kind
            let isAdd = kind.layerType == .add
            guard kind.layerType == .maxpool2d || isAdd else {
                throw fail("layer_name", "\(name) is a \(kind.typeName) layer: tensor_quantize quantizes an input of a maxpool2d "
                           + "or an add only")
            }
            let inputs = wiring.sources[index]
            guard entry.inputIndex < inputs.count else {
                throw fail("input_index", "\(entry.inputIndex) is out of range: \(name) has \(inputs.count) input(s) "
                           + "(index \(inputs.count == 1 ? "0" : "0 to \(inputs.count - 1)"))")
            }
            let source = inputs[entry.inputIndex]
            if source >= 0, case .constant = model.layers[source].kind {
                throw fail("input_index", "input \(entry.inputIndex) of \(name) is the constant \(model.layers[source].name): "
                           + "tensor_quantize quantizes a computed tensor (an added constant is a bias, and stays float)")
            }
            if let earlier = layers[index].tensorQuantizer {
                if isAdd && earlier.inputIndex == nil {   // joint_quant ran first
                    throw fail("layer_name", "\(name) is under joint_quant: true, where both its inputs share one grid; tensor_quantize "
                               + "cannot give input \(entry.inputIndex) a grid of its own (set joint_quant false, or drop this entry)")
                }
                throw fail("layer_name", "\(name) is named by an earlier entry already"
                           + (isAdd ? " (one input of an add gets a grid of its own; joint_quant puts both inputs on one shared grid)" : ""))
            }
            let method = try CalibrationConfig.resolve([(calibration, "calibration"), (entry.calibration, entry.keyPath)],
                                                       layer: entry.layerName, file: file, warnings: &warnings)
            layers[index].tensorQuantizer = TensorQuantizerSettings(calibration: method, inputIndex: isAdd ? entry.inputIndex : nil)
            layers[index].rule = entry.keyPath
        }
    }
}

/// The fake quantization of a weightless layer's inputs on one grid (ULQ with learnable clip
/// bounds, as a conv's input quantizer; an add's two operands share the one state under
/// joint_quant, or only the operand `settings.inputIndex` is quantized).
public final class TensorQuantizer {
    public let layerName: String
    public let settings: TensorQuantizerSettings
    public let activation: ActivationQuantizerState
    /// Set during calibration and verification: receives every quantized operand batch, first then second.
    package var collectInput: ((Tensor) -> Void)?

    public init(layerName: String, settings: TensorQuantizerSettings) {
        self.layerName = layerName
        self.settings = settings
        activation = ActivationQuantizerState(fixedMin: false)
    }

    /// The operands the settings name on the grid; any other operand as it is.
    public func quantize(_ operands: [Variable], tape: Tape?) -> [Variable] {
        operands.enumerated().map { k, x in
            guard settings.quantizes(input: k) else { return x }
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
    /// The input quantizers of layers without weights (`joint_quant`, `tensor_quantize`), in layer order.
    public var tensorQuantizers: [TensorQuantizer] {
        layers.compactMap { ($0 as? StatelessLayer)?.inputQuantizer }
    }

    /// Attaches the plan's input quantizers of layers without weights (and removes any others).
    func applyTensorQuantization(_ plan: QuantizationPlan) {
        for case let layer as StatelessLayer in layers {
            layer.inputQuantizer = plan.layer(named: layer.name)?.tensorQuantizer.map { TensorQuantizer(layerName: layer.name, settings: $0) }
        }
    }

    /// Runs `body` with the weightless layers' input quantizers detached (the float model), then puts them back.
    public func withoutTensorQuantizers<T>(_ body: () throws -> T) rethrows -> T {
        let adds = layers.compactMap { $0 as? StatelessLayer }
        let quantizers = adds.map(\.inputQuantizer)
        for layer in adds { layer.inputQuantizer = nil }
        defer { for (layer, quantizer) in zip(adds, quantizers) { layer.inputQuantizer = quantizer } }
        return try body()
    }

    /// The checkpoint state of the weightless layers' input quantizers, under the same keys as a layer's input
    /// quantizer (/state/quant/<add>/…): the last valid clip pair, `initialized`, the grid.
    func tensorQuantizerStateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for q in tensorQuantizers {
            func set(_ key: QuantizerStateKey, _ tensor: Tensor) { state[key.key(layer: q.layerName)] = tensor }
            let a = q.activation
            set(.previousClip, Tensor(shape: [2], storage: [a.previousClipMax, a.previousClipMin]))
            set(.initialized, .scalar(a.initialized ? 1 : 0))
            set(.activationScale, .scalar(a.scale))
            set(.activationOffset, .scalar(Float(a.offset)))
        }
        return state
    }

    /// Restores what `tensorQuantizerStateTensors` saved; errors as `loadQuantizerState`.
    func loadTensorQuantizerState(_ state: [String: Tensor], file: String, skippingMissingLayers: Bool) throws {
        for q in tensorQuantizers {
            if skippingMissingLayers && state[QuantizerStateKey.initialized.key(layer: q.layerName)] == nil { continue }
            func value(_ key: QuantizerStateKey, count: Int = 1) throws -> [Float] {
                let keyPath = "/state/" + key.key(layer: q.layerName)
                guard let t = state[key.key(layer: q.layerName)], t.count == count else {
                    throw InputError(file: file, keyPath: keyPath, message: "missing or wrong size (expected \(count) values): "
                                     + "the checkpoint has no input quantizer state for layer \(q.layerName) (joint_quant or tensor_quantize)")
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
