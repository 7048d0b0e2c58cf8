import ArgumentParser
import Foundation
import QAT

extension RunSettings.BatchNormSyncMode: ExpressibleByArgument {}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model in float, or fine-tune it with fake quantization (QAT).",
        discussion: """
            Under mpirun (mpirun -np K qat train …) the K processes train data-parallel: each takes \
            its share of every batch of batch_size, and rank 0 writes the checkpoints and metrics.

            A config with layer rules (AMCT retrain form or simple form) runs QAT: it starts from \
            model.init, calibrates clip bounds (IFMR, or the config's act_algo), then fine-tunes with fake quant. A config \
            with only the runtime sections trains in float. Flags override the config; see docs/CONFIG.md.

            Examples:
              qat train --config Configs/float.json
              qat train --config Configs/retrain.json --epochs 3
              qat train --config Configs/retrain.json \\
                --resume Checkpoints/lenet5-qat/epoch-1.h5
              qat train --config my-amct-config.json \\
                --model Configs/models/lenet5.json --init Checkpoints/lenet5-float.h5
              mpirun -np 2 qat train --config Configs/retrain.json --threads 1
            """)

    @Option(help: "The run's JSON config.") var config: String
    @Option(help: "Model spec or ONNX file (overrides model.spec; an ONNX file's weights start the run unless --init is given).") var model: String?
    @Option(help: "Checkpoint to start from (overrides model.init).") var `init`: String?
    @Option(help: "Number of epochs.") var epochs: Int?
    @Option(help: "Base learning rate.") var lr: Float?
    @Option(name: .customLong("batch-size"), help: "Training batch size.") var batchSize: Int?
    @Option(help: "Seed for initialisation and shuffling.") var seed: UInt64?
    @Option(help: "Threads for BLAS and our own loops.") var threads: Int?
    @Option(help: "Where to write the final checkpoint.") var output: String?
    @Option(name: .customLong("checkpoint-dir"), help: "Folder for per-epoch checkpoints.") var checkpointDir: String?
    @Option(name: .customLong("save-every"), help: "Also checkpoint every N steps.") var saveEvery: Int?
    @Option(help: "Continue the run saved in this checkpoint.") var resume: String?
    @Flag(help: "Resume even if the config differs from the checkpoint's.") var force = false
    @Option(name: .customLong("bn-sync"), help: "Under mpirun: BatchNorm statistics over the global batch (global, the default) or each rank's share (per-rank).")
    var bnSync: RunSettings.BatchNormSyncMode?
    @Option(name: .customLong("train-limit"), help: "Use only the first N training images.") var trainLimit: Int?
    @Option(name: .customLong("test-limit"), help: "Use only the first N test images.") var testLimit: Int?

    func validate() throws {
        for (name, value) in [("epochs", epochs), ("batch-size", batchSize), ("threads", threads),
                              ("train-limit", trainLimit), ("test-limit", testLimit)] {
            if let value, value <= 0 { throw ValidationError("--\(name) must be positive, got \(value)") }
        }
        for (name, value, range) in [("epochs", epochs, RunSettings.Limits.epochs), ("batch-size", batchSize, RunSettings.Limits.batchSize),
                                     ("threads", threads, RunSettings.Limits.threads)] {
            if let value, !range.contains(value) {
                throw ValidationError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
            }
        }
        if let saveEvery, saveEvery < 0 { throw ValidationError("--save-every must be ≥ 0, got \(saveEvery)") }
        if let lr, !(lr >= 0) { throw ValidationError("--lr must be ≥ 0, got \(lr)") }
    }

    /// The config's settings with this command's flags applied.
    func resolvedSettings(_ root: JSONObject) throws -> RunSettings {
        var settings = try RunSettings.parse(root)
        if let model { settings.modelSpec = model }
        if let `init` { settings.initCheckpoint = `init` }
        if let epochs { settings.setEpochs(epochs) }
        if let lr { settings.learningRate = lr }
        if let batchSize { settings.batchSize = batchSize }
        if let seed { settings.seed = seed }
        if let threads { settings.threads = threads }
        if let output { settings.output = output }
        if let checkpointDir { settings.checkpointDirectory = checkpointDir }
        if let saveEvery { settings.saveEvery = saveEvery }
        if let trainLimit { settings.trainLimit = trainLimit }
        if let testLimit { settings.testLimit = testLimit }
        if let bnSync { settings.batchNormSync = bnSync }
        return settings
    }

    func run() throws {
        let communicator = Communicator.fromEnvironment()
        do {
            try train(communicator)
        } catch let error as UserError where communicator.size > 1 {
            // Under mpirun every rank reports its own errors (a file missing on one host), so the
            // line names the rank. One write keeps it whole: mpirun interleaves the ranks' output.
            FileHandle.standardError.write(Data("Error: rank \(communicator.rank): \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }

    private func train(_ communicator: Communicator) throws {
        try reportingUserErrors {
            let (retrainConfig, root) = try RetrainConfig.read(file: config)
            let settings = try resolvedSettings(root)
            Runtime.configure(threads: settings.threads)
            // Rank 0 speaks for the job; the other ranks print only their errors.
            let print: (String) -> Void = communicator.isRoot ? { Swift.print($0) } : { _ in }
            let job = try TrainingRun(configFile: config, config: retrainConfig, settings: settings, communicator: communicator)
            job.log = print
            let train = try job.loadData(.train, limit: settings.trainLimit)
            let test = try job.loadData(.test, limit: settings.testLimit)
            print(ConfigReader.train.line(for: retrainConfig, file: config))
            if communicator.isRoot { ConfigReader.printNotes(of: retrainConfig) }
            print("\(job.isQAT ? "QAT" : "float") training of \(job.spec.name) "
                  + "(\(job.model.parameters.reduce(0) { $0 + $1.variable.value.count }) parameters) on "
                  + "\(train.count) training and \(test.count) test images, \(settings.threads) thread(s)"
                  + (communicator.size > 1 ? " × \(communicator.size) ranks (\(settings.batchNormSync.rawValue) BN)" : ""))
            try job.preflight(train: train, test: test)
            if let resume {
                try job.resume(from: resume, force: force)
            } else {
                try job.prepareFreshStart(train: train)
                if job.isQAT {
                    let start = job.trainer.evaluate(test)
                    print(String(format: "after calibration: fake-quant test acc %.2f%%  loss %.4f", 100 * start.accuracy, start.loss))
                }
            }
            var line = ProgressLine(epochs: settings.epochs)
            try job.train(on: train, test: test) { progress, batches in
                if communicator.isRoot { line.update(epoch: job.trainer.epoch, progress: progress, batches: batches) }
            }
            if let metrics = job.metrics { print("metrics: \(metrics.csvPath), plot: \(metrics.svgPath)") }
            communicator.finish()
        }
    }
}
