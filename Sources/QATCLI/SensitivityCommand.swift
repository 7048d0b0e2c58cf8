import ArgumentParser
import Foundation
import QAT

extension SensitivityRanking: ExpressibleByArgument {}
extension SensitivityAction: ExpressibleByArgument {}

struct SensitivityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sensitivity",
        abstract: "Rank quantized layers by how much quantizing them costs (one layer alone, and all but one).",
        discussion: """
            For each quantized layer: the loss and accuracy with only that layer quantized, and with \
            every other layer quantized, on the first --eval-limit test images, against the float model. \
            A float checkpoint is quantized with the --config plan and every variant is calibrated (IFMR, \
            or each layer's act_algo) on the same batches (the config's batch_num training batches, as qat train draws them); \
            a QAT checkpoint's trained clip bounds are reused (no calibration). --write-config writes a \
            retrain config with the top-k layers skipped (--action skip) or at INT16 (--action int16), \
            checkpointing into a folder named after it.

            Examples:
              qat sensitivity --checkpoint Checkpoints/lenet5-float.h5 \\
                --config Configs/retrain.json
              qat sensitivity --checkpoint Checkpoints/lenet5-qat/final.h5 --top 3
              qat sensitivity --checkpoint Checkpoints/lenet5-float.h5 --config my.json \\
                --write-config fixed.json --action int16 --top-k 1
            """)

    @Option(help: "A float checkpoint (with --config) or a QAT checkpoint.") var checkpoint: String
    @Option(help: "Retrain config: the plan to study for a float checkpoint; runtime sections and base of --write-config.") var config: String?
    @Option(name: .customLong("eval-limit"), help: "Evaluate on the first N test images.") var evalLimit = 1000
    @Option(name: .customLong("batch-size"), help: "Evaluation batch size.") var batchSize = 256
    @Option(name: .customLong("rank-by"), help: "single-loss, single-accuracy, leave-out-loss, leave-out-accuracy or output-l1.")
    var rankBy = SensitivityRanking.singleLoss
    @Option(help: "Show the N most sensitive layers.") var top = 10
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(name: .customLong("write-config"), help: "Write a retrain config with --action applied to the --top-k layers.")
    var writeConfig: String?
    @Option(help: "For --write-config: skip (keep float) or int16.") var action = SensitivityAction.int16
    @Option(name: .customLong("top-k"), help: "For --write-config: how many of the top layers to change.") var topK = 1
    @Option(help: "Folder of Fashion-MNIST IDX files (default: the config's data.path).") var data: String?
    @Option(name: .customLong("train-limit"), help: "Calibrate on batches drawn from the first N training images (as qat train --train-limit).")
    var trainLimit: Int?
    @Flag(help: "No progress lines on standard error.") var quiet = false
    @Option(help: "Threads.") var threads = 1

    func validate() throws {
        for (name, value) in [("eval-limit", evalLimit), ("batch-size", batchSize), ("top", top), ("top-k", topK), ("threads", threads)]
        where value <= 0 {
            throw ValidationError("--\(name) must be positive, got \(value)")
        }
        for (name, value, range) in [("batch-size", batchSize, RunSettings.Limits.batchSize), ("threads", threads, RunSettings.Limits.threads)]
        where !range.contains(value) {
            throw ValidationError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        if let trainLimit, trainLimit <= 0 { throw ValidationError("--train-limit must be positive, got \(trainLimit)") }
    }

    func run() throws {
        let (report, written) = try reportingUserErrors { () -> (SensitivityReport, String?) in
            Runtime.configure(threads: threads)
            let subject = try DebugSubject(checkpoint: checkpoint, configFile: config, dataPath: data, trainLimit: trainLimit)
            let analysis = try SensitivityAnalysis.load(subject) { DebugCLI.log($0, toStandardError: true) }
            let report = try analysis.run(evaluation: try subject.testImages(limit: evalLimit), batchSize: batchSize, ranking: rankBy) { line in
                if !quiet { DebugCLI.log(line, toStandardError: true) }
            }
            var written: String?
            if let writeConfig {
                let chosen = report.rows.prefix(topK).map(\.layer)
                if action == .skip && chosen.count == analysis.plan.quantizedLayers.count {
                    throw RunError("--top-k \(topK) with --action skip would leave no layer quantized (the plan quantizes \(chosen.count))")
                }
                let runFolder = (writeConfig as NSString).deletingPathExtension
                let fixed = analysis.fixedConfig(applying: action, to: Set(chosen), base: subject.config, runFolder: runFolder)
                try AtomicFile.write(Data(fixed.jsonText(layerOrder: subject.spec.layers.map(\.name)).utf8), to: writeConfig)
                let weightOnly = chosen.filter { analysis.plan.layer(named: $0)?.quantizer?.weightCompressOnly == true }
                written = "wrote \(writeConfig): \(action == .skip ? "kept float" : "INT16 input"): \(chosen.joined(separator: ", "))"
                    + (action == .int16 && !weightOnly.isEmpty
                        ? " (not \(weightOnly.joined(separator: ", ")): weight-only, the input is float already)" : "")
                    + (subject.config == nil ? " (no --config: the file has only the layer rules)" : "")
                    + "; training it checkpoints into \(runFolder)/"
            }
            return (report, written)
        }
        if json {
            print(try report.jsonString())
        } else {
            print(report.table(top: top), terminator: "")
        }
        if let written { DebugCLI.log(written, toStandardError: json) }
    }
}
