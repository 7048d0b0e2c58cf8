import Foundation
import XCTest
@testable import QATIO
@testable import QATModel
@testable import QATTrain

/// Data-parallel training (issue 13): the debug `qat` under `mpirun -np 2` on loopback against
/// one process on the same global batches. Skipped only where mpirun is not installed (`make
/// test` installs openmpi-bin).
final class MPITests: XCTestCase {
    private var mpirun: String {
        get throws {
            for folder in ["/usr/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: folder + "/mpirun") {
                return folder + "/mpirun"
            }
            throw XCTSkip("mpirun is not installed (apt-get install openmpi-bin; make test does)")
        }
    }

    private var binary: String { repositoryPath(".build/debug/qat") }

    /// Shared-memory messages without the kernel's cross-process copy, which containers often
    /// forbid (ptrace scope): a little slower, never an error.
    private func mpirunArguments(ranks: Int) throws -> [String] {
        [try mpirun, "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
         "-np", String(ranks), binary]
    }

    /// `qat train …` in one plain process (ranks nil) or under mpirun; fails the test on a non-zero exit.
    @discardableResult
    private func train(ranks: Int?, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let (status, output): (Int32, String)
        if let ranks {
            let command = try mpirunArguments(ranks: ranks)
            (status, output) = try runProgram(command[0], Array(command.dropFirst()) + ["train"] + arguments)
        } else {
            (status, output) = try qat(["train"] + arguments)
        }
        XCTAssertEqual(status, 0, output, file: file, line: line)
        return output
    }

    /// LeNet-5 QAT from the float checkpoint: 10 global batches of 63 (shards of 32 and 31) and a
    /// last batch of 10, a checkpoint after every step.
    private func lenetArguments(folder: String, extra: [String] = []) -> [String] {
        ["--config", "Configs/retrain.json", "--epochs", "1", "--batch-size", "63", "--train-limit", "640",
         "--test-limit", "300", "--checkpoint-dir", folder, "--save-every", "1"] + extra
    }

    private func checkpoint(_ folder: String, _ name: String) throws -> CheckpointFile {
        try CheckpointFile.read(from: "\(folder)/\(name)")
    }

    /// The mean loss of each step, from the running sums the step checkpoints store.
    private func stepLosses(_ folder: String, steps: Int) throws -> [Double] {
        var previous = (sum: 0.0, seen: Int64(0))
        return try (1...steps).map { step in
            let counters = try checkpoint(folder, "step-\(step).h5").counters
            let sum = Double(bitPattern: UInt64(bitPattern: counters["progress_loss_sum_bits"]!))
            let seen = counters["progress_seen"]!
            defer { previous = (sum, seen) }
            return (sum - previous.sum) / Double(seen - previous.seen)
        }
    }

    /// Every parameter and BN statistic of `a` within `tolerance` of `b`'s (relative to max(1, |b|)).
    private func assertWeightsClose(_ a: CheckpointFile, _ b: CheckpointFile, tolerance: Float,
                                    file: StaticString = #filePath, line: UInt = #line) {
        let (left, right) = (a.parameters + a.buffers, b.parameters + b.buffers)
        XCTAssertEqual(left.map(\.name), right.map(\.name), file: file, line: line)
        for (x, y) in zip(left, right) {
            let worst = zip(x.tensor.storage, y.tensor.storage).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, tolerance, "\(x.name)", file: file, line: line)
        }
    }

    private func testAccuracy(_ folder: String) throws -> Double {
        let csv = try String(contentsOfFile: "\(folder)/metrics.csv", encoding: .utf8)
        let row = csv.split(separator: "\n").last { $0.contains(",epoch,") }!
        return Double(row.split(separator: ",", omittingEmptySubsequences: false)[6])!
    }

    func testTwoRanksTrainLikeOneProcessAndRepeatBitForBit() throws {
        _ = try mpirun
        let root = try makeTemporaryFolder(self)
        let (one, two) = ("\(root)/one", "\(root)/two")
        try train(ranks: nil, lenetArguments(folder: one))
        let log = try train(ranks: 2, lenetArguments(folder: two))
        XCTAssertTrue(log.contains("× 2 ranks (global BN)"), log)
        XCTAssertEqual(log.components(separatedBy: "saved \(two)/final.h5").count, 2, "rank 0 alone reports: \(log)")

        let (expected, actual) = (try stepLosses(one, steps: 11), try stepLosses(two, steps: 11))
        for (step, (e, a)) in zip(expected, actual).enumerated() {
            XCTAssertLessThanOrEqual(abs(a - e) / e, 1e-5, "loss of step \(step + 1): \(a) against \(e)")
        }
        for step in 1...11 {
            XCTAssertEqual(try checkpoint(two, "step-\(step).h5").counters["progress_correct"],
                           try checkpoint(one, "step-\(step).h5").counters["progress_correct"], "step \(step)")
        }
        assertWeightsClose(try checkpoint(two, "final.h5"), try checkpoint(one, "final.h5"), tolerance: 1e-5)
        XCTAssertEqual(try testAccuracy(two), try testAccuracy(one), accuracy: 0.0005)

        // Resumed mid-epoch by one process: the same math, sums cut elsewhere (README).
        try train(ranks: nil, lenetArguments(folder: "\(root)/resumed") + ["--resume", "\(two)/step-5.h5"])
        assertWeightsClose(try checkpoint("\(root)/resumed", "final.h5"), try checkpoint(two, "final.h5"), tolerance: 1e-5)

        // The same 2-rank run again (output paths are not recorded in checkpoints).
        let again = "\(root)/again"
        try train(ranks: 2, lenetArguments(folder: again))
        for name in ["step-5.h5", "final.h5"] {
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(again)/\(name)")),
                           try Data(contentsOf: URL(fileURLWithPath: "\(two)/\(name)")), "two identical 2-rank runs differ in \(name)")
        }
    }

    /// 641 images in batches of 64 leave a last batch of 1: no sample for rank 1.
    func testBatchTooSmallForTheRanksIsRefused() throws {
        let command = try mpirunArguments(ranks: 2)
        let folder = try makeTemporaryFolder(self)
        let (status, output) = try runProgram(command[0], Array(command.dropFirst()) + [
            "train", "--config", "Configs/retrain.json", "--epochs", "1", "--train-limit", "641", "--test-limit", "64",
            "--checkpoint-dir", folder])
        XCTAssertNotEqual(status, 0)
        // Every rank finds the same fault; mpirun ends the job when the first one exits, so either may be the one heard.
        let message = "Configs/retrain.json: train.batch_size: 2 ranks need at least 2 images in every batch, "
            + "but batch_size 64 over 641 training images leaves a last batch of 1"
        XCTAssertTrue(output.contains("rank 0: " + message) || output.contains("rank 1: " + message), output)
    }

    /// With lr 0 nothing moves after calibration, so the checkpoint holds the calibrated bounds:
    /// IFMR on one batch (Configs/retrain.json), and HFMG on two.
    func testCalibrationOfTwoRanksEqualsOneProcessExactly() throws {
        _ = try mpirun
        let root = try makeTemporaryFolder(self)
        let hfmg = root + "/retrain-hfmg.json"
        let text = try String(contentsOfFile: repositoryPath("Configs/retrain.json"), encoding: .utf8)
            .replacingOccurrences(of: "\"batch_num\": 1", with: "\"batch_num\": 2, \"calibration\": {\"act_algo\": \"hfmg\"}")
        try text.write(toFile: hfmg, atomically: true, encoding: .utf8)
        for (name, config) in [("ifmr", "Configs/retrain.json"), ("hfmg", hfmg)] {
            let arguments = { (folder: String) in
                ["--config", config, "--epochs", "1", "--batch-size", "64", "--train-limit", "128",
                 "--test-limit", "64", "--lr", "0", "--checkpoint-dir", folder]
            }
            try train(ranks: nil, arguments("\(root)/\(name)-one"))
            let log = try train(ranks: 2, arguments("\(root)/\(name)-two"))
            XCTAssertTrue(log.contains("with \(name.uppercased()) on \(name == "ifmr" ? 1 : 2) batch(es)"), log)
            let (one, two) = (try checkpoint("\(root)/\(name)-one", "final.h5"), try checkpoint("\(root)/\(name)-two", "final.h5"))
            // The quantizers' state (grids, scales); the bounds themselves are parameters, below.
            let isQuantizerState = { (key: String) in key.hasPrefix(QuantizerStateKey.group) }
            let quantizerKeys = one.extra.keys.filter(isQuantizerState).sorted()
            XCTAssertFalse(quantizerKeys.isEmpty)
            XCTAssertEqual(two.extra.keys.filter(isQuantizerState).sorted(), quantizerKeys)
            for key in quantizerKeys { XCTAssertEqual(two.extra[key]!.storage, one.extra[key]!.storage, "\(name) \(key)") }
            XCTAssertTrue(one.parameters.contains { $0.name.hasSuffix("act_quant.clip_max") })
            for (a, b) in zip(two.parameters, one.parameters) { XCTAssertEqual(a.tensor.storage, b.tensor.storage, "\(name) \(a.name)") }
        }
    }

    func testShardsAreContiguousWithTheRemainderOnTheLowestRanks() {
        XCTAssertEqual((0..<4).map { Communicator.shard(of: 10, rank: $0, ranks: 4) }, [0..<3, 3..<6, 6..<8, 8..<10])
        XCTAssertEqual((0..<2).map { Communicator.shard(of: 63, rank: $0, ranks: 2) }, [0..<32, 32..<63])
        XCTAssertEqual(Communicator.single.shard(of: 64), 0..<64)
    }

    func testBatchNormSyncSetting() throws {
        let parse = { (text: String) in try RunSettings.parse(JSONObject.parse(Data(text.utf8), file: "c.json")) }
        XCTAssertEqual(try parse("{}").batchNormSync, .global)
        XCTAssertEqual(try parse(#"{"train": {"bn_sync": "per-rank"}}"#).batchNormSync, .perRank)
        assertInputError(try parse(#"{"train": {"bn_sync": "sometimes"}}"#),
                         mentions: ["c.json", "train.bn_sync", "unknown mode \"sometimes\" (allowed: global, per-rank)"])
    }

    /// resnet-tiny has BatchNorm: synchronised BN gives the 1-process losses; per-rank BN does not.
    func testSynchronisedBatchNormMatchesOneProcess() throws {
        _ = try mpirun
        let root = try makeTemporaryFolder(self)
        let arguments = { (folder: String) in
            ["--config", "Configs/float.json", "--model", "Configs/models/resnet-tiny.json", "--epochs", "1",
             "--batch-size", "50", "--train-limit", "150", "--test-limit", "50", "--checkpoint-dir", folder,
             "--output", "\(folder)/final.h5", "--save-every", "1"]
        }
        try train(ranks: nil, arguments("\(root)/one"))
        try train(ranks: 2, arguments("\(root)/sync"))
        try train(ranks: 2, arguments("\(root)/per-rank") + ["--bn-sync", "per-rank"])
        let expected = try stepLosses("\(root)/one", steps: 3)
        for (step, (e, a)) in zip(expected, try stepLosses("\(root)/sync", steps: 3)).enumerated() {
            XCTAssertLessThanOrEqual(abs(a - e) / e, 1e-5, "loss of step \(step + 1): \(a) against \(e)")
        }
        assertWeightsClose(try checkpoint("\(root)/sync", "final.h5"), try checkpoint("\(root)/one", "final.h5"), tolerance: 1e-5)
        // Per-rank BN normalises each shard by its own statistics: already the first loss differs.
        let perRank = try stepLosses("\(root)/per-rank", steps: 1)[0]
        XCTAssertGreaterThan(abs(perRank - expected[0]) / expected[0], 1e-4)
    }

    /// kill -9 of rank 1 ends the whole job within seconds, naming the rank; resuming from the
    /// last checkpoint with 2 ranks ends on the checkpoint of an uninterrupted 2-rank run, byte for byte.
    func testKilledRankEndsJobAndResumeCompletes() throws {
        let launcher = try mpirun
        let root = try makeTemporaryFolder(self)
        let arguments = { (folder: String) in
            ["--config", "Configs/retrain.json", "--epochs", "1", "--batch-size", "64", "--train-limit", "1920",
             "--test-limit", "100", "--checkpoint-dir", folder, "--save-every", "5"]
        }
        let killed = "\(root)/killed"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: launcher)
        process.arguments = Array(try mpirunArguments(ranks: 2).dropFirst()) + ["train"] + arguments(killed)
        process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
        // Output to a file: nothing has to drain a pipe while the test polls.
        let logFile = "\(root)/killed.log"
        FileManager.default.createFile(atPath: logFile, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logFile))
        (process.standardOutput, process.standardError) = (logHandle, logHandle)
        try process.run()

        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: "\(killed)/step-10.h5") && process.isRunning && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let rank1 = try XCTUnwrap(childProcesses(of: process.processIdentifier).first { environment(of: $0).contains("OMPI_COMM_WORLD_RANK=1") },
                                  "rank 1 not found among mpirun's children")
        kill(rank1, SIGKILL)
        let killedAt = Date()
        while process.isRunning && Date().timeIntervalSince(killedAt) < 30 { Thread.sleep(forTimeInterval: 0.05) }
        let seconds = Date().timeIntervalSince(killedAt)
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        try logHandle.close()
        let log = try String(contentsOfFile: logFile, encoding: .utf8)
        XCTAssertLessThan(seconds, 10, "the job outlived its killed rank by \(seconds) s")
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(log.contains("rank 1") && log.contains("signal 9"), log)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(killed)/final.h5"))

        // The last checkpoint is whole (its digest is checked on reading); resume from it.
        let saved = try FileManager.default.contentsOfDirectory(atPath: killed)
            .compactMap { $0.hasPrefix("step-") ? Int($0.dropFirst(5).dropLast(3)) : nil }.max()
        let last = "\(killed)/step-\(try XCTUnwrap(saved)).h5"
        XCTAssertGreaterThanOrEqual(try checkpoint(killed, "step-\(saved!).h5").counters["step"]!, 10)
        try train(ranks: 2, arguments(killed) + ["--resume", last])
        try train(ranks: 2, arguments("\(root)/whole"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(killed)/final.h5")),
                       try Data(contentsOf: URL(fileURLWithPath: "\(root)/whole/final.h5")), "resumed and uninterrupted runs differ")
    }

    /// The processes whose parent is `parent` (from /proc).
    private func childProcesses(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            // After "pid (comm)": state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == parent
        }
    }

    private func environment(of pid: Int32) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
}
