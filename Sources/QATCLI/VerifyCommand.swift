import ArgumentParser
import Foundation
import QAT

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Run fake quant and the INT8 engine side by side and check the deployment contract.",
        discussion: """
            For each quantized layer, reports the fraction of input codes on which the INT8 engine \
            and the fake-quant model (eval mode) agree and the largest code difference; then the \
            agreement of final predictions. Exits 1 unless every layer has ≥ 99.9 % equal codes and \
            no difference above 1, and ≥ 99.9 % of predictions agree.
            Example: qat verify --checkpoint Checkpoints/lenet5-qat/final.h5 --deploy Checkpoints/lenet5-int8.h5
            --config FILE reads the test set from a run config's data section (HDF5, npy: docs/DATASETS.md).
            """)

    @Option(help: "The QAT checkpoint the deploy file was made from.") var checkpoint: String
    @Option(help: "The deploy file.") var deploy: String
    @OptionGroup var testData: TestDataOptions
    @Option(help: "Threads (float parts).") var threads = 1

    func validate() throws {
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
    }

    func run() throws {
        let report = try reportingUserErrors { () -> DeployVerification in
            Runtime.configure(threads: threads)
            // The engine's input shape decides the layout of a configured dataset; IDX needs none.
            let inputShape = try testData.config.map { _ in try Int8Model.load(deployFile: deploy).inputShape }
            let (test, _) = try testData.loadTest(inputShape: inputShape)
            return try DeployVerification.run(checkpoint: checkpoint, deployFile: deploy, data: test)
        }
        print("fake quant (\(checkpoint)) vs INT8 (\(deploy), \(Int8Kernels.activePath.rawValue) kernels)")
        print(report.table())
        if !report.passed { throw ExitCode(1) }
    }
}
