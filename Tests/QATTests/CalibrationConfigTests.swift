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

/// The Calibrator protocol and how a config picks a method: `act_algo`, `num_of_bins` and IFMR's
/// settings per layer, in the simple form's levels and in the `calibration` section.
final class CalibrationConfigTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func plan(_ json: String) throws -> QuantizationPlan {
        try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json")).resolve(for: lenet)
    }

    func assertError(_ json: String, keyPath: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try plan(json), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("expected an InputError, got \(error)", line: line) }
            XCTAssertEqual(error.file, "test.json", line: line)
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
        }
    }

    // MARK: The protocol

    func testCalibratorsGiveWhatTheirFunctionsGive() throws {
        let a = Tensor(shape: [2, 3], storage: [-1, 0.5, 2, 3, -0.25, 7])
        let b = Tensor(shape: [1, 2], storage: [0.1, 40])
        let values = a.storage + b.storage
        let ifmrStart = try IFMRParameters().startingClipRange(batches: [a, b], layer: "x")
        let direct = try ifmr(values, layer: "x").startingClipRange
        XCTAssertEqual(ifmrStart.clipMax, direct.clipMax)
        XCTAssertEqual(ifmrStart.clipMin, direct.clipMin)
        let hfmgStart = try HFMGParameters(binCount: 1024).startingClipRange(batches: [a, b], layer: "x")
        let histogram = try hfmg(values, numberOfBins: 1024, layer: "x")
        XCTAssertEqual(hfmgStart.clipMax, histogram.clipMax)
        XCTAssertEqual(hfmgStart.clipMin, histogram.clipMin)
        // HFMG's range of data that never goes negative starts at its minimum; the ULQ start holds 0.
        let positive = Tensor(shape: [4], storage: [0.5, 1, 2, 3])
        XCTAssertEqual(try hfmg(positive.storage, numberOfBins: 1024, layer: "x").clipMin, 0.5)
        XCTAssertEqual(try HFMGParameters(binCount: 1024).startingClipRange(batches: [positive], layer: "x").clipMin, 0)
        XCTAssertThrowsError(try HFMGParameters(binCount: 1000).startingClipRange(batches: [a], layer: "conv3")) { error in
            XCTAssertTrue("\(error)".contains("conv3") && "\(error)".contains("num_of_bins"), "\(error)")
        }
    }

    func testSettingsAreNamedAsAMCTNamesThem() {
        XCTAssertEqual(CalibrationMethod.known.map { $0.name }, ["ifmr", "hfmg", "maxmin", "percentile", "entropy", "mse", "diffs"])
        XCTAssertEqual(IFMRParameters.settings.map(\.key), ["max_percentile", "min_percentile", "search_range", "search_step", "asymmetric"])
        XCTAssertEqual(HFMGParameters.settings.map(\.key), ["num_of_bins", "asymmetric"])
        XCTAssertEqual(CalibrationMethod.default, CalibrationMethod(IFMRParameters()))
        XCTAssertNotEqual(CalibrationMethod(HFMGParameters()), CalibrationMethod(HFMGParameters(binCount: 2048)))
        XCTAssertNotEqual(CalibrationMethod(HFMGParameters()), CalibrationMethod(IFMRParameters()))
    }

    // MARK: Resolving

    func testActAlgoAndSettingsPerLayerAndGlobally() throws {
        // AMCT form: per layer, with the calibration section as every layer's default.
        let amct = try plan("""
            {"calibration": {"act_algo": "hfmg", "num_of_bins": 2048},
             "conv1": {"retrain_data_config": {"act_algo": "ifmr", "max_percentile": 0.9999, "search_range": [0.8, 1.2], "search_step": 0.02}},
             "conv2": {}, "fc1": {"retrain_data_config": {"num_of_bins": 8192}}}
            """)
        XCTAssertEqual(amct.layer(named: "conv1")?.quantizer?.calibration, CalibrationMethod(IFMRParameters(
            maxPercentile: 0.9999, searchRangeStart: 0.8, searchRangeEnd: 1.2, searchStep: 0.02)))
        XCTAssertEqual(amct.layer(named: "conv2")?.quantizer?.calibration, CalibrationMethod(HFMGParameters(binCount: 2048)))
        XCTAssertEqual(amct.layer(named: "fc1")?.quantizer?.calibration, CalibrationMethod(HFMGParameters(binCount: 8192)))
        XCTAssertEqual(amct.warnings, ["conv1: calibration.num_of_bins is ignored: conv1 calibrates with ifmr, which has no num_of_bins"])
        XCTAssertTrue(amct.table().contains("ulq_quantize, HFMG"), amct.table())

        // Simple form: global < type override < layer override, key by key.
        let simple = try plan("""
            {"retrain_data_config": {"act_algo": "hfmg"},
             "override_layer_types": {"linear": {"retrain_data_config": {"num_of_bins": 1024}}},
             "override_layer_configs": {"fc3": {"retrain_data_config": {"act_algo": "ifmr", "min_percentile": 0.99}}}}
            """)
        XCTAssertEqual(simple.layer(named: "conv1")?.quantizer?.calibration, CalibrationMethod(HFMGParameters()))
        XCTAssertEqual(simple.layer(named: "fc2")?.quantizer?.calibration, CalibrationMethod(HFMGParameters(binCount: 1024)))
        XCTAssertEqual(simple.layer(named: "fc3")?.quantizer?.calibration, CalibrationMethod(IFMRParameters(minPercentile: 0.99)))
        XCTAssertEqual(simple.warnings, [
            "fc3: override_layer_types.linear.retrain_data_config.num_of_bins is ignored: fc3 calibrates with ifmr, which has no num_of_bins",
        ])
        // No key at all: IFMR with the contract's defaults, as before act_algo existed.
        XCTAssertEqual(try plan(#"{"conv1": {}}"#).layer(named: "conv1")?.quantizer?.calibration, .default)
        // The IFMR keys of the calibration section keep their meaning.
        let section = try plan(#"{"calibration": {"search_range": [0.5, 1.5], "search_step": 0.05}, "conv1": {}}"#)
        XCTAssertEqual(section.layer(named: "conv1")?.quantizer?.calibration,
                       CalibrationMethod(IFMRParameters(searchRangeStart: 0.5, searchRangeEnd: 1.5, searchStep: 0.05)))
    }

    func testBadCalibrationKeysNameTheirKeyPath() {
        assertError(#"{"conv1": {"retrain_data_config": {"act_algo": "kl"}}}"#,
                    keyPath: "conv1.retrain_data_config.act_algo", mentions: ["unsupported value \"kl\"", "\"ifmr\", \"hfmg\", \"maxmin\""])
        assertError(#"{"conv1": {"retrain_data_config": {"act_algo": 1}}}"#,
                    keyPath: "conv1.retrain_data_config.act_algo", mentions: ["expected a string"])
        assertError(#"{"conv1": {"retrain_data_config": {"act_algo": "hfmg", "num_of_bins": 1000}}}"#,
                    keyPath: "conv1.retrain_data_config.num_of_bins", mentions: ["must be one of 1024, 2048, 4096, 8192", "got 1000"])
        assertError(#"{"conv1": {"retrain_data_config": {"num_of_bins": "4096"}}}"#,
                    keyPath: "conv1.retrain_data_config.num_of_bins", mentions: ["expected a number"])
        assertError(#"{"conv1": {"retrain_data_config": {"num_of_bins": 4096.5}}}"#,
                    keyPath: "conv1.retrain_data_config.num_of_bins", mentions: ["expected an integer"])
        assertError(#"{"retrain_data_config": {"num_of_bins": 512}}"#,
                    keyPath: "retrain_data_config.num_of_bins", mentions: ["must be one of"])
        assertError(#"{"override_layer_configs": {"fc1": {"retrain_data_config": {"act_algo": "HFMG"}}}}"#,
                    keyPath: "override_layer_configs.fc1.retrain_data_config.act_algo", mentions: ["unsupported value \"HFMG\""])
        assertError(#"{"calibration": {"num_of_bins": 3}, "conv1": {}}"#, keyPath: "calibration.num_of_bins", mentions: ["must be one of"])
        assertError(#"{"calibration": {"act_algo": "kl"}, "conv1": {}}"#, keyPath: "calibration.act_algo", mentions: ["unsupported value"])
        assertError(#"{"calibration": {"bins": 1024}, "conv1": {}}"#, keyPath: "calibration.bins",
                    mentions: ["unknown key", "act_algo", "num_of_bins", "max_percentile"])
        // One object's settings belong to one method (AMCT: IFMR and HFMG parameters never share a layer).
        assertError(#"{"conv1": {"retrain_data_config": {"act_algo": "ifmr", "num_of_bins": 2048}}}"#,
                    keyPath: "conv1.retrain_data_config.num_of_bins", mentions: ["setting of hfmg", "not of act_algo \"ifmr\""])
        assertError(#"{"conv1": {"retrain_data_config": {"act_algo": "hfmg", "search_step": 0.1}}}"#,
                    keyPath: "conv1.retrain_data_config.search_step", mentions: ["setting of ifmr", "hfmg's settings: num_of_bins"])
        assertError(#"{"conv1": {"retrain_data_config": {"max_percentile": 0.99, "num_of_bins": 2048}}}"#,
                    keyPath: "conv1.retrain_data_config.num_of_bins", mentions: ["cannot be given with max_percentile"])
        // IFMR's ranges are AMCT's.
        assertError(#"{"conv1": {"retrain_data_config": {"max_percentile": 0.5}}}"#,
                    keyPath: "conv1.retrain_data_config.max_percentile", mentions: ["(0.5, 1]", "got 0.5"])
        assertError(#"{"calibration": {"min_percentile": 1.5}, "conv1": {}}"#, keyPath: "calibration.min_percentile", mentions: ["(0.5, 1]"])
        assertError(#"{"conv1": {"retrain_data_config": {"search_range": [1.3, 0.7]}}}"#,
                    keyPath: "conv1.retrain_data_config.search_range", mentions: ["0 < start < end"])
        assertError(#"{"conv1": {"retrain_data_config": {"search_step": 0}}}"#,
                    keyPath: "conv1.retrain_data_config.search_step", mentions: ["> 0"])
        // search_step at most end − start, checked after merging: the key that broke it is named.
        assertError(#"{"calibration": {"search_step": 0.5}, "conv1": {"retrain_data_config": {"search_range": [0.9, 1.1]}}}"#,
                    keyPath: "calibration.search_step", mentions: ["search_step 0.5 is wider than search_range [0.9, 1.1]", "(0, end − start]"])
        assertError(#"{"conv1": {"retrain_data_config": {"search_range": [1.0, 1.005]}}}"#,
                    keyPath: "conv1.retrain_data_config.search_range", mentions: ["search_step 0.01 is wider than search_range [1.0, 1.005]"])
    }

    // MARK: HFMG through a config, on Fashion-MNIST

    /// conv2 calibrated with HFMG (2048 bins) and the rest with IFMR, by a QAT run's own
    /// calibration, equals calling hfmg and ifmr on the inputs those layers received.
    func testATrainingRunCalibratesWithTheMethodsItsConfigNames() throws {
        let json = createDefaultConfig(for: lenet).replacingOccurrences(of: "\"batch_num\": 1", with: "\"batch_num\": 2").replacingOccurrences(
            of: "\"conv2\": {\n    \"retrain_enable\": true,\n    \"retrain_data_config\": {\n      \"algo\": \"ulq_quantize\",",
            with: "\"conv2\": {\n    \"retrain_enable\": true,\n    \"retrain_data_config\": {\n      \"algo\": \"ulq_quantize\", \"act_algo\": \"hfmg\", \"num_of_bins\": 2048,")
        let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "hfmg.json"))
        var settings = RunSettings()
        settings.modelSpec = repositoryPath("Configs/models/lenet5.json")
        settings.initCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
        settings.trainLimit = 256
        let job = try TrainingRun(configFile: "hfmg.json", config: config, settings: settings)
        var log: [String] = []
        job.log = { log.append($0) }
        let train = try fashionMNIST(.train, count: 256)
        try job.prepareFreshStart(train: train)
        XCTAssertTrue(log.contains("calibrated conv1, fc1, fc2, fc3 with IFMR and conv2 with HFMG on 2 batch(es)"), "\(log)")

        // The same batches through the same uncalibrated model, collecting each layer's input.
        let batches = job.trainer.calibrationBatches(from: train, count: 2)
        XCTAssertEqual(batches.count, 2)
        let (reference, _) = try Model.load(checkpoint: repositoryPath("Checkpoints/lenet5-float.h5"))
        reference.applyQuantization(job.plan!)
        var inputs: [String: [Float]] = [:]
        for quantizer in reference.fakeQuantizers {
            quantizer.collectInput = { inputs[quantizer.layerName, default: []] += $0.storage }
        }
        for batch in batches { _ = reference.forward(batch, training: false, tape: nil) }

        let conv2 = job.model.fakeQuantizers[1]
        XCTAssertEqual(conv2.settings.calibration, CalibrationMethod(HFMGParameters(binCount: 2048)))
        let histogram = try hfmg(inputs["conv2"]!, numberOfBins: 2048, layer: "conv2")
        XCTAssertGreaterThan(histogram.clipMax, 0)
        XCTAssertEqual(conv2.activation.clipMax.value.storage[0], histogram.clipMax)
        XCTAssertEqual(conv2.activation.clipMin.value.storage[0], 0, "fixed_min: conv2 reads relu1 → pool1")
        let fc1 = job.model.fakeQuantizers[2]
        XCTAssertEqual(fc1.activation.clipMax.value.storage[0], try ifmr(inputs["fc1"]!, layer: "fc1").startingClipRange.clipMax)
        // IFMR and HFMG really differ here, so the check above could fail.
        XCTAssertNotEqual(histogram.clipMax, try ifmr(inputs["conv2"]!, layer: "conv2").startingClipRange.clipMax)

        // The checkpoint records the method under AMCT's names.
        let record = try JSONSerialization.jsonObject(with: Data(job.checkpointFile().attributes["quantization"]!.utf8)) as! [String: Any]
        let conv2Data = (record["conv2"] as! [String: Any])["retrain_data_config"] as! [String: Any]
        XCTAssertEqual(conv2Data["act_algo"] as? String, "hfmg")
        XCTAssertEqual(conv2Data["num_of_bins"] as? Int, 2048)
        XCTAssertNil(conv2Data["max_percentile"])
    }
}
