import ArgumentParser
import Foundation
import QAT

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Test accuracy of a checkpoint (float or fake-quant) or of an INT8 deploy file.",
        discussion: """
            Give exactly one of --checkpoint and --deploy.
            Examples:
              qat eval --checkpoint Checkpoints/lenet5-float.h5
              qat eval --deploy Checkpoints/lenet5-int8.h5
                (the INT8 engine; QAT_INT8_KERNEL=portable|avx2|vnni forces a kernel path)
              qat eval --checkpoint run/final.h5 --config my-run.json
                (on the test set of the config's data section)
            """)

    @Option(help: "The checkpoint to evaluate (float, or fake quant for a QAT checkpoint).") var checkpoint: String?
    @Option(help: "The INT8 deploy file to evaluate on the INT8 engine.") var deploy: String?
    @OptionGroup var testData: TestDataOptions
    @Option(help: "Threads.") var threads = 1
    @Option(help: "Write one line per test image: the predicted class, then the logits.") var predictions: String?
    @Flag(help: "With --deploy: also time the INT8 forward on one batch of 256 (best of 5 rounds of 0.2 s).") var speed = false

    func validate() throws {
        guard (checkpoint == nil) != (deploy == nil) else {
            throw ValidationError("give exactly one of --checkpoint and --deploy")
        }
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        try reportingUserErrors {
            Runtime.configure(threads: threads)
            if let deploy {
                let engine = try Int8Model.load(deployFile: deploy)
                let (test, folder) = try testData.loadTest(inputShape: engine.inputShape)
                try test.checkFits(inputShape: engine.inputShape, classes: engine.numberOfClasses, modelName: deploy, name: "test", folder: folder)
                var lines = ""
                let result = Evaluator.evaluate(engine, on: test) { _, logits in lines += predictionLines(logits) }
                if let predictions { try AtomicFile.write(Data(lines.utf8), to: predictions) }
                print(String(format: "%@: INT8 test accuracy %.2f%%  loss %.4f  (%d images, %@ kernels, %.0f img/s in the engine at batch 256)",
                             deploy, 100 * result.accuracy, result.loss, result.count, Int8Kernels.activePath.rawValue,
                             Double(result.count) / max(result.forwardSeconds, 1e-9)))
                if speed {
                    let batch = test.batch(Array(0..<min(256, test.count))[...]).images
                    let perCall = Stopwatch.bestSecondsPerCall { _ = engine.forward(batch) }
                    print(String(format: "INT8 forward, batch %d, %@ kernels: %.0f img/s (best of 5 rounds)",
                                 batch.shape[0], Int8Kernels.activePath.rawValue, Double(batch.shape[0]) / perCall))
                }
                return
            }
            let checkpoint = checkpoint!
            let (model, _) = try Model.load(checkpoint: checkpoint)
            let (test, folder) = try testData.loadTest(inputShape: model.spec.inputShape)
            try test.checkFits(model, name: "test", folder: folder)
            var lines = ""
            let result = Evaluator.evaluate(model, on: test) { _, logits in lines += predictionLines(logits) }
            if let predictions { try AtomicFile.write(Data(lines.utf8), to: predictions) }
            print(String(format: "%@: test accuracy %.2f%%  loss %.4f  (%d images)", checkpoint, 100 * result.accuracy, result.loss, result.count))
        }
    }
}

/// `--predictions`: per row of logits [N, K], the predicted class and the K logits (%.9g: exact float32).
private func predictionLines(_ logits: Tensor) -> String {
    let k = logits.shape[1]
    return zip(argmaxRows(logits), 0...).map { predicted, row in
        ([String(predicted)] + logits.storage[(row * k)..<((row + 1) * k)].map { String(format: "%.9g", $0) }).joined(separator: " ") + "\n"
    }.joined()
}
