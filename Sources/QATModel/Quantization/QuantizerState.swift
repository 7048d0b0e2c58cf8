import QATCore
import QATIO

/// The quantizer state of one layer under /state: `quant/<layer>/<name>`, one float32 tensor each.
package enum QuantizerStateKey: String, CaseIterable {
    case previousClip = "previous_clip", initialized, fixedMin = "fixed_min"
    case activationScale = "activation_scale", activationOffset = "activation_offset"
    case weightScales = "weight_scales", weightInitialized = "weight_initialized"
    /// NUQ layers only: [rows, num_steps] int8 levels, each row ascending, padded with its last level.
    case nuqLevels = "nuq_levels"

    package static let group = "quant/"

    /// The state key of this entry for `layer`, relative to /state.
    package func key(layer: String) -> String { Self.group + layer + "/" + rawValue }

    /// The layers that have quantizer state among a checkpoint's /state keys.
    package static func layers(in keys: some Sequence<String>) -> Set<String> {
        Set(keys.filter { $0.hasPrefix(group) }.map { String($0.dropFirst(group.count).prefix { $0 != "/" }) })
    }
}

/// Quantizer state that is not a trainable parameter but must survive a checkpoint: the last
/// valid clip pair, the `initialized` flag, `fixed_min`, and the scales and offset last used
/// (what deployment exports). Stored under /state/quant/<layer>/… as float32 tensors.
extension Model {
    public func quantizerStateTensors() -> [String: Tensor] {
        var state = tensorQuantizerStateTensors()
        for q in fakeQuantizers {
            func set(_ key: QuantizerStateKey, _ tensor: Tensor) { state[key.key(layer: q.layerName)] = tensor }
            let a = q.activation
            set(.previousClip, Tensor(shape: [2], storage: [a.previousClipMax, a.previousClipMin]))
            set(.initialized, .scalar(a.initialized ? 1 : 0))
            set(.fixedMin, .scalar(a.fixedMin ? 1 : 0))
            set(.activationScale, .scalar(a.scale))
            set(.activationOffset, .scalar(Float(a.offset)))
            set(.weightScales, Tensor(shape: [q.weight.scales.count], storage: q.weight.scales))
            set(.weightInitialized, .scalar(q.weight.initialized ? 1 : 0))
            if let nonUniform = q.weight.nonUniform, let levels = nonUniform.levels {
                let steps = nonUniform.parameters.steps
                let padded = levels.flatMap { row in (0..<steps).map { Float(row[min($0, row.count - 1)]) } }
                set(.nuqLevels, Tensor(shape: [levels.count, steps], storage: padded))
            }
        }
        return state
    }

    /// Restores what `quantizerStateTensors` saved; a missing entry is a checkpoint error, unless
    /// `skippingMissingLayers` (starting QAT from a checkpoint whose plan quantized other layers).
    public func loadQuantizerState(_ state: [String: Tensor], file: String, skippingMissingLayers: Bool = false) throws {
        try loadTensorQuantizerState(state, file: file, skippingMissingLayers: skippingMissingLayers)
        for q in fakeQuantizers {
            if skippingMissingLayers && state[QuantizerStateKey.initialized.key(layer: q.layerName)] == nil { continue }
            func value(_ key: QuantizerStateKey, count: Int = 1) throws -> [Float] {
                guard let t = state[key.key(layer: q.layerName)], t.count == count else {
                    throw InputError(file: file, keyPath: "/state/" + key.key(layer: q.layerName),
                                     message: "missing or wrong size (expected \(count) values): the checkpoint has no quantizer state for layer \(q.layerName)")
                }
                guard t.storage.allSatisfy(\.isFinite) else {
                    throw InputError(file: file, keyPath: "/state/" + key.key(layer: q.layerName), message: "holds a value that is not finite")
                }
                return t.storage
            }
            func flag(_ key: QuantizerStateKey) throws -> Bool {
                let v = try value(key)[0]
                guard v == 0 || v == 1 else {
                    throw InputError(file: file, keyPath: "/state/" + key.key(layer: q.layerName), message: "must be 0 or 1, got \(v)")
                }
                return v == 1
            }
            let a = q.activation
            let previous = try value(.previousClip, count: 2)
            (a.previousClipMax, a.previousClipMin) = (previous[0], previous[1])
            a.initialized = try flag(.initialized)
            a.fixedMin = try flag(.fixedMin)
            a.scale = try value(.activationScale)[0]
            let offset = try value(.activationOffset)[0]
            // An INT8/INT16 offset is an integer well inside ±2¹⁷; anything else is damage.
            guard offset == offset.rounded(), abs(offset) <= 131_072 else {
                throw InputError(file: file, keyPath: "/state/" + QuantizerStateKey.activationOffset.key(layer: q.layerName),
                                 message: "must be an integer offset of the quantization grid, got \(offset)")
            }
            a.offset = Int(offset)
            q.weight.scales = try value(.weightScales, count: q.weight.scales.count)
            q.weight.initialized = try flag(.weightInitialized)
            // A NUQ checkpoint written before its first forward has no levels: they are chosen then.
            if let nonUniform = q.weight.nonUniform, state[QuantizerStateKey.nuqLevels.key(layer: q.layerName)] != nil {
                let steps = nonUniform.parameters.steps
                let values = try value(.nuqLevels, count: q.weight.rowCount * steps)
                var levels: [[Int]] = []
                for r in 0..<q.weight.rowCount {
                    let row = values[(r * steps)..<((r + 1) * steps)]
                    guard row.allSatisfy({ $0 == $0.rounded() && $0 >= -128 && $0 <= 127 }), zip(row, row.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                        throw InputError(file: file, keyPath: "/state/" + QuantizerStateKey.nuqLevels.key(layer: q.layerName),
                                         message: "row \(r) is not an ascending list of int8 levels")
                    }
                    var distinct: [Int] = []
                    for level in row.map({ Int($0) }) where distinct.last != level { distinct.append(level) }
                    levels.append(distinct)
                }
                nonUniform.levels = levels
            }
        }
    }
}
