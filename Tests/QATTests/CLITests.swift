import Foundation
import XCTest

/// The `qat` executable end to end: exit codes, messages, and the main commands on small data.
final class CLITests: XCTestCase {
    /// Runs the debug `qat` binary (built by `swift build --build-tests`) and returns (status, stdout + stderr).
    func testUsageErrorsExit64() throws {
        let (status, output) = try qat(["train"])
        XCTAssertEqual(status, 64)
        XCTAssertTrue(output.contains("--config"), output)
        let (badFlag, _) = try qat(["train", "--config", "Configs/float.json", "--epochs", "0"])
        XCTAssertEqual(badFlag, 64)
    }

    func testUserErrorsNameTheFileAndExit1() throws {
        let (status, output) = try qat(["train", "--config", "/nonexistent/retrain.json"])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(output.contains("/nonexistent/retrain.json"), output)

        let folder = try makeTemporaryFolder(self)
        let config = folder + "/bad.json"
        try #"{"conv1": {"retrain_data_config": {"clip_max": 2}}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (planStatus, planOutput) = try qat(["plan", "--config", config])
        XCTAssertEqual(planStatus, 1)
        XCTAssertTrue(planOutput.contains(config) && planOutput.contains("conv1.retrain_data_config"), planOutput)
    }

    func testPureAMCTConfigWithModelAndInitFlagsTrainsAndEvaluates() throws {
        let folder = try makeTemporaryFolder(self)
        let (createStatus, amct) = try qat(["create-config", "--model", "Configs/models/lenet5.json"])
        XCTAssertEqual(createStatus, 0)
        let config = folder + "/amct.json"
        try amct.write(toFile: config, atomically: true, encoding: .utf8)
        let output = folder + "/qat.h5"
        let (status, log) = try qat(["train", "--config", config, "--model", "Configs/models/lenet5.json",
                                     "--init", "Checkpoints/lenet5-float.h5", "--epochs", "1", "--lr", "0.01",
                                     "--train-limit", "256", "--test-limit", "256", "--output", output])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("QAT training") && log.contains("calibrated conv1"), log)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/qat-metrics.csv"), "metrics are named after the output")
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/qat-metrics.svg"))

        let (evalStatus, evalOutput) = try qat(["eval", "--checkpoint", output, "--test-limit", "256"])
        XCTAssertEqual(evalStatus, 0, evalOutput)
        XCTAssertTrue(evalOutput.contains("test accuracy"), evalOutput)

        let (inspectStatus, summary) = try qat(["inspect", output])
        XCTAssertEqual(inspectStatus, 0, summary)
        XCTAssertTrue(summary.contains("qat checkpoint") && summary.contains("conv1.act_quant.clip_max"), summary)

        // h5dump (Debian hdf5-tools) reads what we wrote.
        let dump = Process()
        dump.executableURL = URL(fileURLWithPath: "/usr/bin/h5dump")
        dump.arguments = ["-n", output]
        let pipe = Pipe()
        dump.standardOutput = pipe
        try dump.run()
        let listing = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        dump.waitUntilExit()
        XCTAssertEqual(dump.terminationStatus, 0)
        XCTAssertTrue(listing.contains("/state/quant/conv1/previous_clip"), listing)
    }

    func testLR0CheckCommandPasses() throws {
        let (status, output) = try qat(["check", "lr0", "--config", "Configs/retrain.json", "--steps", "2", "--eval-limit", "200"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("lr0 check passed"), output)
    }

    func testHelpListsTheSubcommands() throws {
        let (status, output) = try qat(["--help"])
        XCTAssertEqual(status, 0)
        for command in ["train", "eval", "inspect", "create-config", "plan", "check"] {
            XCTAssertTrue(output.contains(command), "\(command) missing from --help")
        }
    }

    /// Piped help is wrapped at 80 columns: every example command fits, or continues on an
    /// indented line after a backslash, so no example is broken in the middle of an argument.
    func testHelpExamplesFitEightyColumns() throws {
        let (_, top) = try qat(["--help"])
        let commands = top.components(separatedBy: "SUBCOMMANDS:").last!.split(separator: "\n")
            .compactMap { line in line.hasPrefix("  ") && !line.hasPrefix("   ") ? line.split(separator: " ").first.map(String.init) : nil }
        XCTAssertGreaterThan(commands.count, 10, top)
        for command in commands {
            let (status, output) = try qat([command, "--help"])
            XCTAssertEqual(status, 0, command)
            let lines = output.split(separator: "\n", omittingEmptySubsequences: false)
            for (line, next) in zip(lines, lines.dropFirst()) where line.hasPrefix("  qat ") || line.hasPrefix("  mpirun ") {
                XCTAssertTrue(next.isEmpty || next.hasPrefix("  "), "qat \(command) --help: \(line) | \(next)")
            }
        }
    }
}
