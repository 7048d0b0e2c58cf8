import ArgumentParser
import Foundation
import QAT

struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Translate an ONNX model into a model spec and a float checkpoint that every other command takes.",
        discussion: """
            Writes DIR/<model>.json and DIR/<model>-float.h5, named after the ONNX file. Layer names come \
            from the ONNX node names (docs/ONNX.md says how they are sanitised). An op, attribute or shape \
            that qat does not support is an error naming the node, and nothing is written then. \
            `--model model.onnx` is also accepted wherever a spec is (train, plan, create-config, check model).

            Examples:
              qat import Tests/Fixtures/onnx/mobile.onnx --output-dir Imported
              qat train --config Configs/float.json \\
                --model Tests/Fixtures/onnx/lenet.onnx --epochs 1
            """)

    @Argument(help: "The ONNX file.") var onnxFile: String
    @Option(name: .customLong("output-dir"), help: "Folder for the spec and the checkpoint (created if missing).") var outputDir: String

    func run() throws {
        try reportingUserErrors {
            let imported = try ImportedModel.load(onnxFile: onnxFile)
            let name = imported.spec.name
            let specPath = (outputDir as NSString).appendingPathComponent("\(name).json")
            let checkpointPath = (outputDir as NSString).appendingPathComponent("\(name)-float.h5")
            do {
                try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
            } catch {
                throw InputError(file: outputDir, message: "cannot create the output folder (\(error.localizedDescription))")
            }
            try AtomicFile.write(Data(imported.spec.fileText().utf8), to: specPath)
            try imported.checkpoint.write(to: checkpointPath)
            let layers = imported.layerCounts.map { "\($0.count) \($0.type)" }.joined(separator: ", ")
            print("imported \(onnxFile) (opset \(imported.opset)): \(imported.spec.layers.count) layers (\(layers)), "
                  + "\(imported.parameterCount) parameters, input \(imported.spec.inputShape), "
                  + "\(imported.model.graph.outputShapes.last ?? []) output, \(imported.removedNodes) node(s) folded or removed")
            print("wrote \(specPath) and \(checkpointPath)")
            let configPath = (outputDir as NSString).appendingPathComponent("\(name)-retrain.json")
            print("next: qat create-config --model \(specPath) --output \(configPath)")
            print("      qat train --config \(configPath) --model \(specPath) --init \(checkpointPath)")
        }
    }
}
