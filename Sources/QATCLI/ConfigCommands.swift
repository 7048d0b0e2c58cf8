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
        discussion: """
            Reads a config in any format qat knows (AMCT retrain config.json, the simple form, AMCT PTQ \
            config.json; docs/CONFIG.md "Config formats") and says which. --json writes the resolved plan \
            as an AMCT retrain config.json with every setting explicit (what checkpoints record).
            Examples:
              qat plan --config Configs/retrain.json
              qat plan --config Configs/amct/ptq-plain.json \\
                --model Configs/models/lenet5.json --json > plan.json
            """)

    @Option(help: "The quantization config (any format).") var config: String
    @Option(help: "Model spec or ONNX file (overrides the config's model.spec).") var model: String?
    @Flag(help: "Write the resolved plan as JSON (the format line goes to standard error).") var json = false

    func run() throws {
        try reportingUserErrors {
            let (retrain, root) = try RetrainConfig.read(file: config)
            let settings = try RunSettings.parse(root)
            let spec = try ModelSource.load(file: model ?? settings.modelSpec).spec
            let plan = try retrain.resolve(for: spec)
            let line = ConfigReader.plan.line(for: retrain, file: config)
            ConfigReader.printNotes(of: retrain)
            if json {
                FileHandle.standardError.write(Data((line + "\n").utf8))
                print(plan.explicitConfig().jsonText(layerOrder: spec.layers.map(\.name)), terminator: "")
            } else {
                print(line)
                print(plan.table(floatNodes: floatNodeLayers(of: spec)))
            }
        }
    }
}

/// The commands that read a quantization config, for the front door's line.
enum ConfigReader {
    case plan, checkModel, train, calibrate

    /// The reader's changes to the config (`RetrainConfig.notes`), one line each on standard error.
    static func printNotes(of config: RetrainConfig) {
        for note in config.notes { FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
    }

    /// "read <format> <file>", and what this command does with a format written for another one.
    func line(for config: RetrainConfig, file: String) -> String {
        let read = "read \(config.format.name) \(file)"
        switch (self, config.format) {
        case (.train, .amctPTQ), (.train, .amctSimpleProtoText), (.train, .vitis):
            return read + ": qat train calibrates as it says, then fine-tunes the quantized layers with learned "
                + "ulq_quantize clip bounds and arq_retrain weights (qat calibrate runs it without training)"
        case (.calibrate, .amctRetrain), (.calibrate, .simple):
            return read + ": qat calibrate uses its layers, widths, act_algo settings and batch_num; "
                + "learn_clip and ulq_retrain matter to qat train only"
        case (.plan, _), (.checkModel, _), (.train, _), (.calibrate, _):
            return read
        }
    }
}
