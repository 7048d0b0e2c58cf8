import ArgumentParser
import Foundation
import QAT

struct CreateConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-config",
        abstract: "Print the default retrain config (AMCT form) for a model: every conv and linear quantized.",
        discussion: "Example: qat create-config --model Configs/models/lenet5.json > my-retrain.json")

    @Option(help: "The model spec, or an ONNX file.") var model: String
    @Option(help: "Write to this file instead of standard output.") var output: String?

    func run() throws {
        try reportingUserErrors {
            let text = createDefaultConfig(for: try ModelSource.load(file: model).spec)
            if let output {
                try AtomicFile.write(Data(text.utf8), to: output)
            } else {
                print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
            }
        }
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show, for every layer, whether it is quantized, the rule that decided it and its final settings.",
        discussion: "Example: qat plan --config Configs/retrain.json")

    @Option(help: "The retrain config.") var config: String
    @Option(help: "Model spec or ONNX file (overrides the config's model.spec).") var model: String?

    func run() throws {
        try reportingUserErrors {
            let root = try JSONObject.load(file: config)
            let retrain = try RetrainConfig.parse(root)
            let settings = try RunSettings.parse(root)
            let spec = try ModelSource.load(file: model ?? settings.modelSpec).spec
            let plan = try retrain.resolve(for: spec)
            print(plan.table(floatNodes: floatNodeLayers(of: spec)))
        }
    }
}
