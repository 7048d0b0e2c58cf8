import ArgumentParser
import Foundation
import QAT

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Summarise a checkpoint: model, run state, parameters and quantizer state.",
        discussion: "Example: qat inspect Checkpoints/lenet5-float.h5")

    @Argument(help: "The checkpoint file.") var checkpoint: String

    func run() throws {
        try reportingUserErrors {
            let file = try CheckpointFile.read(from: checkpoint)
            let spec = try ModelSpec.parse(JSONObject.parse(Data(file.modelSpecJSON.utf8), file: checkpoint))
            print("\(checkpoint): \(CheckpointFile.formatName) v\(CheckpointFile.formatVersion), model \(spec.name), "
                  + "\(file.attributes["kind"] ?? "float") checkpoint")
            let c = file.counters
            print("epoch \(c["epoch"] ?? 0), step \(c["step"] ?? 0), config hash \(file.attributes["config_hash"] ?? "none")")
            print("\nparameters (\(file.parameters.reduce(0) { $0 + $1.tensor.count }) values):")
            for p in file.parameters {
                print("  " + p.name.padded(to: 28) + "\(p.tensor.shape)".padded(to: 16) + String(format: " max|x| %.4g", p.tensor.maxAbs()))
            }
            if !file.buffers.isEmpty {
                print("\nbuffers:")
                for b in file.buffers { print("  \(b.name) \(b.tensor.shape)") }
            }
            let quantLayers = Set(file.extra.keys.filter { $0.hasPrefix("quant/") }.map { $0.split(separator: "/")[1] })
            if !quantLayers.isEmpty {
                print("\nquantizers:")
                for layer in spec.layers.map(\.name) where quantLayers.contains(Substring(layer)) {
                    let params = Dictionary(uniqueKeysWithValues: file.parameters.map { ($0.name, $0.tensor) })
                    let clipMax = params["\(layer).act_quant.clip_max"]?.storage.first ?? .nan
                    let clipMin = params["\(layer).act_quant.clip_min"]?.storage.first ?? .nan
                    let scale = file.extra["quant/\(layer)/activation_scale"]?.storage.first ?? .nan
                    let offset = file.extra["quant/\(layer)/activation_offset"]?.storage.first ?? .nan
                    let ws = file.extra["quant/\(layer)/weight_scales"]?.storage ?? []
                    print("  " + layer.padded(to: 8) + String(format: " clip [%.4f, %.4f]  scale %.5g  offset %.0f  weight scales %d (max %.4g)",
                                 clipMin, clipMax, scale, offset, ws.count, ws.max() ?? 0))
                }
            }
            let optimizerTensors = file.extra.keys.filter { $0.hasPrefix("optimizer/") }.count
            if optimizerTensors > 0 { print("\noptimizer state: \(optimizerTensors) tensors") }
        }
    }
}
