import Foundation
import QATCore
import QATIO

// How a resolved plan shows itself: `qat plan`'s table and notes, and the calibration summary
// the commands print.

extension QuantizationPlan {
    /// The plan as a fixed-width table, one row per layer, followed by the warnings.
    /// `floatNodes`: the layers the INT8 engine always runs as float nodes (QATDeploy's
    /// `floatNodeLayers(of:)`; QATModel cannot see lowering), listed in a note.
    public func table(floatNodes: [String] = []) -> String {
        var rows = [["layer", "type", "quantized", "width", "activation", "fixed_min", "weights", "rule"]]
        for layer in layers {
            if let joint = layer.tensorQuantizer {
                let grid = joint.inputIndex.map { "input \($0) grid" } ?? (layer.kind.layerType == .add ? "shared input grid" : "input grid")
                rows.append([layer.name, layer.kind.typeName, "inputs", "int8", "\(grid), \(joint.calibration.name.uppercased())",
                             "false", "-", layer.rule])
                continue
            }
            guard let q = layer.quantizer else {
                rows.append([layer.name, layer.kind.typeName, "no", "float", "-", "-", "-", layer.rule])
                continue
            }
            if let cast = q.floatCast {
                rows.append([layer.name, layer.kind.typeName, "cast", cast.summary, "\(cast.input.rawValue) cast", "-",
                             "\(cast.weights.rawValue) cast, bias \(cast.bias.rawValue)", layer.rule])
                continue
            }
            let width = (q.activationType == q.weightType
                ? q.activationType.rawValue : "\(q.activationType.rawValue)/\(q.weightType.rawValue)")
                + (q.activationType == .int16 ? " (float on INT8 engine)" : "")
            let bounds = (q.clipMax.map { "clip [\(q.clipMin!), \($0)]" } ?? q.calibration.name.uppercased())
                + (q.learnClip ? "" : ", frozen") + (q.dmqStrength.map { ", DMQ α \($0)" } ?? "")
                + (q.activationScaleType == .powerOfTwo ? ", poweroftwo" : "")
                + (q.activationRoundMode == .halfEven ? "" : ", \(q.activationRoundMode.rawValue)")
                + (q.activationNarrowRange ? ", narrow_range" : "")
            let fixedMin = q.fixedMin
                ? (q.fixedMinIsDefault ? "true (relu input)" : "true")
                : (q.fixedMinIsDefault ? "false (default)" : "false")
            var weights = "\(q.weightAlgorithm.rawValue), \(q.channelWise ? "channel_wise" : "per-tensor")"
                + (q.weightScaleType == .powerOfTwo ? ", poweroftwo" : "") + (q.weightScaleMethod == .maxmin ? "" : " (\(q.weightScaleMethod.rawValue)"
                    + (q.weightPercentage.map { " \($0)" } ?? "") + ")")
                + (q.weightRoundMode == .halfEven ? "" : ", \(q.weightRoundMode.rawValue)")
                + (q.weightNarrowRange ? ", narrow_range" : "")
            if let bias = q.biasGrid { weights += "; bias \(bias.summary)" }
            if let nuq = q.nonUniform { weights += ", NUQ \(nuq.steps) levels, \(nuq.iterations) iteration(s)" }
            if q.asymmetricWeights { weights += ", asymmetric" }
            if q.weightCompressOnly {
                rows.append([layer.name, layer.kind.typeName, "weights only", "float/\(q.weightType.rawValue)", "float input",
                             "-", weights, layer.rule])
                continue
            }
            rows.append([layer.name, layer.kind.typeName, "yes", width, "\(q.activationAlgorithm.rawValue), \(bounds)",
                         fixedMin, weights, layer.rule])
        }
        // Pad every column but the last to its widest cell.
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                column == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count)
            }.joined(separator: "  ")
        }
        var text = "Quantization plan for model \(modelName) (config \(configFile), batch_num \(batchCount)): "
            + "\(quantizedLayers.count) of \(layers.count) layers quantized\n\n"
        text += line(rows[0]) + "\n"
        text += line(widths.map { String(repeating: "-", count: $0) }) + "\n"
        for row in rows.dropFirst() { text += line(row) + "\n" }
        if quantizedLayers.contains(where: { $0.quantizer?.activationType == .int16 }) {
            text += "\nINT16 layers deploy as float layers that apply their 16-bit input grid and INT8 weight codes "
                + "exactly as fake quant does (docs/DEPLOY-FORMAT.md); the INT8 engine has no int16 kernels.\n"
        }
        if quantizedLayers.contains(where: { $0.quantizer?.weightCompressOnly == true }) {
            text += "\nWeight-only layers (weight_compress_only) keep a float input and deploy as float layers with their "
                + "dequantized INT8 weights (docs/DEPLOY-FORMAT.md).\n"
        }
        text += autoNonUniformNote()
        let casts = quantizedLayers.compactMap(\.quantizer?.floatCast)
        if !casts.isEmpty {
            text += "\nCast layers (datatype bfloat16, float16, float32) round their input, weights and bias to the float "
                + "format and back (nearest even; float16 overflows to ±inf) and deploy as float layers that cast the same "
                + "way; they need no calibration (docs/ALGORITHMS.md §3.6)."
                + (casts.contains { $0.input.isIdentity || $0.weights.isIdentity || $0.bias.isIdentity }
                   ? " float32 is the identity: a float32 tensor is left exactly as it is." : "") + "\n"
        }
        if layers.contains(where: { $0.tensorQuantizer != nil && $0.kind.layerType == .maxpool2d }) {
            text += "\nMax pools under tensor_quantize fake-quantize their input on their own INT8 grid; the INT8 engine "
                + "pools those codes (max commutes with the monotone quantizer).\n"
        }
        if layers.contains(where: { $0.tensorQuantizer?.inputIndex != nil }) {
            text += "\nAdds under tensor_quantize fake-quantize the one input input_index names on its own INT8 grid; the other "
                + "input stays as it is and the sum stays float; the INT8 engine adds that input's codes, dequantized, to the "
                + "other in float exactly as fake quant does.\n"
        }
        if layers.contains(where: { $0.tensorQuantizer != nil && $0.tensorQuantizer?.inputIndex == nil && $0.kind.layerType == .add }) {
            text += "\nAdds under joint_quant fake-quantize both inputs on one shared INT8 grid, calibrated on both "
                + "inputs' values together; the INT8 engine adds their codes in float exactly as fake quant does.\n"
        }
        if !floatNodes.isEmpty {
            text += "\nOn the INT8 engine these layers run as float nodes (the training op in eval mode, between "
                + "dequantize and quantize; docs/DEPLOY-FORMAT.md): \(floatNodes.joined(separator: ", ")).\n"
        }
        if !notes.isEmpty {
            text += "\nnotes:\n" + notes.map { "  - \($0)\n" }.joined()
        }
        if !warnings.isEmpty {
            text += "\nwarnings:\n" + warnings.map { "  - \($0)\n" }.joined()
        }
        return text
    }
}

extension QuantizationPlan {
    /// The named layers grouped by calibration method in plan order, e.g. "conv1, fc1 with IFMR
    /// and conv2 with HFMG".
    public func describeCalibration(of names: [String]) -> String {
        var groups: [(method: String, layers: [String])] = []
        for name in names {
            let entry = layer(named: name)
            let method = (entry?.quantizer?.calibration ?? entry?.tensorQuantizer?.calibration)?.name.uppercased() ?? "no quantizer"
            if let index = groups.firstIndex(where: { $0.method == method }) {
                groups[index].layers.append(name)
            } else {
                groups.append((method, [name]))
            }
        }
        return groups.map { "\($0.layers.joined(separator: ", ")) with \($0.method)" }.joined(separator: " and ")
    }
}
