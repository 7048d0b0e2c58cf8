import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// Values read back from a checkpoint on resume are checked against the model and the run
/// before any of them is used (docs/CHECKPOINT.md "What is validated on load").
final class ResumeValidationTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    /// 192 training images in batches of 64: 3 batches per epoch, one epoch.
    func settings() -> RunSettings {
        var s = RunSettings()
        s.modelSpec = repositoryPath("Configs/models/lenet5.json")
        s.initCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
        s.trainLimit = 192
        s.testLimit = 64
        s.batchSize = 64
        s.learningRate = 0.01
        s.setEpochs(1)
        s.saveEvery = 2
        s.checkpointDirectory = folder + "/run"
        return s
    }

    func job() throws -> TrainingRun {
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: lenet).utf8), file: "retrain.json"))
        let run = try TrainingRun(configFile: "retrain.json", config: config, settings: settings())
        run.log = { _ in }
        return run
    }

    func data() throws -> (Dataset, Dataset) { (try fashionMNIST(.train, count: 192), try fashionMNIST(.test, count: 64)) }

    /// The step-2 checkpoint of a fresh run (epoch 0, progress_batch 2), read back.
    func savedMidEpoch() throws -> CheckpointFile {
        let run = try job()
        let (train, test) = try data()
        try run.prepareFreshStart(train: train)
        try run.train(on: train, test: test)
        return try CheckpointFile.read(from: folder + "/run/step-2.h5")
    }

    /// Writes `checkpoint` changed by `change`, resumes from it and trains; the error must
    /// mention every fragment.
    func assertRefused(_ base: CheckpointFile, _ fragments: [String], line: UInt = #line,
                       _ change: (inout CheckpointFile) -> Void) throws {
        var damaged = base
        change(&damaged)
        let file = folder + "/damaged-\(line).h5"
        try damaged.write(to: file)
        let run = try job()
        let (train, test) = try data()
        let final = folder + "/run/final.h5"
        let before = try Data(contentsOf: URL(fileURLWithPath: final))
        XCTAssertThrowsError(try { try run.resume(from: file, force: true); try run.train(on: train, test: test) }(), line: line) { error in
            for fragment in [file] + fragments {
                XCTAssertTrue("\(error)".contains(fragment), "\(error) should mention \(fragment)", line: line)
            }
            XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)", line: line)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: final)), before, "the good final checkpoint is untouched", line: line)
    }

    func testUndamagedCheckpointResumes() throws {
        let saved = try savedMidEpoch()
        XCTAssertEqual(saved.counters["progress_batch"], 2)
        let file = folder + "/good.h5"
        try saved.write(to: file)
        let run = try job()
        try run.resume(from: file, force: false)
        XCTAssertEqual(run.trainer.step, 2)
        XCTAssertEqual(run.trainer.progress.batch, 2)
    }

    func testCountersOutOfRangeAreRefused() throws {
        let saved = try savedMidEpoch()
        try assertRefused(saved, ["epoch", "-1"]) { $0.counters["epoch"] = -1 }
        try assertRefused(saved, ["epoch", "4611686018427387904"]) { $0.counters["epoch"] = 1 << 62 }
        try assertRefused(saved, ["epoch", "outside 0...1"]) { $0.counters["epoch"] = 2 }
        try assertRefused(saved, ["step", "-5"]) { $0.counters["step"] = -5 }
        try assertRefused(saved, ["progress_batch", "1000000000000"]) { $0.counters["progress_batch"] = 1_000_000_000_000 }
        try assertRefused(saved, ["progress_batch", "-1"]) { $0.counters["progress_batch"] = -1 }
        try assertRefused(saved, ["progress_correct"]) { $0.counters["progress_correct"] = ($0.counters["progress_seen"] ?? 0) + 1 }
    }

    func testPositionBeyondTheRunIsRefusedBeforeTraining() throws {
        let saved = try savedMidEpoch()
        // 3 batches per epoch: batch 3 does not exist, and 1 epoch has at most 3 steps.
        try assertRefused(saved, ["progress_batch", "[0, 3)"]) { $0.counters["progress_batch"] = 3 }
        try assertRefused(saved, ["step", "1 epochs × 3 batches"]) { $0.counters["step"] = 4 }
        try assertRefused(saved, ["progress_seen", "2 batches of 64"]) { $0.counters["progress_seen"] = 129 }
    }

    func testHistoryOfTheWrongShapeIsRefused() throws {
        let saved = try savedMidEpoch()
        try assertRefused(saved, ["/state/metrics/history", "[1, 7]", "[0, 7]"]) {
            $0.extra["metrics/history"] = Tensor(shape: [1, 7], storage: [Float](repeating: 0, count: 7))
        }
        let finished = try CheckpointFile.read(from: folder + "/run/epoch-1.h5")
        try assertRefused(finished, ["/state/metrics/history", "[1, 6]"]) {
            $0.extra["metrics/history"] = Tensor(shape: [1, 6], storage: [Float](repeating: 0, count: 6))
        }
    }

    func testOptimizerStateOfTheWrongShapeIsRefused() throws {
        let saved = try savedMidEpoch()
        let key = "optimizer/fc1.weight.momentum"
        XCTAssertNotNil(saved.extra[key], "SGD momentum is saved")
        try assertRefused(saved, [key, "[3]"]) { $0.extra[key] = Tensor(shape: [3], storage: [1, 2, 3]) }
        try assertRefused(saved, ["optimizer/nothere.momentum", "names no parameter"]) {
            $0.extra["optimizer/nothere.momentum"] = Tensor(shape: [1], storage: [0])
        }
        try assertRefused(saved, [key, "not finite"]) {
            var t = $0.extra[key]!
            t.storage[0] = .nan
            $0.extra[key] = t
        }
    }

    func testQuantizerStateMustBeFiniteFlagsAndIntegers() throws {
        let saved = try savedMidEpoch()
        try assertRefused(saved, ["/state/quant/conv1/activation_scale", "not finite"]) {
            $0.extra["quant/conv1/activation_scale"] = .scalar(.infinity)
        }
        try assertRefused(saved, ["/state/quant/conv1/initialized", "0 or 1"]) {
            $0.extra["quant/conv1/initialized"] = .scalar(7)
        }
        try assertRefused(saved, ["/state/quant/fc1/activation_offset", "integer"]) {
            $0.extra["quant/fc1/activation_offset"] = .scalar(1e30)
        }
    }
}
