import ArgumentParser
import Foundation
import QAT

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a QAT checkpoint as an ONNX model in QDQ form (or a float model with --float).",
        discussion: """
            The QDQ model is the INT8 deploy program (qat deploy) in ONNX terms: int8 weight codes with \
            per-channel DequantizeLinear (BN folded), int32 biases, activations through QuantizeLinear/\
            DequantizeLinear with qat's scales and zero points; layers that are not quantized stay float. \
            The model passes onnx::checker before anything is written. docs/DEPLOY-FORMAT.md ("ONNX") \
            says how each quantity maps and what is lost.
            Examples:
              qat export --checkpoint Checkpoints/lenet5-qat/final.h5 \\
                --output lenet5-qdq.onnx
              qat export --checkpoint Checkpoints/lenet5-qat/final.h5 \\
                --output lenet5-exact.onnx --exact
              qat export --checkpoint Checkpoints/lenet5-float.h5 --output lenet5.onnx \\
                --float
            """)

    @Option(help: "The checkpoint (QAT, or float with --float).") var checkpoint: String
    @Option(help: "The ONNX file to write.") var output: String
    @Option(help: "The default-domain opset (13 to 17).") var opset = ONNXExporter.defaultOpset
    @Option(help: "standard (what ONNX Runtime runs) or tensorrt (symmetric int8 only: zero points 0, positive weight scales).")
    var profile: ONNXExportProfile = .standard
    @Flag(help: "Integer layers as ConvInteger/MatMulInteger with the requantization as explicit ops: ONNX Runtime then gives our engine's codes bit for bit, at the cost of fused int8 kernels.")
    var exact = false
    @Flag(name: .customLong("float"), help: "Write the float model (no quantization), which `qat import` reads back.")
    var floatModel = false

    func run() throws {
        try reportingUserErrors {
            if floatModel && exact {
                throw InputError(file: checkpoint, keyPath: "--exact", message: "applies to the quantized export only, not to --float")
            }
            let bytes = floatModel
                ? try ONNXExporter.exportFloat(checkpoint: checkpoint, opset: opset)
                : try ONNXExporter.exportQDQ(checkpoint: checkpoint, opset: opset, profile: profile, exact: exact) {
                    FileHandle.standardError.write(Data("warning: \($0)\n".utf8))
                }
            try AtomicFile.write(bytes, to: output)
            print("\(output): \(floatModel ? "float" : exact ? "exact integer-op" : "QDQ") ONNX model of \(checkpoint), opset \(opset), \(bytes.count) bytes")
        }
    }
}

extension ONNXExportProfile: ExpressibleByArgument {}
