import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
import QAT

/// Vitis AI's last refused keys (issue 12 item 4): bias quantization (`"bias"` in
/// `quantizable_data_type`), layer configurations versus the model-level `input`, and
/// `target_device: "DPU"`'s rules, through calibrate, deploy and verify.
final class VitisDPUTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func plan(_ file: String) throws -> QuantizationPlan {
        try RetrainConfig.load(file: repositoryPath("Configs/vitis/" + file)).resolve(for: lenet)
    }

    func plan(text: String) throws -> QuantizationPlan {
        try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "vitis.json")).resolve(for: lenet)
    }

    // MARK: The bias grid

    /// Hand-computed: max |b| = 127 gives s_b = 1, so b/s_b is b and ±2.5, ±0.5 are ties.
    func testBiasGridOnTiesForEachRoundMode() {
        let bias = Tensor(shape: [6], storage: [127, 2.5, -2.5, 0.5, -0.5, -1.25])
        let expected: [RoundMode: [Float]] = [
            .halfEven: [127, 2, -2, 0, 0, -1],
            .halfUp: [127, 3, -2, 1, 0, -1],
            .halfDown: [127, 2, -3, 0, -1, -1],
            .stdRound: [127, 3, -3, 1, -1, -1],
        ]
        for (mode, codes) in expected {
            let grid = BiasGrid(bits: 8, roundMode: mode)
            XCTAssertEqual(grid.scale(of: bias), 1, "\(mode)")
            XCTAssertEqual(grid.quantize(bias).storage, codes, "\(mode)")
        }
        // max |b| = 63.5: s_b = 0.5 (float) is already a power of two; 0.25 and −0.75 are ties.
        let half = Tensor(shape: [3], storage: [-63.5, 0.25, -0.75])
        XCTAssertEqual(BiasGrid(roundMode: .halfEven).quantize(half).storage, [-63.5, 0, -1])
        XCTAssertEqual(BiasGrid(powerOfTwo: true, roundMode: .stdRound).quantize(half).storage, [-63.5, 0.5, -1])
        // max |b| = 100: s_b = 100/127 in float, 1 as a power of two (the covering 2^k); 2.5 is a tie there.
        let hundred = Tensor(shape: [2], storage: [100, 2.5])
        XCTAssertEqual(BiasGrid(powerOfTwo: true).scale(of: hundred), 1)
        XCTAssertEqual(BiasGrid(powerOfTwo: true, roundMode: .halfUp).quantize(hundred).storage, [100, 3])
        XCTAssertEqual(BiasGrid().scale(of: hundred), Float(100) / 127)
        // 16 bits: s_b = 8191.75/32767 = 0.25; 0.125 is a tie.
        let wide = Tensor(shape: [2], storage: [8191.75, 0.125])
        XCTAssertEqual(BiasGrid(bits: 16).scale(of: wide), 0.25)
        XCTAssertEqual(BiasGrid(bits: 16, roundMode: .halfUp).quantize(wide).storage, [8191.75, 0.25])
        // Narrow range changes nothing for a symmetric maxmin grid (|b|/s_b ≤ 127), and an all-zero bias stays 0.
        XCTAssertEqual(BiasGrid(narrowRange: true).quantize(bias).storage, expected[.halfEven])
        XCTAssertEqual(BiasGrid().quantize(Tensor(shape: [2], storage: [0, 0])).storage, [0, 0])
    }

    /// QAT: the bias gradient passes straight through its grid (as ARQ's weights).
    func testBiasGradientIsStraightThrough() {
        let bias = Variable(Tensor(shape: [4], storage: [127, 2.5, -3.3, 0.2]), requiresGrad: true)
        let tape = Tape()
        let out = biasFakeQuantize(bias, grid: BiasGrid(roundMode: .stdRound), tape: tape)
        XCTAssertEqual(out.value.storage, [127, 3, -3, 0])
        let upstream: [Float] = [1, -2, 3, -4]
        tape.backward(from: weightedSum(out, weights: upstream, tape: tape))
        XCTAssertEqual(bias.grad?.storage, upstream)
    }

    func testBiasQuantizationIsRecordedAndReadBack() throws {
        let json = #"{"conv1": {"retrain_enable": true, "retrain_weight_config": {"bias_quantize": {"bit_width": 16, "scale_type": "poweroftwo", "round_mode": "half_down", "narrow_range": true}}}, "fc3": {"retrain_enable": true, "retrain_weight_config": {"bias_quantize": false}}}"#
        let resolved = try plan(text: json)
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer?.biasGrid,
                       BiasGrid(bits: 16, powerOfTwo: true, roundMode: .halfDown, narrowRange: true))
        XCTAssertNil(resolved.layer(named: "fc3")?.quantizer?.biasGrid)
        let text = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        XCTAssertEqual(text.components(separatedBy: "bias_quantize").count, 2, "written for conv1 only: \(text)")
        let reread = try plan(text: text)
        XCTAssertEqual(reread.layers.map(\.quantizer?.biasGrid), resolved.layers.map(\.quantizer?.biasGrid))
        XCTAssertThrowsError(try plan(text: json.replacingOccurrences(of: "\"bias_quantize\": false", with: "\"bias_quantize\": true"))) {
            XCTAssertEqual(($0 as? InputError)?.keyPath, "fc3.retrain_weight_config.bias_quantize")
        }
        XCTAssertThrowsError(try plan(text: json.replacingOccurrences(of: "\"bit_width\": 16", with: "\"bit_width\": 32"))) {
            XCTAssertEqual(($0 as? InputError)?.keyPath, "conv1.retrain_weight_config.bias_quantize.bit_width")
        }
    }

    // MARK: The manual's int_config and layer_config

    func testIntConfigQuantizesEveryBias() throws {
        let resolved = try plan("int_config.json")
        XCTAssertEqual(resolved.quantizedLayers.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        for layer in resolved.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.biasGrid, BiasGrid(bits: 8, powerOfTwo: false, roundMode: .halfEven, narrowRange: false),
                           layer.name)
            XCTAssertEqual(layer.rule, "global", "input and activation agree: nothing to say")
        }
    }

    /// A layer entry is more specific than the model's `input`; the model's `input` is more
    /// specific than `activation` for the layers that read the model input.
    func testLayerEntriesAndTheModelInput() throws {
        let layers = try plan("layer_config.json")
        let conv1 = try XCTUnwrap(layers.layer(named: "conv1"))
        XCTAssertEqual(conv1.rule, "layer_quantize_config[1]; input quantizer: its activation settings, not the model's input settings")
        XCTAssertEqual(conv1.quantizer?.activationRoundMode, .halfUp, "the layer entry's activation round_mode")
        XCTAssertEqual(conv1.quantizer?.channelWise, false, "a layer entry is complete: its own per_channel false wins over the type's")
        XCTAssertEqual(conv1.quantizer?.biasGrid, BiasGrid())
        let conv2 = try XCTUnwrap(layers.layer(named: "conv2"))
        XCTAssertEqual(conv2.rule, "layer_quantize_config[0]")
        XCTAssertEqual(conv2.quantizer?.calibration, CalibrationMethod(EntropyCalibrator()))
        XCTAssertEqual(conv2.quantizer?.activationRoundMode, .halfEven)
        XCTAssertEqual(layers.layer(named: "fc1")?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()))

        // Model level: input entropy, activation maxmin. conv1 reads the model input.
        let text = try String(contentsOfFile: repositoryPath("Configs/vitis/int_config.json"), encoding: .utf8)
            .replacingOccurrences(of: #""overall_quantize_config""#,
                                  with: #""tensor_quantize_config": {"input": {"method": "entropy", "round_mode": "std_round"}}, "overall_quantize_config""#)
        let split = try plan(text: text)
        XCTAssertEqual(split.layer(named: "conv1")?.rule, "global; input quantizer: input settings")
        XCTAssertEqual(split.layer(named: "conv1")?.quantizer?.calibration, CalibrationMethod(EntropyCalibrator()))
        XCTAssertEqual(split.layer(named: "conv1")?.quantizer?.activationRoundMode, .stdRound)
        for name in ["conv2", "fc1", "fc2", "fc3"] {
            XCTAssertEqual(split.layer(named: name)?.rule, "global", name)
            XCTAssertEqual(split.layer(named: name)?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()), name)
            XCTAssertEqual(split.layer(named: name)?.quantizer?.activationRoundMode, .halfEven, name)
        }
        // A layer entry that gives `input` uses it for conv1.
        let entry = #", "layer_quantize_config": [{"layer_type": null, "layer_name": "conv1", "quantizable_data_type": ["input", "weights", "activation"], "overall_quantize_config": {"method": "maxmin"}, "tensor_quantize_config": {"input": {"round_mode": "half_down"}}}]}"#
        let named = try plan(text: String(text.dropLast(2)) + entry)
        XCTAssertEqual(named.layer(named: "conv1")?.rule, "layer_quantize_config[0]; input quantizer: input settings")
        XCTAssertEqual(named.layer(named: "conv1")?.quantizer?.activationRoundMode, .halfDown)
        XCTAssertEqual(named.layer(named: "conv1")?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()))
        XCTAssertNil(named.layer(named: "conv1")?.quantizer?.biasGrid, "the entry leaves out bias")
    }

    // MARK: target_device "DPU"

    func testDefaultConfigFollowsTheDPURules() throws {
        let config = try RetrainConfig.load(file: repositoryPath("Configs/vitis/default.json"))
        let origin = "target_device \"DPU\": overall_quantize_config."
        XCTAssertEqual(config.notes, [
            origin + "narrow_range false changed to true (weights, activation, bias, input)",
            origin + "round_mode std_round changed to half_up (activation)",
        ])
        let resolved = try config.resolve(for: lenet)
        XCTAssertEqual(resolved.notes, config.notes)
        XCTAssertEqual(resolved.ptqTransforms, [.crossLayerEqualization, .biasCorrection])
        XCTAssertTrue(resolved.table().contains("notes:\n  - " + origin + "narrow_range"), resolved.table())
        for layer in resolved.quantizedLayers {
            let q = try XCTUnwrap(layer.quantizer)
            XCTAssertEqual(q.calibration, CalibrationMethod(DiffsCalibrator()), layer.name)
            XCTAssertEqual(q.activationRoundMode, layer.name == "conv1" ? .stdRound : .halfUp, "\(layer.name): input std_round, activation half_up")
            XCTAssertEqual([q.activationScaleType, q.weightScaleType], [.powerOfTwo, .powerOfTwo])
            XCTAssertEqual([q.activationNarrowRange, q.weightNarrowRange], [true, true])
            XCTAssertEqual(q.weightRoundMode, .stdRound)
            XCTAssertEqual(q.weightScaleMethod, .diffs)
            XCTAssertEqual([q.channelWise, q.fixedMin], [false, false], "per tensor, signed symmetric")
            XCTAssertEqual(q.biasGrid, BiasGrid(bits: 8, powerOfTwo: true, roundMode: .stdRound, narrowRange: true, searchesPowerOfTwo: true))
        }
    }

    // MARK: diffs on weights and biases

    /// Hand-computed (as DiffsCalibrator's case): a row of forty 1.25 and one 130. ARQ's covering
    /// scale is 2 (130/127 → 2¹); s = 2 costs 40·0.75² = 22.5, s = 1 costs 40·0.25² + 3² = 11.5
    /// (130 clips to 127), s = 0.5 clips 130 to 63.5 (66.5² alone), s = 0.25 worse: s = 1 wins.
    /// Three 1.25 and one 130: s = 2 costs 1.6875, s = 1 9.1875: the covering scale stays.
    func testDiffsPicksTheLeastErrorPowerOfTwoForWeightsAndBiases() {
        let many = [Float](repeating: 1.25, count: 40) + [130], few = [Float](repeating: 1.25, count: 3) + [130]
        let state = WeightQuantizerState(weightShape: [2, 41], channelWise: true, powerOfTwo: true, searchesPowerOfTwo: true)
        let rows = Tensor(shape: [2, 41], storage: many + [Float](repeating: 0, count: 37) + few)
        XCTAssertEqual(state.arqRowScales(rows), [1, 2])
        let out = arqFakeQuantize(Variable(rows), state: state, tape: nil)
        XCTAssertEqual(Array(out.value.storage[0..<41]), [Float](repeating: 1, count: 40) + [127], "half to even: 1.25 → 1")
        XCTAssertEqual(state.scales, [1, 2])
        let covering = WeightQuantizerState(weightShape: [2, 41], channelWise: true, powerOfTwo: true)
        XCTAssertEqual(covering.arqRowScales(rows), [2, 2], "maxmin keeps the covering grid")
        // The same search on a bias (covering scale 130/127 → 2), with its own tie rule.
        XCTAssertEqual(BiasGrid(powerOfTwo: true, searchesPowerOfTwo: true).scale(of: Tensor(shape: [41], storage: many)), 1)
        XCTAssertEqual(BiasGrid(powerOfTwo: true, searchesPowerOfTwo: true).scale(of: Tensor(shape: [4], storage: few)), 2)
        XCTAssertEqual(BiasGrid(powerOfTwo: true).scale(of: Tensor(shape: [41], storage: many)), 2)
        // The plan refuses diffs where its candidates would not be powers of two.
        XCTAssertThrowsError(try plan(text: #"{"conv1": {"retrain_enable": true, "retrain_weight_config": {"method": "diffs"}}}"#)) {
            XCTAssertEqual(($0 as? InputError)?.keyPath, "conv1.retrain_weight_config.method")
            XCTAssertTrue("\($0)".contains("needs scale_type poweroftwo"), "\($0)")
        }
        XCTAssertThrowsError(try plan(text: #"{"conv1": {"retrain_enable": true, "retrain_weight_config": {"bias_quantize": {"method": "diffs"}}}}"#)) {
            XCTAssertEqual(($0 as? InputError)?.keyPath, "conv1.retrain_weight_config.bias_quantize.method")
        }
        XCTAssertEqual(try plan(text: #"{"conv1": {"retrain_enable": true, "retrain_weight_config": {"method": "diffs", "scale_type": "poweroftwo"}}}"#)
                        .layer(named: "conv1")?.quantizer?.weightScaleMethod, .diffs)
    }

    /// Keys left out take the DPU value silently; conflicting ones are changed with a note naming
    /// the key path, at every level; a method outside the rules is refused.
    func testConflictingSettingsAreChangedAndNoted() throws {
        let layerConfig = try String(contentsOfFile: repositoryPath("Configs/vitis/layer_config.json"), encoding: .utf8)
            .replacingOccurrences(of: #""target_device": "CPU""#, with: #""target_device": "DPU""#)
        func parse(_ text: String) throws -> RetrainConfig {
            try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "vitis.json"))
        }
        // The type entry's activation method entropy is not a DPU method.
        XCTAssertThrowsError(try parse(layerConfig)) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "layer_quantize_config[0].tensor_quantize_config.activation.method")
            XCTAssertTrue("\(error)".contains("entropy is not allowed with target_device \"DPU\""), "\(error)")
        }
        let config = try parse(layerConfig.replacingOccurrences(of: #""method": "entropy""#, with: #""method": "diffs""#))
        let origin = "target_device \"DPU\": "
        for expected in [
            "overall_quantize_config.round_mode half_even changed to std_round (weights, bias, input)",
            "overall_quantize_config.round_mode half_even changed to half_up (activation)",
            "overall_quantize_config.narrow_range false changed to true (weights, activation, bias, input)",
            "overall_quantize_config.scale_type float changed to poweroftwo (weights, activation, bias, input)",
            "overall_quantize_config.calib_statistic_method max changed to modal (weights, activation, bias, input)",
            "layer_quantize_config[0].overall_quantize_config.scale_type float changed to poweroftwo (weights, activation, bias)",
            "layer_quantize_config[0].tensor_quantize_config.weights.per_channel true changed to false (weights)",
        ] {
            XCTAssertTrue(config.notes.contains(origin + expected), "\(expected) in \(config.notes)")
        }
        XCTAssertFalse(config.notes.contains { $0.contains("tensor_quantize_config.activation.round_mode") }, "half_up is the DPU value")
        XCTAssertFalse(config.notes.contains { $0.contains("symmetry") || $0.contains(".signed") }, "true already")
        XCTAssertEqual(Set(config.notes).count, config.notes.count, "one note per key path and change")
        let resolved = try config.resolve(for: lenet)
        let conv2 = try XCTUnwrap(resolved.layer(named: "conv2")?.quantizer)
        XCTAssertEqual(conv2.channelWise, false)
        XCTAssertEqual(conv2.calibration, CalibrationMethod(DiffsCalibrator()))
        XCTAssertEqual(conv2.biasGrid, BiasGrid(bits: 8, powerOfTwo: true, roundMode: .stdRound, narrowRange: true))
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer?.activationRoundMode, .halfUp, "its layer entry's activation")
        XCTAssertEqual(resolved.layer(named: "fc1")?.quantizer?.calibration,
                       CalibrationMethod(MaxMinCalibrator(asymmetric: false, statistic: .modal)))
    }

    // MARK: calibrate → deploy → verify

    func testDPUDefaultAndIntConfigCalibrateDeployAndVerify() throws {
        let folder = try makeTemporaryFolder(self)
        for file in ["default", "int_config"] {
            let ptq = folder + "/\(file).h5", deployed = folder + "/\(file)-int8.h5"
            let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/\(file).json",
                                         "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                         "--batch-num", "2", "--test-limit", "300"])
            XCTAssertEqual(status, 0, log)
            XCTAssertEqual(log.contains("note: target_device \"DPU\": overall_quantize_config.narrow_range false changed to true"),
                           file == "default", log)
            // Fake quant adds each bias from its own grid.
            let (model, _) = try Model.load(checkpoint: ptq)
            let expectedGrid = file == "default" ? BiasGrid(powerOfTwo: true, roundMode: .stdRound, narrowRange: true, searchesPowerOfTwo: true)
                : BiasGrid()
            for layer in model.layers.compactMap({ $0 as? WeightedLayer }) {
                let float = try XCTUnwrap(layer.bias).value
                let onGrid = try XCTUnwrap(layer.quantizedBiasValue)
                XCTAssertEqual(onGrid, expectedGrid.quantize(float), "\(file) \(layer.spec.name)")
                XCTAssertNotEqual(onGrid, float, "\(file) \(layer.spec.name): the grid moves some bias")
            }
            let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
            XCTAssertEqual(deployStatus, 0, deployLog)
            if file == "default" {
                // Power-of-two grids without a folded BN: every requantization by shift.
                XCTAssertTrue(deployLog.contains("requantize by shift (power-of-two multipliers, integers only): 4 of 4 requantizing layers"),
                              deployLog)
            }
            let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "300"])
            XCTAssertEqual(verifyStatus, 0, verified)
            XCTAssertTrue(verified.contains("PASS"), "\(file): \(verified)")
        }
    }
}
