import ArgumentParser
import Foundation
import QAT

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Layer-by-layer comparison of two of float, fake-quant and INT8 on the same batches.",
        discussion: """
            For every layer output: cosine, MSE, L1, KL, SQNR, max |a-b|, min/max/mean/variance of \
            both sides, and for quantized layers the input quantizer's scale, [L, U] bounds and the \
            fraction of its INPUT clipped below L and above U. Statistics are accumulated batch by \
            batch. The fake-quant side is a QAT checkpoint's own quantizers, or, for a float \
            checkpoint, the --config plan calibrated (IFMR, or each layer's act_algo) on the config's batch_num training \
            batches. The float side is the checkpoint's weights without quantizers. Definitions: docs/DEBUGGING.md.

            Examples:
              qat compare --checkpoint Checkpoints/lenet5-qat/final.h5
              qat compare --checkpoint Checkpoints/lenet5-float.h5 \\
                --config Configs/retrain.json --html report.html
              qat compare --checkpoint qat.h5 --deploy int8.h5 --sides fakequant,int8 \\
                --json
            """)

    @Option(help: "QAT checkpoint, or a float checkpoint together with --config.") var checkpoint: String
    @Option(help: "Retrain config: quantizes a float checkpoint; its data section gives the dataset.") var config: String?
    @Option(help: "Deployed INT8 model (for the int8 side).") var deploy: String?
    @Option(help: "The two sides, reference first: float, fakequant, int8.") var sides = "float,fakequant"
    @Option(help: "Number of test batches to compare.") var batches = 8
    @Option(name: .customLong("batch-size"), help: "Samples per batch.") var batchSize = 128
    @Option(help: "Most bins of the per-layer histograms KL is computed on (fewer for small layers).") var bins = 512
    @Option(help: "Folder of Fashion-MNIST IDX files (default: the config's data.path).") var data: String?
    @Option(name: .customLong("train-limit"), help: "Calibrate on batches drawn from the first N training images (as qat train --train-limit).")
    var trainLimit: Int?
    @Flag(help: "Print the report as JSON instead of tables.") var json = false
    @Option(help: "Also write a self-contained HTML report (inline SVG chart) to this file.") var html: String?
    @Option(help: "Threads.") var threads = 1

    func validate() throws {
        for (name, value) in [("batches", batches), ("batch-size", batchSize), ("bins", bins), ("threads", threads)] where value <= 0 {
            throw ValidationError("--\(name) must be positive, got \(value)")
        }
        for (name, value, range) in [("batch-size", batchSize, RunSettings.Limits.batchSize), ("threads", threads, RunSettings.Limits.threads)]
        where !range.contains(value) {
            throw ValidationError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        if let trainLimit, trainLimit <= 0 { throw ValidationError("--train-limit must be positive, got \(trainLimit)") }
        _ = try parsedSides()
    }

    func parsedSides() throws -> (ComparisonSide, ComparisonSide) {
        let names = sides.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let parsed = try names.map { name -> ComparisonSide in
            guard let side = ComparisonSide(rawValue: name) else {
                throw ValidationError("--sides: unknown side \"\(name)\" (allowed: \(ComparisonSide.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return side
        }
        guard parsed.count == 2, parsed[0] != parsed[1] else {
            throw ValidationError("--sides needs two different sides, e.g. float,fakequant (got \"\(sides)\")")
        }
        return (parsed[0], parsed[1])
    }

    func run() throws {
        let report = try reportingUserErrors { () -> ComparisonReport in
            Runtime.configure(threads: threads)
            let (first, second) = try parsedSides()
            let subject = try DebugSubject(checkpoint: checkpoint, configFile: config, dataPath: data, trainLimit: trainLimit)
            let report = try LayerComparison.run(subject, sides: (first, second), deployFile: deploy, batches: batches,
                                                 batchSize: batchSize, bins: bins) { DebugCLI.log($0, toStandardError: true) }
            if let html { try AtomicFile.write(Data(report.htmlReport().utf8), to: html) }
            return report
        }
        if json {
            print(try report.jsonString())
        } else {
            print(report.textReport(), terminator: "")
        }
        if let html { DebugCLI.log("HTML report: \(html)", toStandardError: json) }
    }
}

/// Helpers shared by compare and sensitivity.
enum DebugCLI {
    static func log(_ line: String, toStandardError: Bool) {
        if toStandardError {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        } else {
            print(line)
        }
    }
}
