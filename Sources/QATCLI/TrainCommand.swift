import ArgumentParser
import Foundation
import QAT

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model in float, or fine-tune it with fake quantization (QAT).",
        discussion: """
            The config's reserved sections (model, data, train, checkpoint) set up the run; \
            see docs/CONFIG.md. Flags override the config.
            Example: qat train --config Configs/float.json --epochs 2
            """)

    @Option(help: "The run's JSON config.") var config: String
    @Option(help: "Number of epochs.") var epochs: Int?
    @Option(help: "Base learning rate.") var lr: Float?
    @Option(name: .customLong("batch-size"), help: "Training batch size.") var batchSize: Int?
    @Option(help: "Seed for initialisation and shuffling.") var seed: UInt64?
    @Option(help: "Threads for BLAS and our own loops.") var threads: Int?
    @Option(help: "Where to write the final checkpoint.") var output: String?
    @Option(name: .customLong("train-limit"), help: "Use only the first N training images.") var trainLimit: Int?
    @Option(name: .customLong("test-limit"), help: "Use only the first N test images.") var testLimit: Int?

    func validate() throws {
        for (name, value) in [("epochs", epochs), ("batch-size", batchSize), ("threads", threads),
                              ("train-limit", trainLimit), ("test-limit", testLimit)] {
            if let value, value <= 0 { throw ValidationError("--\(name) must be positive, got \(value)") }
        }
        if let lr, !(lr >= 0) { throw ValidationError("--lr must be ≥ 0, got \(lr)") }
    }

    func run() throws {
        try failWithUserError {
            var settings = try RunSettings.parse(JSONObject.load(file: config))
            if let epochs { settings.setEpochs(epochs) }
            if let lr { settings.learningRate = lr }
            if let batchSize { settings.batchSize = batchSize }
            if let seed { settings.seed = seed }
            if let threads { settings.threads = threads }
            if let output { settings.output = output }
            if let trainLimit { settings.trainLimit = trainLimit }
            if let testLimit { settings.testLimit = testLimit }
            try runFloatTraining(settings)
        }
    }
}

func runFloatTraining(_ settings: RunSettings) throws {
    Runtime.configure(threads: settings.threads)
    let spec = try ModelSpec.load(file: settings.modelSpec)
    let model = try Model(spec: spec, seed: settings.seed)
    let train = try FashionMNIST.load(folder: settings.dataPath, split: .train, limit: settings.trainLimit)
    let test = try FashionMNIST.load(folder: settings.dataPath, split: .test, limit: settings.testLimit)
    print("model \(spec.name): \(model.parameters.reduce(0) { $0 + $1.variable.value.count }) parameters; "
          + "\(train.count) training and \(test.count) test images; \(settings.threads) thread(s)")
    let trainer = Trainer(model: model, settings: settings)
    for _ in 0..<settings.epochs {
        let summary = try trainer.trainEpoch(on: train, test: test, progress: ProgressLine(epoch: trainer.epoch, of: settings.epochs).update)
        ProgressLine.finish()
        print(String(format: "epoch %d/%d  lr %.4f  loss %.4f  train acc %.2f%%  test loss %.4f  test acc %.2f%%  %.0f img/s  %.1f s",
                     summary.epoch, settings.epochs, summary.learningRate, summary.train.loss, 100 * summary.train.accuracy,
                     summary.test.loss, 100 * summary.test.accuracy, summary.imagesPerSecond, summary.seconds))
    }
}

