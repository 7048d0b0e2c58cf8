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

/// `qat sensitivity`: a layer with ruined clip bounds ranks first, from a float checkpoint with a
/// config (IFMR per variant) and from a QAT checkpoint (its bounds reused); the fixed config.
final class DebugSensitivityTests: XCTestCase {
    lazy var evaluation = try! fashionMNIST(.test, count: 200)

    func testRuinedClipBoundsRankTheLayerFirst() throws {
        // conv2's input (ReLU → max-pool, up to about 10) clipped at 0.05.
        let json = try DebugFixtures.defaultConfig(with: "conv2", data: ["clip_max": 0.05, "clip_min": -0.05])
        let analysis = try SensitivityAnalysis.load(checkpoint: DebugFixtures.floatCheckpoint, config: DebugFixtures.config(json),
                                                    calibration: { [try DebugFixtures.calibrationBatch()] })
        XCTAssertTrue(analysis.boundsDescription.contains("IFMR"), analysis.boundsDescription)
        XCTAssertTrue(analysis.boundsDescription.contains("conv2"), analysis.boundsDescription)
        let measured = try analysis.run(evaluation: evaluation, batchSize: 100)
        XCTAssertEqual(measured.rankedBy, .singleLoss)
        for ranking in SensitivityRanking.allCases {
            let report = measured.ranked(by: ranking)
            XCTAssertEqual(report.rows.first?.layer, "conv2", "\(ranking): \(report.table())")
            XCTAssertEqual(Set(report.rows.map(\.layer)), ["conv1", "conv2", "fc1", "fc2", "fc3"])
            XCTAssertGreaterThan(report.rows[0].singleLossIncrease, 0.3, report.table())
            XCTAssertGreaterThan(report.rows[0].leaveOutAccuracyGain, 0.1, report.table())
            XCTAssertEqual(report.float.outputL1, 0)
        }
    }

    func testAQATCheckpointKeepsItsTrainedBounds() throws {
        let model = try DebugFixtures.fakeQuantLeNet()
        let plan = try DebugFixtures.config().resolve(for: DebugFixtures.lenetSpec)
        // Ruin fc1's bound in the "trained" state.
        let fc1 = model.fakeQuantizers.first { $0.layerName == "fc1" }!
        fc1.activation.setClipRange(max: 0.02, min: 0)
        let file = try makeTemporaryFolder(self) + "/qat.h5"
        try model.checkpointFile(attributes: ["kind": "qat", "quantization": plan.explicitAMCTConfig()],
                                 extra: model.quantizerStateTensors()).write(to: file)
        var calibrated = false
        let analysis = try SensitivityAnalysis.load(checkpoint: file, config: nil, calibration: { calibrated = true; return [] })
        XCTAssertFalse(calibrated, "a QAT checkpoint is not calibrated again")
        XCTAssertTrue(analysis.boundsDescription.contains("checkpoint"), analysis.boundsDescription)
        let report = try analysis.run(evaluation: evaluation, batchSize: 100)
        XCTAssertEqual(report.rows.first?.layer, "fc1", report.table())
        // Switching quantizers on and off does not move the stored bounds.
        XCTAssertEqual(fc1.activation.clipMax.value.storage[0], 0.02)
        let reloaded = try Model.load(checkpoint: file).0.fakeQuantizers.first { $0.layerName == "fc1" }!
        XCTAssertEqual(reloaded.activation.clipMax.value.storage[0], 0.02)
    }

    func testWrittenConfigAppliesTheActionAndKeepsTheRestOfTheJob() throws {
        let base = try RetrainConfig.load(file: repositoryPath("Configs/retrain.json"))
        var plan = try base.resolve(for: DebugFixtures.lenetSpec)
        plan.layers[3].quantizer!.clipMax = 3   // conv2 with configured bounds
        plan.layers[3].quantizer!.clipMin = -1
        for action in SensitivityAction.allCases {
            let text = plan.amctConfig(applying: action, to: ["conv2"], base: base)
            let root = try JSONObject.parse(Data(text.utf8), file: "fixed.json")
            let written = try RetrainConfig.parse(root)
            let settings = try RunSettings.parse(root)
            XCTAssertEqual(settings.initCheckpoint, "Checkpoints/lenet5-float.h5", text)
            XCTAssertEqual(settings.checkpointDirectory, "Checkpoints/lenet5-qat")
            XCTAssertEqual(settings.epochs, 2)
            let resolved = try written.resolve(for: DebugFixtures.lenetSpec)
            let conv2 = resolved.layer(named: "conv2")!
            switch action {
            case .skip:
                XCTAssertNil(conv2.quantizer, text)
                XCTAssertEqual(conv2.rule, "layer entry conv2 (retrain_enable false)")
            case .int16:
                XCTAssertEqual(conv2.quantizer?.activationType, .int16, text)
                XCTAssertEqual(conv2.quantizer?.clipMax, 3)
                XCTAssertEqual(conv2.quantizer?.weightType, .int8)
            }
            // Every other layer is as before.
            for name in ["conv1", "fc1", "fc2", "fc3"] {
                XCTAssertEqual(resolved.layer(named: name)?.quantizer?.activationType, .int8, name)
                XCTAssertEqual(resolved.layer(named: name)?.quantizer?.channelWise, plan.layer(named: name)?.quantizer?.channelWise, name)
                XCTAssertEqual(resolved.layer(named: name)?.quantizer?.fixedMin, plan.layer(named: name)?.quantizer?.fixedMin, name)
            }
        }
    }

    func testCommandLineWritesTheFixedConfig() throws {
        let folder = try makeTemporaryFolder(self)
        let config = folder + "/bad.json", fixed = folder + "/fixed.json"
        try DebugFixtures.defaultConfig(with: "fc1", data: ["clip_max": 0.05, "clip_min": -0.05]).write(toFile: config, atomically: true, encoding: .utf8)
        let result = try runQAT(["sensitivity", "--checkpoint", DebugFixtures.floatCheckpoint, "--config", config,
                                 "--eval-limit", "200", "--train-limit", "256", "--top", "2", "--write-config", fixed,
                                 "--action", "skip", "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("   1  fc1"), result.stdout)
        XCTAssertEqual(result.stdout.components(separatedBy: "\n").filter { $0.hasPrefix("   ") }.count, 2, result.stdout)
        let plan = try RetrainConfig.load(file: fixed).resolve(for: DebugFixtures.lenetSpec)
        XCTAssertNil(plan.layer(named: "fc1")?.quantizer)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["conv1", "conv2", "fc2", "fc3"])
    }
}
