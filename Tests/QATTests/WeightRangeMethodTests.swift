import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// Weight calibration methods (Vitis AI's weight `method` percentile, entropy, mse; the weight
/// section's `method` in qat's JSON): each row's amplitude is the method's threshold over the row
/// instead of ARQ's max |w|; hand-computed rows, the plan and its record, the refusals, and PTQ
/// through deploy and verify.
final class WeightRangeMethodTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    // MARK: Scales

    /// |x| = 0.1 … 1.0: the 80th percentile rule takes the 2nd largest (k = 10 − ⌊8⌋), 0.9.
    func testPercentileRowScaleIsTheRowsPercentileOver127() {
        let row: [Float] = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0]
        let weight = Tensor(shape: [2, 10], storage: row + row.map { $0 * 2 })
        let scales = thresholdScales(weight, rows: 2, method: PercentileCalibrator(percentage: 80))
        XCTAssertEqual(scales, [Float(0.9) / 127, Float(1.8) / 127])
        // Per tensor: one row of all 20 values, 2nd largest |x| = 1.8.
        XCTAssertEqual(thresholdScales(weight, rows: 1, method: PercentileCalibrator(percentage: 90)), [Float(1.8) / 127])
    }

    /// A bell-shaped row of 20,000 weights (sums of 12 uniforms from a fixed LCG): the few
    /// largest are rare enough that a grid below max |w| reconstructs the row with less error,
    /// and MSE finds one; max |w| is one of its candidates, so it can never do worse.
    func testMSERowScaleClipsTheTailWithLessError() {
        var state: UInt64 = 12345
        func uniform() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24)
        }
        let values = (0..<20_000).map { _ in ((0..<12).reduce(Float(0)) { sum, _ in sum + uniform() } - 6) * 0.05 }
        let weight = Tensor(shape: [1, values.count], storage: values)
        let mse = thresholdScales(weight, rows: 1, method: MSECalibrator())[0]
        let largest = values.reduce(0) { max($0, abs($1)) } / 127
        XCTAssertLessThan(mse, largest)
        func error(_ s: Float) -> Double {
            values.reduce(0) { sum, x in
                let d = Double(QuantizationGrid.clampAndRound(x / s, low: -128, high: 127) * s - x)
                return sum + d * d
            }
        }
        XCTAssertLessThan(error(mse), error(largest))
    }

    /// The state computes once per weight value: unchanged weights reuse the scales, new ones
    /// recompute, and the fake-quantized weight clamps at the method's threshold.
    func testStateUsesTheMethodAndRecomputesOnlyForNewWeights() {
        let state = WeightQuantizerState(weightShape: [1, 10], channelWise: false)
        state.rangeMethod = PercentileCalibrator(percentage: 80)
        let row: [Float] = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0]
        let w = Variable(Tensor(shape: [1, 10], storage: row))
        let quantized = weightFakeQuantize(w, state: state, tape: nil).value.storage
        XCTAssertEqual(state.scales, [Float(0.9) / 127])
        XCTAssertEqual(quantized[9], -128 * (Float(0.9) / 127), "−1.0 clamps to the lowest code")
        XCTAssertEqual(state.arqRowScales(w.value), state.scales)
        XCTAssertEqual(state.arqRowScales(Tensor(shape: [1, 10], storage: row.map { $0 * 2 })), [Float(1.8) / 127])
    }

    // MARK: Configs

    func vitis(weights: String) -> String {
        let text = try! String(contentsOfFile: repositoryPath("Configs/vitis/plain-maxmin.json"), encoding: .utf8)
        return String(text.dropLast(2)) + ", \"tensor_quantize_config\": {\"weights\": {\(weights)}}}"
    }

    func plan(_ text: String, file: String = "c.json") throws -> QuantizationPlan {
        try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: file)).resolve(for: lenet)
    }

    /// Vitis weights' method maps onto the weight section's `method` (maxmin stays ARQ); the
    /// plan's record reads back to the same settings.
    func testVitisWeightMethodsResolveAndTheRecordRoundTrips() throws {
        XCTAssertEqual(try plan(vitis(weights: #""method": "maxmin""#)).layers[0].quantizer!.weightScaleMethod, .maxmin)
        for method in [ScaleMethod.percentile, .entropy, .mse] {
            let resolved = try plan(vitis(weights: #""method": "\#(method.rawValue)""#))
            let conv1 = resolved.layers[0].quantizer!
            XCTAssertEqual(conv1.weightScaleMethod, method)
            XCTAssertEqual(conv1.weightPercentage, method == .percentile ? 99.99 : nil)
            XCTAssertEqual(conv1.calibration, CalibrationMethod(MaxMinCalibrator()), "activations keep maxmin")
            let record = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
            let written = try JSONSerialization.jsonObject(with: Data(record.utf8)) as! [String: Any]
            let weights = (written["conv1"] as! [String: Any])["retrain_weight_config"] as! [String: Any]
            XCTAssertEqual(weights["method"] as? String, method.rawValue)
            XCTAssertEqual(weights["percentage"] as? Double, method == .percentile ? 99.99 : nil)
            let reread = try plan(record)
            XCTAssertEqual(reread.quantizedLayers.map(\.quantizer), resolved.quantizedLayers.map(\.quantizer), method.rawValue)
        }
        let percentile = try plan(vitis(weights: #""method": "percentile", "percentage": 99.5"#)).layers[0].quantizer!
        XCTAssertEqual(percentile.weightPercentage, 99.5)
        let fake = FakeQuantizer(layerName: "conv1", settings: percentile, weightShape: [6, 1, 5, 5])
        XCTAssertEqual((fake.weight.rangeMethod as? PercentileCalibrator)?.percentage, 99.5)
    }

    func assertError(_ text: String, keyPath: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try plan(text), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("expected an InputError, got \(error)", line: line) }
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
        }
    }

    func testWeightMethodRefusals() {
        func retrain(_ weight: String) -> String {
            #"{"conv1": {"retrain_enable": true, "retrain_data_config": {"algo": "ulq_quantize"}, "retrain_weight_config": {\#(weight)}}}"#
        }
        assertError(retrain(#""method": "kl""#), keyPath: "conv1.retrain_weight_config.method",
                    mentions: ["unsupported value \"kl\"", "\"percentile\", \"entropy\", \"mse\""])
        assertError(retrain(#""method": "mse", "percentage": 99"#), keyPath: "conv1.retrain_weight_config.percentage",
                    mentions: ["is a setting of method percentile", "method mse"])
        assertError(retrain(#""percentage": 99"#), keyPath: "conv1.retrain_weight_config.percentage",
                    mentions: ["is a setting of method percentile", "method maxmin"])
        assertError(retrain(#""method": "percentile", "percentage": 40"#), keyPath: "conv1.retrain_weight_config.percentage",
                    mentions: ["(50, 100]"])
        assertError(retrain(#""algo": "ulq_retrain", "method": "mse""#), keyPath: "conv1.retrain_weight_config.method",
                    mentions: ["mse on layer conv1 is not allowed with algo ulq_retrain"])
        assertError(retrain(#""nuq_quantize": {"num_steps": 16}, "method": "entropy""#), keyPath: "conv1.retrain_weight_config.method",
                    mentions: ["entropy on layer conv1 is not allowed with nuq_quantize"])
        assertError(retrain(#""bias_quantize": {"method": "mse"}"#), keyPath: "conv1.retrain_weight_config.bias_quantize.method",
                    mentions: ["unsupported value \"mse\"", "\"maxmin\", \"diffs\""])
        assertError(vitis(weights: #""method": "percentile", "symmetry": false"#),
                    keyPath: "tensor_quantize_config.weights.symmetry", mentions: ["symmetric"])
    }

    /// QAT would redo the search at every step: `qat train` refuses in one line.
    func testTrainingRefusesWeightRangeMethods() throws {
        let file = repositoryPath("Configs/vitis/plain-weights-mse.json")
        var settings = RunSettings()
        settings.modelSpec = repositoryPath("Configs/models/lenet5.json")
        let run = try TrainingRun(configFile: "plain-weights-mse.json", config: try RetrainConfig.load(file: file), settings: settings)
        let train = try fashionMNIST(.train, count: 128), test = try fashionMNIST(.test, count: 32)
        XCTAssertThrowsError(try run.preflight(train: train, test: test)) { error in
            guard let error = error as? InputError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.keyPath, "layer conv1")
            XCTAssertTrue(error.message.contains("weight method mse is for post-training quantization") && error.message.contains("qat calibrate"),
                          error.message)
        }
    }

    // MARK: PTQ

    /// Each method through calibrate, deploy and verify: the engine reproduces the clamped rows.
    func testCalibrateDeployVerifyWithEachWeightMethod() throws {
        let folder = try makeTemporaryFolder(self)
        for method in ["percentile", "entropy", "mse"] {
            let config = folder + "/\(method).json"
            try vitis(weights: #""method": "\#(method)""#).write(toFile: config, atomically: true, encoding: .utf8)
            let ptq = folder + "/\(method).h5", deployed = folder + "/\(method)-int8.h5"
            let (status, log) = try qat(["calibrate", "--config", config, "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"),
                                         "--output", ptq, "--batch-num", "2", "--test-limit", "500"])
            XCTAssertEqual(status, 0, log)
            let (planStatus, planned) = try qat(["plan", "--config", config])
            XCTAssertEqual(planStatus, 0, planned)
            XCTAssertTrue(planned.contains("per-tensor (\(method)"), planned)
            let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
            XCTAssertEqual(deployStatus, 0, deployLog)
            let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
            XCTAssertEqual(verifyStatus, 0, verified)
            XCTAssertTrue(verified.contains("predictions equal: 100.000%"), "\(method): \(verified)")
        }
    }
}
