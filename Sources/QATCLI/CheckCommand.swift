import ArgumentParser
import Foundation
import QAT

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Sanity checks of a QAT set-up.",
        subcommands: [LR0CheckCommand.self, ModelCheckCommand.self])
}

struct LR0CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lr0",
        abstract: "Fine-tune with learning rate 0 after calibration; nothing may change.",
        discussion: """
            Runs --steps fake-quant training steps at lr = 0 and checks that weights, clip bounds, \
            quantizer scales and BN statistics are bit-identical and that the fake-quant evaluation \
            metric equals the post-calibration one. BN running statistics are frozen for the check \
            (they are learned state too). Exits 1 on failure.
            Example: qat check lr0 --config Configs/retrain.json
            """)

    @Option(help: "The retrain config.") var config: String
    @Option(help: "Number of lr = 0 steps.") var steps = 20
    @Option(name: .customLong("eval-limit"), help: "Evaluate on the first N test images.") var evalLimit = 2000
    @Option(help: "Threads.") var threads: Int?

    func validate() throws {
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard evalLimit > 0 else { throw ValidationError("--eval-limit must be positive") }
    }

    func run() throws {
        let report = try reportingUserErrors { () -> LR0Report in
            let (retrain, root) = try RetrainConfig.read(file: config)
            var settings = try RunSettings.parse(root)
            if let threads { settings.threads = threads }
            Runtime.configure(threads: settings.threads)
            let job = try TrainingRun(configFile: config, config: retrain, settings: settings)
            guard job.isQAT else { throw RunError("\(config): no layer is quantized, so there is no QAT pipeline to check") }
            job.log = { _ in }
            let train = try job.loadData(.train, limit: settings.trainLimit)
            let test = try job.loadData(.test, limit: evalLimit)
            return try job.lr0Check(train: train, evaluation: test, steps: steps)
        }
        print(report.table())
        if !report.passed { throw ExitCode(1) }
    }
}
