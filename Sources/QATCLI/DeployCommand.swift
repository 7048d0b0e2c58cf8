import ArgumentParser
import Foundation
import QAT

struct DeployCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Turn a QAT checkpoint into an INT8 deploy file (BN folded, int8 weights, int32 biases).",
        discussion: """
            Folds each BatchNorm into the quantized conv before it, quantizes weights to int8 with \
            per-channel scales and biases to int32, and records every layer's activation scale and \
            offset and requantization multipliers. The file holds only what the INT8 engine needs; \
            its schema is docs/DEPLOY-FORMAT.md.

            Example:
              qat deploy --checkpoint Checkpoints/lenet5-qat/final.h5 \\
                --output Checkpoints/lenet5-int8.h5
            """)

    @Option(help: "The QAT checkpoint.") var checkpoint: String
    @Option(help: "The deploy file to write.") var output: String

    func run() throws {
        try reportingUserErrors {
            let deployed = try Deployer.deploy(checkpoint: checkpoint)
            try deployed.write(to: output)
            let integer = deployed.nodes.filter(\.isInteger)
            print("\(output): \(deployed.modelName), \(deployed.nodes.count) nodes, \(integer.count) integer layers "
                  + "(\(integer.reduce(0) { $0 + $1.weightCodes.count }) int8 weights)")
            let byShift = integer.filter(\.requantizesByShift)
            if !byShift.isEmpty {
                let requantizing = integer.filter { $0.output != nil }
                print("requantize by shift (power-of-two multipliers, integers only): \(byShift.count) of \(requantizing.count) "
                      + "requantizing layers (\(byShift.map(\.name).joined(separator: ", ")))")
            }
            for node in deployed.nodes {
                var line = "  " + node.name.padded(to: 22) + node.op.rawValue.padded(to: 12)
                line += (node.isInteger ? "int8 in" : "").padded(to: 9)
                line += (node.output.map { String(format: "→ int8 (s %.4g, o %d%@)", $0.scale, Int($0.zeroPoint), node.fusedActivation.map { ", \($0)" } ?? "") } ?? "→ float")
                if !node.fused.isEmpty { line += "  fused: " + node.fused.joined(separator: ", ") }
                if node.requantizesByShift { line += "  requantize by shift" }
                print(line)
                if let steps = node.nonUniformSteps {
                    print("  " + "".padded(to: 22) + "NUQ (nuq_quantize): at most \(steps) levels per weight row, written as "
                          + "its int8 codes for the INT8 kernels")
                }
                if let cast = node.floatCast {
                    print("  " + "".padded(to: 22) + "cast (datatype \(cast.summary)): "
                          + (cast.isIdentity ? "float32 is the identity, run as a plain float \(node.op.rawValue)"
                             : "input cast to \(cast.input.rawValue) and back, weights \(cast.weights.rawValue), bias \(cast.bias.rawValue), "
                               + "run as a float \(node.op.rawValue) on the INT8 engine"))
                }
                if node.op == .add && node.sharedInputGrid == nil {
                    print("  " + "".padded(to: 22) + "float add: both inputs dequantized and summed in float32, as the float model "
                          + "(Vitis AI's keep_add_layer_accuracy); a quantized reader quantizes the sum")
                }
                if let shared = node.sharedInputGrid {
                    let grid = String(format: "(s %.4g, o %d)", shared.scale, Int(shared.zeroPoint))
                    let text: String
                    switch (node.op == .add, node.sharedInputIndex) {
                    case (true, let k?):
                        text = "tensor_quantize: input \(k) as int8 codes on its own grid \(grid), input \(1 - k) as it comes, "
                            + "summed in float exactly as fake quant sums them"
                    case (true, nil):
                        text = "joint_quant: both inputs as int8 codes on one grid \(grid), summed in float exactly as fake quant sums them"
                    case (false, _):
                        text = "tensor_quantize: input as int8 codes on its own grid \(grid), pooled on codes"
                    }
                    print("  " + "".padded(to: 22) + text)
                }
                if node.isWeightOnly {
                    print("  " + "".padded(to: 22) + "weight-only (weight_compress_only): float input and the dequantized INT8 "
                          + "weights, run as a float \(node.op.rawValue) on the INT8 engine")
                }
            }
        }
    }
}
