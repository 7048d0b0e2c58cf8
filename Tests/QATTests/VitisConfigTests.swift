import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
import QAT

/// Vitis AI's vai_q_pytorch JSON read verbatim (issue 12 item 4): the manual's examples in
/// Configs/vitis, how each key maps onto the plan, every unsupported setting refused with its key
/// path, and PTQ with each calibration method through deploy and verify.
final class VitisConfigTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    /// int_config.json without "bias": the model configuration every test below edits.
    let settings = #""datatype": "int", "bit_width": 8, "method": "maxmin", "round_mode": "half_even", "symmetry": true, "per_channel": false, "signed": true, "narrow_range": false, "scale_type": "float", "calib_statistic_method": "max""#
    let header = #""convert_relu6_to_relu": false, "include_cle": false, "keep_first_last_layer_accuracy": false, "keep_add_layer_accuracy": false, "include_bias_corr": false, "target_device": "CPU", "quantizable_data_type": ["input", "weights", "activation"]"#

    /// A config: the global settings (`header`), `overall_quantize_config` (`settings` unless
    /// given), and `extra` top-level members.
    func json(overall: String? = nil, extra: String = "", header: String? = nil) -> String {
        "{\(header ?? self.header), \"overall_quantize_config\": {\(overall ?? settings)}\(extra.isEmpty ? "" : ", " + extra)}"
    }

    /// `settings` with `key` set to `value` (JSON text).
    func overall(_ key: String, _ value: String) -> String {
        settings.replacingOccurrences(of: #"(?<="\#(key)": )[^,]+"#, with: value, options: .regularExpression)
    }

    func config(_ text: String) throws -> RetrainConfig {
        try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "vitis.json"))
    }

    func plan(_ text: String) throws -> QuantizationPlan { try config(text).resolve(for: lenet) }

    func assertError(_ text: String, keyPath: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try plan(text), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("expected an InputError, got \(error)", line: line) }
            XCTAssertEqual(error.file, "vitis.json", line: line)
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
        }
    }

    // MARK: The manual's examples (Configs/vitis)

    func testTheManualsExamplesLoad() throws {
        let shipped = try FileManager.default.contentsOfDirectory(atPath: repositoryPath("Configs/vitis")).sorted()
        // Every literal example of the manual loads: default.json, int_config.json and
        // layer_config.json (tested in detail below and in VitisDPUTests), the float data types
        // as cast layers (FloatCastTests checks their plans in full).
        let manualExamples = ["bfloat16_config.json", "default.json", "int_config.json", "layer_config.json", "mix_precision_config.json"]
        let loading = ["plain-diffs.json", "plain-entropy.json", "plain-layers.json", "plain-maxmin.json", "plain-mse.json",
                       "plain-percentile.json", "plain-narrow-range.json", "plain-poweroftwo.json", "plain-std-round.json", "plain-weights-mse.json"]
        XCTAssertEqual(shipped, (manualExamples + loading).sorted(), "each file is checked below")
        for file in manualExamples {
            XCTAssertNoThrow(try RetrainConfig.load(file: repositoryPath("Configs/vitis/" + file)).resolve(for: lenet), file)
        }
        for file in ["bfloat16_config.json", "mix_precision_config.json"] {
            let resolved = try RetrainConfig.load(file: repositoryPath("Configs/vitis/" + file)).resolve(for: lenet)
            XCTAssertEqual(resolved.quantizedLayers.compactMap(\.quantizer?.floatCast?.weights), Array(repeating: .bfloat16, count: 5), file)
        }
        let methods: [String: CalibrationMethod] = [
            "plain-maxmin.json": CalibrationMethod(MaxMinCalibrator()),
            "plain-percentile.json": CalibrationMethod(PercentileCalibrator(percentage: 99.99)),
            "plain-entropy.json": CalibrationMethod(EntropyCalibrator()),
            "plain-mse.json": CalibrationMethod(MSECalibrator()),
            "plain-diffs.json": CalibrationMethod(DiffsCalibrator()),
            "plain-poweroftwo.json": CalibrationMethod(MaxMinCalibrator()),
            "plain-std-round.json": CalibrationMethod(MaxMinCalibrator()),
            "plain-narrow-range.json": CalibrationMethod(MaxMinCalibrator()),
            "plain-weights-mse.json": CalibrationMethod(MaxMinCalibrator()),
        ]
        for (file, method) in methods {
            let loaded = try RetrainConfig.load(file: repositoryPath("Configs/vitis/" + file))
            XCTAssertEqual(loaded.format, .vitis)
            let resolved = try loaded.resolve(for: lenet)
            XCTAssertEqual(resolved.quantizedLayers.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"], file)
            for layer in resolved.quantizedLayers {
                let q = try XCTUnwrap(layer.quantizer)
                XCTAssertEqual(q.calibration, method, "\(file) \(layer.name)")
                XCTAssertEqual(q.fixedMin, false, "signed and symmetric: zero point 0")
                XCTAssertEqual(q.channelWise, false)
                XCTAssertEqual([q.activationType, q.weightType], [.int8, .int8])
                XCTAssertEqual(layer.rule, "global")
                XCTAssertEqual(q.weightScaleMethod, file == "plain-weights-mse.json" ? .mse : .maxmin, file)
            }
            XCTAssertEqual(resolved.warnings, [], file)
        }
        // The manual's two layer configurations (bias and half_up left out): by type and by name.
        let layers = try RetrainConfig.load(file: repositoryPath("Configs/vitis/plain-layers.json")).resolve(for: lenet)
        let conv1 = try XCTUnwrap(layers.layer(named: "conv1"))
        XCTAssertEqual(conv1.rule, "layer_quantize_config[1]", "the layer name wins over the type")
        XCTAssertEqual(conv1.quantizer?.calibration, CalibrationMethod(PercentileCalibrator(percentage: 99.99)))
        XCTAssertEqual(conv1.quantizer?.channelWise, false)
        let conv2 = try XCTUnwrap(layers.layer(named: "conv2"))
        XCTAssertEqual(conv2.rule, "layer_quantize_config[0]")
        XCTAssertEqual(conv2.quantizer?.calibration, CalibrationMethod(EntropyCalibrator()))
        XCTAssertEqual(conv2.quantizer?.channelWise, true)
        XCTAssertEqual(layers.layer(named: "fc1")?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()))
    }

    // MARK: Mapping onto the plan

    func testSymmetrySignedAndWidthMapOntoThePlan() throws {
        let unsigned = try plan(json(extra: #""tensor_quantize_config": {"activation": {"signed": false}, "input": {"signed": false}}"#))
        XCTAssertEqual(unsigned.layer(named: "conv2")?.quantizer?.fixedMin, true, "unsigned symmetric: [0, T]")
        XCTAssertEqual(unsigned.layer(named: "conv2")?.quantizer?.fixedMinIsDefault, false)
        // Asymmetric activations (weights stay symmetric): the graph rule decides fixed_min.
        let asymmetric = try plan(json(extra: #""tensor_quantize_config": {"activation": {"symmetry": false, "calib_statistic_method": "median"}, "input": {"symmetry": false, "calib_statistic_method": "median"}}"#))
        let conv1 = try XCTUnwrap(asymmetric.layer(named: "conv1")?.quantizer)
        XCTAssertEqual(conv1.calibration, CalibrationMethod(MaxMinCalibrator(asymmetric: true, statistic: .median)))
        XCTAssertTrue(conv1.fixedMinIsDefault)
        XCTAssertEqual(conv1.fixedMin, false, "conv1 reads the image")
        XCTAssertEqual(asymmetric.layer(named: "conv2")?.quantizer?.fixedMin, true, "relu input")
        let wide = try plan(json(extra: #""tensor_quantize_config": {"activation": {"bit_width": 16}, "input": {"bit_width": 16}}"#))
        XCTAssertEqual(wide.layer(named: "conv1")?.quantizer?.activationType, .int16)
        XCTAssertEqual(wide.layer(named: "conv1")?.quantizer?.weightType, .int8)
        // Per-channel weights on conv2d by type; torch.nn.Linear and qat's names are both accepted.
        let byType = try plan(json(extra: #""layer_quantize_config": [{"layer_type": "torch.nn.Linear", "layer_name": null, "quantizable_data_type": ["weights", "activation"], "overall_quantize_config": {"method": "percentile", "percentage": 99.9}, "tensor_quantize_config": {"weights": {"method": "maxmin"}}}]"#))
        XCTAssertEqual(byType.layer(named: "fc2")?.quantizer?.calibration, CalibrationMethod(PercentileCalibrator(percentage: 99.9)),
                       "keys a layer configuration leaves out come from the model configuration")
        XCTAssertEqual(byType.layer(named: "fc2")?.rule, "layer_quantize_config[0]")
        XCTAssertEqual(byType.layer(named: "conv2")?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()))
        // A layer configuration that quantizes no tensor keeps its layers float.
        let float = try plan(json(extra: #""layer_quantize_config": [{"layer_type": null, "layer_name": "conv1", "quantizable_data_type": [], "overall_quantize_config": {}}, {"layer_type": "torch.nn.Linear", "layer_name": null, "quantizable_data_type": [], "overall_quantize_config": {}}]"#))
        XCTAssertEqual(float.quantizedLayers.map(\.name), ["conv2"])
        XCTAssertEqual(float.layer(named: "conv1")?.rule, #"layer_quantize_config[0] ("quantizable_data_type": [])"#)
        XCTAssertEqual(float.layer(named: "fc3")?.rule, #"layer_quantize_config[1] ("quantizable_data_type": [])"#)
        // A name the model lacks is a warning, as in the simple form.
        let unknownName = try plan(json(extra: #""layer_quantize_config": [{"layer_type": null, "layer_name": "ResNet::ResNet/Conv2d[conv1]/input.2", "quantizable_data_type": ["weights", "activation"], "overall_quantize_config": {}}]"#))
        XCTAssertEqual(unknownName.warnings.count, 1)
        XCTAssertTrue(unknownName.warnings[0].hasPrefix("layer_quantize_config[0]: no layer named"), unknownName.warnings[0])
    }

    /// The resolved plan written as JSON (`qat plan --json`, the checkpoint record) reads back as
    /// the same plan, the Vitis methods' settings included.
    func testResolvedPlanRoundTrips() throws {
        let resolved = try RetrainConfig.load(file: repositoryPath("Configs/vitis/plain-layers.json")).resolve(for: lenet)
        let text = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        XCTAssertTrue(text.contains(#""act_algo": "percentile""#) && text.contains(#""percentage": 99.99"#), text)
        XCTAssertTrue(text.contains(#""calib_statistic_method": "max""#), text)
        XCTAssertFalse(text.contains("bias_quantize"), "without bias quantization the record keeps its old keys")
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "plan.json")).resolve(for: lenet)
        XCTAssertEqual(reread.layers.map(\.quantizer), resolved.layers.map(\.quantizer))
        // Bias grids, DPU settings and the model input's own settings round-trip too.
        for file in ["default.json", "int_config.json", "layer_config.json"] {
            let resolved = try RetrainConfig.load(file: repositoryPath("Configs/vitis/" + file)).resolve(for: lenet)
            let text = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
            XCTAssertTrue(text.contains(#""bias_quantize": {"#), file)
            let reread = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "plan.json")).resolve(for: lenet)
            XCTAssertEqual(reread.layers.map(\.quantizer), resolved.layers.map(\.quantizer), file)
        }
    }

    // MARK: include_cle and include_bias_corr: the plan's PTQ transforms

    func testCLEAndBiasCorrectionSwitchesBecomeThePlansTransforms() throws {
        func transforms(_ header: String) throws -> Set<PTQTransform> {
            try RetrainConfig.parse(JSONObject.parse(Data(json(header: header).utf8), file: "v.json")).resolve(for: lenet).ptqTransforms
        }
        XCTAssertEqual(try transforms(header), [])
        XCTAssertEqual(try transforms(header.replacingOccurrences(of: #""include_cle": false"#, with: #""include_cle": true"#)),
                       [.crossLayerEqualization])
        XCTAssertEqual(try transforms(header.replacingOccurrences(of: #""include_bias_corr": false"#, with: #""include_bias_corr": true"#)),
                       [.biasCorrection])
        // Left out: the manual's default, true.
        let omitted = header.replacingOccurrences(of: #""include_cle": false, "#, with: "")
            .replacingOccurrences(of: #""include_bias_corr": false, "#, with: "")
        XCTAssertEqual(try transforms(omitted), [.crossLayerEqualization, .biasCorrection])
        assertError(json(header: header.replacingOccurrences(of: #""include_cle": false"#, with: #""include_cle": 1"#)),
                    keyPath: "include_cle", mentions: ["true or false"])
    }

    // MARK: Refusals, each naming its key path

    func testUnsupportedSettingsAreRefusedWithTheirKeyPath() {
        let notYet = "not supported yet"
        // keep_add_layer_accuracy runs (KeepAddFloatTests); on LeNet-5, which has no add, it is a warning.
        let keepAdds = header.replacingOccurrences(of: #""keep_add_layer_accuracy": false"#, with: #""keep_add_layer_accuracy": true"#)
        XCTAssertEqual(try? plan(json(header: keepAdds)).warnings,
                       ["keep_add_layer_accuracy: model lenet5 has no add layer; the key has no effect"])
        // target_device "DPU" refuses the methods its rules leave out (VitisDPUTests tests the rest).
        assertError(json(overall: overall("method", "\"entropy\""), header: header.replacingOccurrences(of: "\"CPU\"", with: "\"DPU\"")),
                    keyPath: "overall_quantize_config.method", mentions: ["entropy is not allowed with target_device \"DPU\"", "diffs or maxmin"])
        assertError(json(overall: overall("method", "\"percentile\""), header: header.replacingOccurrences(of: "\"target_device\": \"CPU\", ", with: "")),
                    keyPath: "overall_quantize_config.method", mentions: ["the manual's default when the key is left out", "diffs or maxmin"])
        assertError(json(overall: overall("round_mode", "\"nearest\"")), keyPath: "overall_quantize_config.round_mode",
                    mentions: ["unsupported value \"nearest\"", "\"half_even\", \"half_up\", \"half_down\", \"std_round\""])
        assertError(json(overall: overall("narrow_range", "1")), keyPath: "overall_quantize_config.narrow_range", mentions: ["expected true or false"])
        assertError(json(overall: overall("method", "\"diffs\"").replacingOccurrences(of: "\"symmetry\": true", with: "\"symmetry\": false"),
                         extra: #""tensor_quantize_config": {"weights": {"method": "maxmin", "symmetry": true}}"#),
                    keyPath: "overall_quantize_config.symmetry", mentions: ["method diffs supports symmetric ranges only"])
        assertError(json(overall: overall("method", "\"kl\"")), keyPath: "overall_quantize_config.method",
                    mentions: ["unsupported value \"kl\"", "\"maxmin\", \"percentile\", \"entropy\", \"mse\", \"diffs\""])
        // Left out: the manual's defaults, which qat runs (diffs for weights too: VitisDPUTests) …
        let defaults = try? plan(json(overall: #""datatype": "int""#)).layer(named: "conv2")?.quantizer
        XCTAssertEqual(defaults?.weightScaleMethod, .diffs)
        XCTAssertEqual(defaults?.calibration, CalibrationMethod(DiffsCalibrator()))
        // … except where they conflict with a method the file gives: the error says the default did it.
        assertError(json(overall: #""datatype": "int", "method": "percentile""#, extra: #""tensor_quantize_config": {"weights": {"method": "maxmin"}}"#),
                    keyPath: "overall_quantize_config.calib_statistic_method",
                    mentions: ["\"modal\" is not supported by method percentile", "the manual's default when the key is left out"])
        assertError(json(overall: overall("bit_width", "4")), keyPath: "overall_quantize_config.bit_width", mentions: ["weights are INT8"])
        assertError(json(extra: #""tensor_quantize_config": {"weights": {"method": "percentile", "calib_statistic_method": "modal"}}"#),
                    keyPath: "tensor_quantize_config.weights.calib_statistic_method", mentions: ["\"modal\" is not supported by method percentile"])
        assertError(json(extra: #""tensor_quantize_config": {"weights": {"symmetry": false}}"#),
                    keyPath: "tensor_quantize_config.weights.symmetry", mentions: [notYet, "symmetric"])
        assertError(json(extra: #""tensor_quantize_config": {"activation": {"per_channel": true}, "input": {"per_channel": true}}"#),
                    keyPath: "tensor_quantize_config.activation.per_channel", mentions: [notYet])
        // A bias entry needs "bias" in quantizable_data_type; a bias grid takes 8 or 16 bits, maxmin.
        assertError(json(extra: #""tensor_quantize_config": {"bias": {"bit_width": 16}}"#),
                    keyPath: "tensor_quantize_config.bias", mentions: ["has no effect", "leaves out \"bias\""])
        let withBias = header.replacingOccurrences(of: #"["input", "weights", "activation"]"#, with: #"["input", "weights", "bias", "activation"]"#)
        assertError(json(extra: #""tensor_quantize_config": {"bias": {"bit_width": 32}}"#, header: withBias),
                    keyPath: "tensor_quantize_config.bias.bit_width", mentions: ["32 is \(notYet) for biases: 8 or 16"])
        assertError(json(extra: #""tensor_quantize_config": {"bias": {"method": "mse"}}"#, header: withBias),
                    keyPath: "tensor_quantize_config.bias.method", mentions: ["mse is \(notYet) for biases", "maxmin"])
        assertError(json(extra: #""tensor_quantize_config": {"bias": {"per_channel": true}}"#, header: withBias),
                    keyPath: "tensor_quantize_config.bias.per_channel", mentions: [notYet, "one scale per bias"])
        assertError(json(header: header.replacingOccurrences(of: #"["input", "weights", "activation"]"#, with: #"["weights", "activation"]"#)),
                    keyPath: "quantizable_data_type", mentions: ["leaving out \"input\""])
        assertError(json(header: header.replacingOccurrences(of: #"["input", "weights", "activation"]"#, with: #"["input", "weight"]"#)),
                    keyPath: "quantizable_data_type[1]", mentions: ["unsupported value \"weight\""])
        // Per-channel weights on every layer reach fc1, a linear layer.
        assertError(json(extra: #""tensor_quantize_config": {"weights": {"per_channel": true}}"#), keyPath: "tensor_quantize_config.weights.per_channel",
                    mentions: ["per_channel true is not allowed on linear layer fc1", "layer_quantize_config"])
    }

    /// `convert_relu6_to_relu` rewrites the model before quantizing; `keep_first_last_layer_accuracy`
    /// keeps the first and last quantizable layers float, ahead of every other rule.
    func testReLU6ConversionAndKeepingTheFirstAndLastLayersFloat() throws {
        var relu6Net = lenet
        for index in relu6Net.layers.indices where relu6Net.layers[index].kind == .relu { relu6Net.layers[index].kind = .relu6 }
        let convert = try config(json(header: header.replacingOccurrences(of: #""convert_relu6_to_relu": false"#,
                                                                        with: #""convert_relu6_to_relu": true"#)))
        XCTAssertEqual(convert.graphRewrites, [.relu6ToReLU])
        XCTAssertEqual(convert.model(for: relu6Net), lenet, "every relu6 becomes a relu, nothing else changes")
        let converted = try convert.resolve(for: relu6Net)
        XCTAssertEqual(converted.rewrittenLayers, [.relu6ToReLU: ["relu1", "relu2", "relu3", "relu4"]])
        XCTAssertEqual(converted.layer(named: "relu1")?.kind, .relu)
        XCTAssertEqual(converted.layer(named: "relu1")?.rule, "convert_relu6_to_relu (was relu6)")
        XCTAssertEqual(try convert.resolve(for: convert.model(for: relu6Net)).layers, converted.layers.map {
            var layer = $0
            if layer.kind == .relu { layer.rule = "not quantizable (relu)" }
            return layer
        }, "a rewritten spec resolves to the same decisions")
        // Off (the manual's default): the model is left as it is.
        XCTAssertEqual(try config(json()).model(for: relu6Net), relu6Net)

        let keepHeader = header.replacingOccurrences(of: #""keep_first_last_layer_accuracy": false"#,
                                                     with: #""keep_first_last_layer_accuracy": true"#)
        let kept = try plan(json(header: keepHeader))
        XCTAssertEqual(kept.quantizedLayers.map(\.name), ["conv2", "fc1", "fc2"])
        XCTAssertEqual(kept.layer(named: "conv1")?.rule, "keep_first_last_layer_accuracy")
        XCTAssertEqual(kept.layer(named: "fc3")?.rule, "keep_first_last_layer_accuracy")
        // A layer configuration of a kept layer has no effect, and says so.
        let named = try plan(json(extra: #""layer_quantize_config": [{"layer_type": null, "layer_name": "fc3", "quantizable_data_type": ["weights", "activation"], "overall_quantize_config": {"bit_width": 8}}]"#, header: keepHeader))
        XCTAssertNil(named.layer(named: "fc3")?.quantizer)
        XCTAssertTrue(named.warnings.contains { $0.contains("fc3 is kept float by keep_first_last_layer_accuracy; the entry has no effect") },
                      "\(named.warnings)")
    }

    /// Both switches through calibrate, deploy and verify: the checkpoint records the rewritten model.
    func testConvertedAndKeptLayersDeployAndVerify() throws {
        let folder = try makeTemporaryFolder(self)
        var relu6Net = lenet
        for index in relu6Net.layers.indices where relu6Net.layers[index].kind == .relu { relu6Net.layers[index].kind = .relu6 }
        let specFile = folder + "/lenet5-relu6.json", configFile = folder + "/vitis.json"
        try relu6Net.jsonString().write(toFile: specFile, atomically: true, encoding: .utf8)
        try json(header: header.replacingOccurrences(of: ": false", with: ": true")
            .replacingOccurrences(of: #""keep_add_layer_accuracy": true"#, with: #""keep_add_layer_accuracy": false"#)
            .replacingOccurrences(of: #""include_cle": true"#, with: #""include_cle": false"#)
            .replacingOccurrences(of: #""include_bias_corr": true"#, with: #""include_bias_corr": false"#))
            .write(toFile: configFile, atomically: true, encoding: .utf8)
        let ptq = folder + "/ptq.h5", deployed = folder + "/ptq-int8.h5"
        let (status, log) = try qat(["calibrate", "--config", configFile, "--model", specFile,
                                     "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                     "--batch-num", "1", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("convert_relu6_to_relu: 4 layer(s) changed before quantizing: relu1, relu2, relu3, relu4"), log)
        XCTAssertTrue(log.contains("calibrated conv2, fc1, fc2 with MAXMIN"), log)
        let stored = try ModelSpec.parse(JSONObject.parse(Data(try CheckpointFile.read(from: ptq).modelSpecJSON.utf8), file: ptq))
        XCTAssertEqual(stored.layers.map(\.kind), lenet.layers.map(\.kind))
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }

    func testTheManualsConflictsAreRefused() {
        // maxmin takes modal on power-of-two positions (the DPU's pair), symmetric only.
        let modal = overall("calib_statistic_method", "\"modal\"")
        XCTAssertEqual(try plan(json(overall: modal)).layer(named: "conv2")?.quantizer?.calibration,
                       CalibrationMethod(MaxMinCalibrator(asymmetric: false, statistic: .modal)))
        assertError(json(overall: modal.replacingOccurrences(of: "\"symmetry\": true", with: "\"symmetry\": false"),
                         extra: #""tensor_quantize_config": {"weights": {"symmetry": true}}"#),
                    keyPath: "overall_quantize_config.calib_statistic_method", mentions: ["\"modal\" with method maxmin", "symmetric ranges only"])
        assertError(json(overall: overall("method", "\"percentile\"").replacingOccurrences(of: "\"max\"", with: "\"modal\""),
                         extra: #""tensor_quantize_config": {"weights": {"method": "maxmin"}}"#),
                    keyPath: "overall_quantize_config.calib_statistic_method", mentions: ["\"modal\" is not supported by method percentile"])
        let entropy = overall("method", "\"entropy\"").replacingOccurrences(of: "\"symmetry\": true", with: "\"symmetry\": false")
        assertError(json(overall: entropy, extra: #""tensor_quantize_config": {"weights": {"method": "maxmin", "symmetry": true}}"#),
                    keyPath: "overall_quantize_config.symmetry", mentions: ["method entropy supports symmetric ranges only"])
        // mse with modal is allowed by the manual.
        XCTAssertNoThrow(try plan(json(overall: overall("method", "\"mse\"").replacingOccurrences(of: "\"max\"", with: "\"modal\""),
                                       extra: #""tensor_quantize_config": {"weights": {"method": "maxmin", "calib_statistic_method": "max"}}"#)))
    }

    func testLayerConfigurationErrors() {
        func layers(_ entries: String) -> String { json(extra: "\"layer_quantize_config\": [\(entries)]") }
        let body = #""quantizable_data_type": ["weights", "activation"], "overall_quantize_config": {}"#
        assertError(layers(#"{"layer_type": "torch.nn.ReLU", "layer_name": null, \#(body)}"#),
                    keyPath: "layer_quantize_config[0].layer_type", mentions: ["\"torch.nn.ReLU\" is not supported yet"])
        assertError(layers(#"{"layer_type": null, "layer_name": null, \#(body)}"#),
                    keyPath: "layer_quantize_config[0].layer_type", mentions: ["needs a layer_type or a layer_name"])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", "layer_name": "conv1", \#(body)}"#),
                    keyPath: "layer_quantize_config[0].layer_name", mentions: ["not both"])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", "layer_name": null, \#(body)}, {"layer_type": "conv2d", \#(body)}"#),
                    keyPath: "layer_quantize_config[1].layer_type", mentions: ["already has a layer configuration (layer_quantize_config[0])"])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", "overall_quantize_config": {}}"#),
                    keyPath: "layer_quantize_config[0].quantizable_data_type", mentions: ["is required"])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", "quantizable_data_type": ["weights", "activation"]}"#),
                    keyPath: "layer_quantize_config[0].overall_quantize_config", mentions: ["is required"])
        // A layer configuration quantizes biases on its own, with its own bias settings.
        let biased = #"{"layer_type": "torch.nn.Conv2d", "quantizable_data_type": ["weights", "bias", "activation"], "overall_quantize_config": {}"#
        XCTAssertEqual(try plan(layers(biased + "}")).layer(named: "conv2")?.quantizer?.biasGrid, BiasGrid())
        XCTAssertNil(try plan(layers(biased + "}")).layer(named: "fc1")?.quantizer?.biasGrid, "the model configuration leaves out bias")
        assertError(layers(biased + #", "tensor_quantize_config": {"bias": {"method": "entropy"}}}"#),
                    keyPath: "layer_quantize_config[0].tensor_quantize_config.bias.method", mentions: ["entropy is not supported yet for biases"])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", \#(body), "tensor_quantize_config": {"activation": {"round_mode": "up"}}}"#),
                    keyPath: "layer_quantize_config[0].tensor_quantize_config.activation.round_mode", mentions: ["unsupported value \"up\""])
        assertError(layers(#"{"layer_type": "torch.nn.Conv2d", \#(body), "layer_kind": 1}"#),
                    keyPath: "layer_quantize_config[0].layer_kind", mentions: ["unknown key"])
        assertError(json(extra: #""quantize_config": {}"#), keyPath: "quantize_config", mentions: ["unknown key", "Vitis AI"])
        // One file holds one format.
        assertError(json(extra: #""activation_offset": true"#), keyPath: "convert_relu6_to_relu",
                    mentions: ["is a key of the Vitis AI vai_q_pytorch JSON", "AMCT PTQ config.json"])
    }

    // MARK: PTQ through deploy and verify

    func testCalibrateDeployVerifyWithEachMethod() throws {
        let folder = try makeTemporaryFolder(self)
        for method in ["maxmin", "percentile", "entropy", "mse", "diffs"] {
            let ptq = folder + "/\(method).h5", deployed = folder + "/\(method)-int8.h5"
            let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/plain-\(method).json",
                                         "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                         "--batch-num", "2", "--test-limit", "500"])
            XCTAssertEqual(status, 0, log)
            XCTAssertTrue(log.contains("read Vitis AI vai_q_pytorch JSON"), log)
            XCTAssertTrue(log.contains("calibrated conv1, conv2, fc1, fc2, fc3 with \(method.uppercased()) on 2 batch(es)"), log)
            let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
            XCTAssertEqual(deployStatus, 0, deployLog)
            let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
            XCTAssertEqual(verifyStatus, 0, verified)
            XCTAssertTrue(verified.contains("PASS"), "\(method): \(verified)")
        }
    }
}
