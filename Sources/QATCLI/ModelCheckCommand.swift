import ArgumentParser
import Foundation
import QAT

struct ModelCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Static check of a model spec and retrain config before training.",
        discussion: """
            Reports config entries that match no layer, quantizable layers the config leaves out, \
            shared outputs (a tensor read by several layers, with the quantizers each reader applies), \
            quantized convs with few input channels, and BatchNorms that cannot be folded at deployment. \
            Exits 1 when there are errors, 0 with warnings only. See docs/DEBUGGING.md.
            Example: qat check model --config Configs/retrain.json
            """)

    @Option(help: "The retrain config.") var config: String
    @Option(help: "Model spec or ONNX file (overrides the config's model.spec).") var model: String?
    @Option(name: .customLong("few-channels"), help: "Flag quantized convs with at most this many input channels.")
    var fewChannels = 3

    func run() throws {
        let (report, formatLine) = try reportingUserErrors { () -> (ModelCheckReport, String) in
            let (retrain, root) = try RetrainConfig.read(file: config)
            let settings = try RunSettings.parse(root)
            let spec = try ModelSource.load(file: model ?? settings.modelSpec).spec
            return (checkModel(spec: spec, config: retrain, fewChannels: fewChannels), ConfigReader.checkModel.line(for: retrain, file: config))
        }
        print(formatLine)
        print(report.text(), terminator: "")
        if !report.passed { throw ExitCode(1) }
    }
}
