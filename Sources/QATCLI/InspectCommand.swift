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
            let summary = try CheckpointSummary.read(from: checkpoint)
            print("\(checkpoint): \(CheckpointFile.formatName) v\(CheckpointFile.formatVersion), model \(summary.spec.name), "
                  + "\(summary.kind) checkpoint")
            print("epoch \(summary.epoch), step \(summary.step), config hash \(summary.configHash ?? "none")")
            print("\nparameters (\(summary.parameters.reduce(0) { $0 + $1.tensor.count }) values):")
            for p in summary.parameters {
                print("  " + p.name.padded(to: 28) + "\(p.tensor.shape)".padded(to: 16) + String(format: " max|x| %.4g", p.tensor.maxAbs()))
            }
            if !summary.buffers.isEmpty {
                print("\nbuffers:")
                for b in summary.buffers { print("  \(b.name) \(b.tensor.shape)") }
            }
            if !summary.quantizers.isEmpty {
                print("\nquantizers:")
                for q in summary.quantizers {
                    print("  " + q.layer.padded(to: 8) + String(format: " clip [%.4f, %.4f]  scale %.5g  offset %.0f  weight scales %d (max %.4g)",
                                 q.clipMin, q.clipMax, q.activationScale, q.activationOffset, q.weightScales.count, q.weightScales.max() ?? 0)
                          + (q.gridOptions.isEmpty ? "" : "  " + q.gridOptions.joined(separator: ", ")))
                }
            }
            if summary.optimizerTensorCount > 0 { print("\noptimizer state: \(summary.optimizerTensorCount) tensors") }
        }
    }
}
