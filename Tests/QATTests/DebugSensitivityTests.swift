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
        try model.checkpointFile(attributes: ["kind": "qat", "quantization": plan.explicitConfig().jsonText()],
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
        // Configs/retrain.json with configured bounds on conv2.
        let text = try String(contentsOfFile: repositoryPath("Configs/retrain.json"), encoding: .utf8)
        var root = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
        var conv2 = root["conv2"] as! [String: Any]
        conv2["retrain_data_config"] = ["algo": "ulq_quantize", "clip_max": 3, "clip_min": -1]
        root["conv2"] = conv2
        let base = try RetrainConfig.parse(JSONObject(file: "retrain.json", path: "", values: root))
        let plan = try base.resolve(for: DebugFixtures.lenetSpec)
        let analysis = try SensitivityAnalysis.load(checkpoint: DebugFixtures.floatCheckpoint, config: base,
                                                    calibration: { [try DebugFixtures.calibrationBatch()] })
        for action in SensitivityAction.allCases {
            let fixed = analysis.fixedConfig(applying: action, to: ["conv2"], base: base, runFolder: "runs/fixed")
            let text = fixed.jsonText(layerOrder: DebugFixtures.lenetSpec.layers.map(\.name))
            let root = try JSONObject.parse(Data(text.utf8), file: "fixed.json")
            let written = try RetrainConfig.parse(root)
            let settings = try RunSettings.parse(root)
            XCTAssertEqual(settings.initCheckpoint, "Checkpoints/lenet5-float.h5", text)
            // Training the fixed job must not write into the studied run's folder.
            XCTAssertEqual(settings.checkpointDirectory, "runs/fixed", text)
            XCTAssertNil(settings.output, text)
            XCTAssertEqual(settings.epochs, 2)
            let resolved = try written.resolve(for: DebugFixtures.lenetSpec)
            let conv2 = resolved.layer(named: "conv2")!
            switch action {
            case .skip:
                XCTAssertNil(conv2.quantizer, text)
                XCTAssertEqual(conv2.rule, "layer entry conv2 (retrain_enable false)")
            case .int16:
                var expected = plan.layer(named: "conv2")!.quantizer!
                expected.activationType = .int16
                XCTAssertEqual(conv2.quantizer, expected, text)
                XCTAssertEqual(conv2.quantizer?.clipMax, 3)
            }
            // Every other layer is exactly as before, conv1's learn_clip false included.
            for name in ["conv1", "fc1", "fc2", "fc3"] {
                XCTAssertEqual(resolved.layer(named: name), plan.layer(named: name), name)
            }
            XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer?.learnClip, false)
        }
    }

    func testFixedConfigOfTheSimpleFormStaysSimple() throws {
        let base = try DebugFixtures.config("""
            {"retrain_data_config": {"act_algo": "hfmg"}, "retrain_weight_config": {},
             "override_layer_types": {"linear": {"retrain_weight_config": {"channel_wise": false}}},
             "override_layer_configs": {"fc1": {"retrain_data_config": {"learn_clip": false}}}}
            """)
        let plan = try base.resolve(for: DebugFixtures.lenetSpec)
        let skipped = base.applying(.skip, to: ["fc1"])
        guard case .simple(let simple) = skipped.rules else { return XCTFail("expected the simple form") }
        XCTAssertEqual(simple.skipLayers, ["fc1"])
        XCTAssertNil(simple.layerOverrides["fc1"], "a skipped layer cannot keep its override")
        let int16 = try DebugFixtures.config(base.applying(.int16, to: ["fc2"]).jsonText()).resolve(for: DebugFixtures.lenetSpec)
        var expected = plan.layer(named: "fc2")!.quantizer!
        expected.activationType = .int16
        XCTAssertEqual(int16.layer(named: "fc2")?.quantizer, expected)
        XCTAssertEqual(int16.layer(named: "fc2")?.rule, "override_layer_configs.fc2")
        XCTAssertEqual(int16.layer(named: "fc1"), plan.layer(named: "fc1"))
        XCTAssertEqual(try DebugFixtures.config(skipped.jsonText()).resolve(for: DebugFixtures.lenetSpec).quantizedLayers.map(\.name),
                       ["conv1", "conv2", "fc2", "fc3"])
    }

    /// The drift bugs of the old hand-written writer, end to end: the written config lost conv1's
    /// learn_clip (so `qat plan` no longer showed it frozen) and kept checkpoint.dir.
    func testCommandLineFixedConfigKeepsLearnClipAndGetsItsOwnRunFolder() throws {
        let folder = try makeTemporaryFolder(self)
        let fixed = folder + "/fixed.json"
        let result = try runQAT(["sensitivity", "--checkpoint", DebugFixtures.floatCheckpoint, "--config", "Configs/retrain.json",
                                 "--eval-limit", "100", "--train-limit", "256", "--write-config", fixed,
                                 "--action", "int16", "--top-k", "1", "--quiet"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("training it checkpoints into \(folder)/fixed/"), result.stdout)
        func conv1Row(_ config: String) throws -> String {
            let plan = try runQAT(["plan", "--config", config])
            XCTAssertEqual(plan.status, 0, plan.stderr)
            return plan.stdout.split(separator: "\n").first { $0.hasPrefix("conv1 ") }.map(String.init) ?? ""
        }
        XCTAssertTrue(try conv1Row("Configs/retrain.json").contains("frozen"))
        let written = try String(contentsOfFile: fixed, encoding: .utf8)
        XCTAssertTrue(try conv1Row(fixed).contains("frozen"), written)
        let settings = try RunSettings.parse(JSONObject.load(file: fixed))
        XCTAssertEqual(settings.checkpointDirectory, folder + "/fixed")
        XCTAssertFalse(written.contains("Checkpoints/lenet5-qat"), written)
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
