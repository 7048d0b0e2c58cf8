import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// Whole runs: checkpoints every few steps, exact resume, refusals, the lr = 0 check, failures
/// that must not lose the last good checkpoint.
final class RunTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    func settings(_ configure: (inout RunSettings) -> Void = { _ in }) -> RunSettings {
        var s = RunSettings()
        s.modelSpec = repositoryPath("Configs/models/lenet5.json")
        s.initCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
        s.trainLimit = 320
        s.testLimit = 128
        s.epochs = 2
        s.batchSize = 64
        s.learningRate = 0.01
        s.setEpochs(2)
        s.checkpointDirectory = folder + "/run"
        configure(&s)
        return s
    }

    func retrainConfig(_ json: String? = nil) throws -> RetrainConfig {
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let text = json ?? createDefaultConfig(for: lenet)
        return try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "retrain.json"))
    }

    func data(_ s: RunSettings) throws -> (Dataset, Dataset) {
        (try fashionMNIST(.train, count: s.trainLimit!), try fashionMNIST(.test, count: s.testLimit!))
    }

    /// A fresh QAT run to the end; returns the final checkpoint path.
    @discardableResult
    func runFresh(_ s: RunSettings, config: RetrainConfig? = nil) throws -> String {
        let job = try TrainingRun(configFile: "retrain.json", config: config ?? retrainConfig(), settings: s)
        job.log = { _ in }
        let (train, test) = try data(s)
        try job.prepareFreshStart(train: train)
        return try job.train(on: train, test: test)!
    }

    func testResumeAtAnySavedStepIsBitIdenticalToTheUninterruptedRun() throws {
        let s = settings { $0.saveEvery = 3 }   // 5 steps per epoch: saves at steps 3, 6, 9 and epoch ends
        let uninterrupted = try CheckpointFile.read(from: runFresh(s))
        for resumePoint in ["step-3.h5", "epoch-1.h5", "step-6.h5"] {
            let saved = folder + "/saved-" + resumePoint
            try FileManager.default.copyItem(atPath: s.checkpointDirectory! + "/" + resumePoint, toPath: saved)
            var resumed = s
            resumed.checkpointDirectory = folder + "/resumed-" + resumePoint
            let job = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: resumed)
            job.log = { _ in }
            let (train, test) = try data(resumed)
            try job.resume(from: saved, force: false)
            let final = try CheckpointFile.read(from: job.train(on: train, test: test)!)
            XCTAssertEqual(final, uninterrupted, "resumed from \(resumePoint)")
        }
    }

    func testSameSeedGivesIdenticalCheckpointFiles() throws {
        let a = try runFresh(settings { $0.checkpointDirectory = self.folder + "/a"; $0.epochs = 1 })
        let b = try runFresh(settings { $0.checkpointDirectory = self.folder + "/b"; $0.epochs = 1 })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b)))
    }

    func testResumeWithAChangedConfigIsRefusedNamingTheKeys() throws {
        let s = settings { $0.epochs = 1 }
        let saved = try runFresh(s)
        let changed = settings { $0.epochs = 1; $0.learningRate = 0.02; $0.seed = 9 }
        let job = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: changed)
        XCTAssertThrowsError(try job.resume(from: saved, force: false)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("train.learning_rate") && text.contains("train.seed"), text)
            XCTAssertFalse(text.contains("train.batch_size"), text)
        }
        job.log = { _ in }
        XCTAssertNoThrow(try job.resume(from: saved, force: true))
        // A changed quantization setting is math too.
        let otherPlan = try TrainingRun(configFile: "retrain.json",
                                        config: retrainConfig(#"{"conv1": {"retrain_data_config": {"dst_type": "INT16"}}}"#), settings: s)
        XCTAssertThrowsError(try otherPlan.resume(from: saved, force: false)) { error in
            XCTAssertTrue("\(error)".contains("conv1.retrain_data_config.dst_type"), "\(error)")
        }
    }

    func testLR0CheckPassesOnLeNetAndOnTheResidualModelWithBatchNorm() throws {
        let (train, test) = try data(settings())
        let lenet = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: settings())
        lenet.log = { _ in }
        let report = try lenet.lr0Check(train: train, evaluation: test, steps: 3)
        XCTAssertTrue(report.passed, report.table())

        let resnetSpec = repositoryPath("Configs/models/resnet-tiny.json")
        let resnetConfig = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: ModelSpec.load(file: resnetSpec)).utf8), file: "r.json"))
        let resnet = try TrainingRun(configFile: "r.json", config: resnetConfig,
                                     settings: settings { $0.modelSpec = resnetSpec; $0.initCheckpoint = nil })
        resnet.log = { _ in }
        let resnetReport = try resnet.lr0Check(train: train, evaluation: test, steps: 3)
        XCTAssertTrue(resnetReport.passed, resnetReport.table())
        XCTAssertTrue(resnetReport.table().contains("BN statistics     pass"), resnetReport.table())
    }

    func testLR0CheckFailsWhenStateDriftsOutsideTheOptimizer() throws {
        let (train, test) = try data(settings())
        let resnetSpec = repositoryPath("Configs/models/resnet-tiny.json")
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: ModelSpec.load(file: resnetSpec)).utf8), file: "r.json"))
        func check(_ perturb: @escaping (Model, Int) -> Void) throws -> LR0Report {
            let job = try TrainingRun(configFile: "r.json", config: config,
                                      settings: settings { $0.modelSpec = resnetSpec; $0.initCheckpoint = nil })
            job.log = { _ in }
            return try job.lr0Check(train: train, evaluation: test, steps: 2, perturb: perturb)
        }
        // BN statistics that keep updating (the bug a frozen-BN pipeline must catch).
        let bnDrift = try check { model, _ in model.batchNormLayers[0].statistics.mean.storage[0] += 0.01 }
        XCTAssertFalse(bnDrift.passed)
        XCTAssertTrue(bnDrift.rows.contains { $0.check == "BN statistics" && !$0.passed }, bnDrift.table())
        // A clip bound rewritten by something other than the optimizer.
        let boundDrift = try check { model, _ in model.fakeQuantizers[2].activation.clipMax.value.storage[0] *= 1.01 }
        XCTAssertFalse(boundDrift.passed)
        XCTAssertTrue(boundDrift.rows.contains { $0.check == "clip bounds" && !$0.passed && $0.detail.contains("block1_conv2") }, boundDrift.table())
        XCTAssertTrue(boundDrift.rows.contains { $0.check == "fake-quant eval" && !$0.passed }, boundDrift.table())
    }

    /// Runs until a non-finite value stops training; returns the error text and the checkpoints left.
    func runUntilNonFinite(quantized: Bool, name: String,
                           corrupt: (TrainingRun, inout Dataset) -> Void) throws -> (String, [String], String) {
        let s = settings { $0.saveEvery = 1; $0.epochs = 1; $0.checkpointDirectory = self.folder + "/" + name }
        let job = try TrainingRun(configFile: "retrain.json", config: quantized ? retrainConfig() : nil, settings: s)
        job.log = { _ in }
        var (train, test) = try data(s)
        try job.prepareFreshStart(train: train)
        corrupt(job, &train)
        var message = ""
        XCTAssertThrowsError(try job.train(on: train, test: test)) { message = "\($0)" }
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: s.checkpointDirectory!)) ?? []).sorted()
        return (message, files, s.checkpointDirectory!)
    }

    func testNonFiniteTrainingNamesTheStepAndSourceAndKeepsTheLastGoodCheckpoint() throws {
        for quantized in [false, true] {
            // A NaN pixel in the third batch (calibration saw only the first).
            let (message, files, folder) = try runUntilNonFinite(quantized: quantized, name: "data-\(quantized)") { job, train in
                let victim = job.trainer.order(epoch: 0).indices(count: train.count)[2 * 64]
                var pixels = train.normalizedImages
                pixels[victim * train.sampleSize + 300] = .nan
                train = Dataset(images: pixels, labels: train.labels, sampleShape: train.sampleShape)
            }
            XCTAssertTrue(message.contains("step 2") && message.contains("input batch"), message)
            // The checkpoints written before the failure are complete and finite; no final, no temporaries.
            XCTAssertEqual(files, ["step-1.h5", "step-2.h5"])
            for file in files {
                let (model, _) = try Model.load(checkpoint: folder + "/" + file)
                XCTAssertTrue(model.parameters.allSatisfy { $0.variable.value.isFinite }, file)
            }
            // A weight that overflowed to infinity: fc1 is the first layer whose output is not finite.
            let (overflow, _, _) = try runUntilNonFinite(quantized: quantized, name: "weight-\(quantized)") { job, _ in
                (job.model.layer(named: "fc1") as! LinearLayer).weight.value.storage[7] = .infinity
            }
            XCTAssertTrue(overflow.contains("step 0") && overflow.contains("layer fc1"), overflow)
        }
    }

    func testUnwritableOutputKeepsThePreviousCheckpoint() throws {
        let s = settings { $0.epochs = 1 }
        let final = try runFresh(s)
        let before = try Data(contentsOf: URL(fileURLWithPath: final))
        // A regular file where the checkpoint folder should be: every write fails, even as root.
        let blocker = folder + "/blocker"
        XCTAssertTrue(FileManager.default.createFile(atPath: blocker, contents: Data("x".utf8)))
        let job = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: settings {
            $0.epochs = 1; $0.checkpointDirectory = blocker + "/run"; $0.output = final
        })
        job.log = { _ in }
        let (train, test) = try data(s)
        try job.prepareFreshStart(train: train)
        XCTAssertThrowsError(try job.train(on: train, test: test)) { error in
            XCTAssertTrue("\(error)".contains(blocker), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: final)), before)
    }

    /// --init with a QAT checkpoint continues from its learned bounds instead of recalibrating.
    func testStartingFromAQATCheckpointKeepsItsLearnedBounds() throws {
        let first = try runFresh(settings { $0.epochs = 1; $0.checkpointDirectory = self.folder + "/first" })
        let (trained, _) = try Model.load(checkpoint: first)
        let job = try TrainingRun(configFile: "retrain.json", config: retrainConfig(),
                                  settings: settings { $0.initCheckpoint = first; $0.checkpointDirectory = self.folder + "/second" })
        var calibrated: [String] = []
        job.log = { if $0.hasPrefix("calibrated") { calibrated.append($0) } }
        try job.prepareFreshStart(train: try fashionMNIST(.train, count: 64))
        XCTAssertEqual(calibrated, [], "no layer should be recalibrated")
        for (a, b) in zip(trained.fakeQuantizers, job.model.fakeQuantizers) {
            XCTAssertEqual(a.activation.clipMax.value, b.activation.clipMax.value, a.layerName)
        }
    }

    func testBrokenCheckpointsGiveClearErrors() throws {
        let final = try runFresh(settings { $0.epochs = 1 })
        let truncated = folder + "/truncated.h5"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: final))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        let job = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: settings())
        XCTAssertThrowsError(try job.resume(from: truncated, force: false)) { error in
            XCTAssertTrue("\(error)".contains(truncated), "\(error)")
        }
        // Another model's checkpoint as the starting point.
        let resnetFile = folder + "/resnet.h5"
        try Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))).checkpointFile().write(to: resnetFile)
        let wrongInit = try TrainingRun(configFile: "retrain.json", config: retrainConfig(), settings: settings { $0.initCheckpoint = resnetFile })
        XCTAssertThrowsError(try wrongInit.prepareFreshStart(train: try fashionMNIST(.train, count: 64))) { error in
            XCTAssertTrue("\(error)".contains("conv1.weight") && "\(error)".contains(resnetFile), "\(error)")
        }
    }
}
