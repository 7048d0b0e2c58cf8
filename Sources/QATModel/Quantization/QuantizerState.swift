import QATCore
import QATIO

/// Quantizer state that is not a trainable parameter but must survive a checkpoint: the last
/// valid clip pair, the `initialized` flag, `fixed_min`, and the scales and offset last used
/// (what deployment exports). Stored under /state/quant/<layer>/… as float32 tensors.
extension Model {
    public func quantizerStateTensors() -> [String: Tensor] {
        var state: [String: Tensor] = [:]
        for q in fakeQuantizers {
            let prefix = "quant/\(q.layerName)/"
            let a = q.activation
            state[prefix + "previous_clip"] = Tensor(shape: [2], storage: [a.previousClipMax, a.previousClipMin])
            state[prefix + "initialized"] = .scalar(a.initialized ? 1 : 0)
            state[prefix + "fixed_min"] = .scalar(a.fixedMin ? 1 : 0)
            state[prefix + "activation_scale"] = .scalar(a.scale)
            state[prefix + "activation_offset"] = .scalar(Float(a.offset))
            state[prefix + "weight_scales"] = Tensor(shape: [q.weight.scales.count], storage: q.weight.scales)
            state[prefix + "weight_initialized"] = .scalar(q.weight.initialized ? 1 : 0)
        }
        return state
    }

    /// Restores what `quantizerStateTensors` saved; a missing entry is a checkpoint error, unless
    /// `skippingMissingLayers` (starting QAT from a checkpoint whose plan quantized other layers).
    public func loadQuantizerState(_ state: [String: Tensor], file: String, skippingMissingLayers: Bool = false) throws {
        for q in fakeQuantizers {
            let prefix = "quant/\(q.layerName)/"
            if skippingMissingLayers && state[prefix + "initialized"] == nil { continue }
            func value(_ key: String, count: Int = 1) throws -> [Float] {
                guard let t = state[prefix + key], t.count == count else {
                    throw InputError(file: file, keyPath: "/state/" + prefix + key,
                                     message: "missing or wrong size (expected \(count) values): the checkpoint has no quantizer state for layer \(q.layerName)")
                }
                return t.storage
            }
            let a = q.activation
            let previous = try value("previous_clip", count: 2)
            (a.previousClipMax, a.previousClipMin) = (previous[0], previous[1])
            a.initialized = try value("initialized")[0] != 0
            a.fixedMin = try value("fixed_min")[0] != 0
            a.scale = try value("activation_scale")[0]
            a.offset = Int(try value("activation_offset")[0])
            q.weight.scales = try value("weight_scales", count: q.weight.scales.count)
            q.weight.initialized = try value("weight_initialized")[0] != 0
        }
    }
}
