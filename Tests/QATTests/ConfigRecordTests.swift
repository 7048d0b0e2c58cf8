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

/// The one config writer (parse → write → parse gives the same value, for every key of both
/// forms) and the checkpoint's record of a run (JSON under config key names).
final class ConfigRecordTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func parse(_ text: String, file: String = "test.json") throws -> RetrainConfig {
        try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: file))
    }

    /// Every key the AMCT form knows, at least once.
    let amctForm = """
        {"model": {"spec": "Configs/models/lenet5.json", "init": "Checkpoints/lenet5-float.h5"},
         "data": {"path": "/data/fmnist", "train_limit": 640, "test_limit": 256},
         "train": {"epochs": 3, "batch_size": 32, "eval_batch_size": 128, "optimizer": "adam", "learning_rate": 0.001,
                   "momentum": 0.9, "weight_decay": 5e-05, "schedule": "step", "step_every": 1, "step_factor": 0.5,
                   "lr_floor": 0, "seed": 18446744073709551615, "threads": 2},
         "checkpoint": {"output": "out/final.h5", "dir": "out", "save_every": 10},
         "calibration": {"act_algo": "ifmr", "max_percentile": 0.99999, "min_percentile": 0.9999,
                         "search_range": [0.75, 1.25], "search_step": 0.025, "asymmetric": true},
         "version": 1, "batch_num": 3,
         "conv1": {"retrain_enable": true,
                   "retrain_data_config": {"algo": "ulq_quantize", "clip_max": 2.5, "clip_min": -0.1, "fixed_min": false,
                                           "learn_clip": false, "dst_type": "INT16", "act_algo": "ifmr", "max_percentile": 0.9,
                                           "min_percentile": 0.8, "search_range": [0.5, 2], "search_step": 0.1},
                   "retrain_weight_config": {"algo": "ulq_retrain", "channel_wise": false, "dst_type": "INT8"}},
         "conv2": {"retrain_data_config": {"act_algo": "hfmg", "num_of_bins": 1024}},
         "fc1": {"retrain_data_config": {"num_of_bins": 8192}},
         "fc2": {"retrain_data_config": {"act_algo": "percentile", "percentage": 99.9, "calib_statistic_method": "median"}},
         "fc3": {"retrain_enable": false, "retrain_weight_config": {"channel_wise": true}}}
        """

    /// Every key the simple form knows, at least once.
    let simpleForm = """
        {"calibration": {"act_algo": "hfmg", "num_of_bins": 2048},
         "batch_num": 2,
         "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT8", "fixed_min": true, "learn_clip": true},
         "retrain_weight_config": {"algo": "arq_retrain", "channel_wise": true, "dst_type": "INT8"},
         "skip_layers": ["fc3", "nope"],
         "skip_layer_types": ["conv2d"],
         "override_layer_types": {"linear": {"retrain_data_config": {"act_algo": "ifmr", "search_step": 0.05},
                                             "retrain_weight_config": {"channel_wise": false}}},
         "override_layer_configs": {"conv1": {"retrain_data_config": {"clip_max": 3, "clip_min": -3}},
                                    "fc1": {}}}
        """

    func testRoundTripKeepsEveryKeyOfBothForms() throws {
        for (name, text) in [("AMCT form", amctForm), ("simple form", simpleForm)] {
            let parsed = try parse(text)
            let written = parsed.jsonText(layerOrder: lenet.layers.map(\.name))
            let reparsed = try parse(written)
            XCTAssertEqual(reparsed, parsed, "\(name):\n\(written)")
            XCTAssertEqual(reparsed.jsonText(layerOrder: lenet.layers.map(\.name)), written, name)
            XCTAssertEqual(try reparsed.resolve(for: lenet), try parsed.resolve(for: lenet), name)
            // The Encodable conformance writes the same document.
            let encoded = try JSONEncoder().encode(parsed)
            XCTAssertEqual(try RetrainConfig.parse(JSONObject.parse(encoded, file: "test.json")), parsed, name)
        }
        // Every key the readers know appears in the written files (a key added to a reader but not
        // to the writer, or to these documents, fails here).
        let written = try [amctForm, simpleForm].map { try parse($0).jsonText() }.joined()
        let keys = ["version", "batch_num", "retrain_enable", "retrain_data_config", "retrain_weight_config", "algo",
                    "clip_max", "clip_min", "fixed_min", "learn_clip", "dst_type", "channel_wise", "act_algo",
                    "skip_layers", "skip_layer_types", "override_layer_types", "override_layer_configs", "calibration",
                    "model", "data", "train", "checkpoint"] + CalibrationConfig.settingKeys
        for key in keys { XCTAssertTrue(written.contains("\"\(key)\": "), key) }
        XCTAssertEqual(CalibrationConfig.settingKeys, ["max_percentile", "min_percentile", "search_range", "search_step", "asymmetric",
                                                       "num_of_bins", "calib_statistic_method", "percentage"])
    }

    func testWrittenAMCTFormIsReadableAndInModelOrder() throws {
        let text = try parse(amctForm).jsonText(layerOrder: lenet.layers.map(\.name))
        XCTAssertTrue(text.contains("""
              "conv1": {
                "retrain_enable": true,
                "retrain_data_config": {
                  "algo": "ulq_quantize",
                  "clip_max": 2.5,
                  "clip_min": -0.1,
            """), text)
        XCTAssertTrue(text.contains("\"search_range\": [0.5, 2.0]"), text)
        XCTAssertTrue(text.contains("\"seed\": 18446744073709551615"), text)
        let positions = ["\"model\"", "\"calibration\"", "\"version\"", "\"conv1\"", "\"conv2\"", "\"fc1\"", "\"fc3\""]
            .map { text.range(of: $0)!.lowerBound }
        XCTAssertEqual(positions, positions.sorted(), text)
    }

    func testTheExplicitPlanResolvesToTheSameSettings() throws {
        for text in [amctForm, simpleForm, createDefaultConfig(for: lenet)] {
            let plan = try parse(text).resolve(for: lenet)
            let recorded = try parse(plan.explicitConfig().jsonText(), file: "record").resolve(for: lenet)
            XCTAssertEqual(recorded.quantizedLayers.map(\.name), plan.quantizedLayers.map(\.name))
            XCTAssertEqual(recorded.batchCount, plan.batchCount)
            for layer in plan.quantizedLayers {
                var expected = layer.quantizer!
                expected.fixedMinIsDefault = false  // the record states every setting
                XCTAssertEqual(recorded.layer(named: layer.name)?.quantizer, expected, layer.name)
            }
        }
    }

    func testDefaultConfigTextIsUnchanged() {
        // What `qat create-config` printed before the writer was shared, for LeNet-5's conv1 and fc3.
        let text = createDefaultConfig(for: lenet)
        XCTAssertTrue(text.hasPrefix("""
            {
              "version": 1,
              "batch_num": 1,
              "conv1": {
                "retrain_enable": true,
                "retrain_data_config": {
                  "algo": "ulq_quantize",
                  "learn_clip": false,
                  "dst_type": "INT8"
                },
                "retrain_weight_config": {
                  "algo": "arq_retrain",
                  "channel_wise": true,
                  "dst_type": "INT8"
                }
              },
            """), text)
        XCTAssertTrue(text.hasSuffix("""
              "fc3": {
                "retrain_enable": true,
                "retrain_data_config": {
                  "algo": "ulq_quantize",
                  "dst_type": "INT8"
                },
                "retrain_weight_config": {
                  "algo": "arq_retrain",
                  "channel_wise": false,
                  "dst_type": "INT8"
                }
              }
            }

            """), text)
    }

    // MARK: The checkpoint's record

    func job(_ configure: (inout RunSettings) -> Void = { _ in }) throws -> TrainingRun {
        var settings = RunSettings()
        settings.modelSpec = repositoryPath("Configs/models/lenet5.json")
        settings.initCheckpoint = repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")
        settings.trainLimit = 128
        settings.learningRate = 0.01
        settings.setEpochs(2)
        configure(&settings)
        let config = try RetrainConfig.load(file: repositoryPath("Configs/retrain.json"))
        let job = try TrainingRun(configFile: "retrain.json", config: config, settings: settings)
        job.log = { _ in }
        return job
    }

    func testCheckpointRecordsSettingsAndPlanAsJSONUnderConfigKeys() throws {
        let run = try job()
        try run.prepareFreshStart(train: try fashionMNIST(.train, count: 128))
        let attributes = run.checkpointFile().attributes
        XCTAssertNil(attributes["config"], "the Swift printout of the settings is gone")
        XCTAssertEqual(attributes["kind"], "qat")
        let settings = try JSONSerialization.jsonObject(with: Data(attributes["run_settings"]!.utf8)) as! [String: [String: Any]]
        XCTAssertEqual(settings["data"]?["train_limit"] as? Int, 128)
        XCTAssertEqual(settings["train"]?["learning_rate"] as? Double, 0.01)
        XCTAssertEqual(settings["train"]?["schedule"] as? String, "cosine")
        XCTAssertEqual(settings["train"]?["cosine_epochs"] as? Int, 2)
        XCTAssertEqual(settings["train"]?["seed"] as? Int, 1)
        XCTAssertEqual(Set(settings.keys), ["data", "train"])
        let plan = try JSONSerialization.jsonObject(with: Data(attributes["quantization"]!.utf8)) as! [String: Any]
        XCTAssertEqual(plan["batch_num"] as? Int, 1)
        let conv1 = (plan["conv1"] as! [String: Any])["retrain_data_config"] as! [String: Any]
        XCTAssertEqual(conv1["learn_clip"] as? Bool, false)
        XCTAssertEqual(conv1["fixed_min"] as? Bool, false)
        XCTAssertEqual(conv1["act_algo"] as? String, "ifmr")
        XCTAssertEqual(conv1["search_range"] as? [Double], [0.7, 1.3])
        XCTAssertEqual(attributes["config_hash"]?.count, 16)
        // The record read back from the checkpoint is the one the run made.
        XCTAssertEqual(try RunRecord(checkpoint: run.checkpointFile(), file: "x.h5"), run.record)
    }

    func testRecordDifferencesNameConfigKeyPaths() throws {
        let base = try job().record
        let changed = try job { $0.learningRate = 0.02; $0.setEpochs(3); $0.trainLimit = nil }.record
        XCTAssertEqual(changed.differences(from: base), ["data.train_limit", "train.cosine_epochs", "train.epochs", "train.learning_rate"])
        XCTAssertEqual(base.differences(from: try job().record), [])
    }

    func testResumeFromACheckpointWithTheOldRecordNeedsForce() throws {
        let folder = try makeTemporaryFolder(self)
        let run = try job()
        try run.prepareFreshStart(train: try fashionMNIST(.train, count: 128))
        var old = run.checkpointFile()
        old.attributes["run_settings"] = nil
        old.attributes["config"] = "model = {…}\ntrain.schedule = cosine(epochs: 2, floor: 0.0)"
        try old.write(to: folder + "/old.h5")
        XCTAssertThrowsError(try job().resume(from: folder + "/old.h5", force: false)) { error in
            XCTAssertTrue("\(error)".contains("no run_settings record") && "\(error)".contains("--force"), "\(error)")
        }
        XCTAssertNoThrow(try job().resume(from: folder + "/old.h5", force: true))
        // eval and deploy only need the plan, which old QAT checkpoints stored in the same attribute.
        XCTAssertEqual(try Model.load(checkpoint: folder + "/old.h5").0.fakeQuantizers.count, 5)
        // A float checkpoint of the old record format still starts a QAT run.
        XCTAssertNotNil(try CheckpointFile.read(from: repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")).attributes["config"])
        XCTAssertEqual(try Model.load(checkpoint: repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")).0.fakeQuantizers.count, 0)
    }
}
