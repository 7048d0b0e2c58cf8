import ArgumentParser
import QAT

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Test accuracy of a checkpoint (float, or fake-quant for a QAT checkpoint).",
        discussion: "Example: qat eval --checkpoint Checkpoints/lenet5-float.h5")

    @Option(help: "The checkpoint to evaluate.") var checkpoint: String
    @Option(help: "Folder of Fashion-MNIST IDX files.") var data = FashionMNIST.defaultPath
    @Option(name: .customLong("test-limit"), help: "Use only the first N test images.") var testLimit: Int?
    @Option(help: "Threads.") var threads = 1

    func run() throws {
        try reportingUserErrors {
            Runtime.configure(threads: threads)
            let (model, _) = try Model.load(checkpoint: checkpoint)
            let test = try FashionMNIST.load(folder: data, split: .test, limit: testLimit)
            let result = Trainer.evaluate(model, on: test)
            print(String(format: "%@: test accuracy %.2f%%  loss %.4f  (%d images)", checkpoint, 100 * result.accuracy, result.loss, result.count))
        }
    }
}
