import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDebug
import QAT

/// AMCT's simple config in proto text read verbatim (issue 12 item 3): the manual's three
/// examples, the priority override_layer_configs > override_layer_types > common_config >
/// activation_offset on a hand-checked LeNet-5 plan, parse errors with line and column, each
/// unsupported semantic refused with its key path, and the front door telling it from JSON.
final class AMCTSimpleConfigTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func config(_ text: String) throws -> RetrainConfig {
        try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data(text.utf8), file: "quant.cfg"))
    }

    func plan(_ text: String) throws -> QuantizationPlan {
        try config(text).resolve(for: lenet)
    }

    /// The error `text` gives: its key path (nil: not checked) and a message that starts with the
    /// position and contains every one of `mentions`.
    func assertError(_ text: String, keyPath: String?, at position: String, mentions: [String] = [],
                     line: UInt = #line) {
        XCTAssertThrowsError(try plan(text), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("expected an InputError, got \(error)", line: line) }
            XCTAssertEqual(error.file, "quant.cfg", line: line)
            if let keyPath { XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line) }
            XCTAssertTrue(error.message.hasPrefix(position + ": "), "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
            XCTAssertFalse(error.description.contains("\n"), "one line", line: line)
        }
    }

    // MARK: The manual's examples (Configs/amct/simple-*.cfg)

    func testTheManualsExamples() throws {
        let shipped = try FileManager.default.contentsOfDirectory(atPath: repositoryPath("Configs/amct"))
            .filter { $0.hasSuffix(".cfg") }.sorted()
        XCTAssertEqual(shipped, ["simple-nuq-plain.cfg", "simple-nuq.cfg", "simple-uniform-plain.cfg", "simple-uniform.cfg",
                                 "simple-weight-only.cfg"],
                       "each is checked below")
        func refusal(_ file: String) -> InputError? {
            do {
                _ = try RetrainConfig.load(file: repositoryPath("Configs/amct/\(file)")).resolve(for: lenet)
                return nil
            } catch { return error as? InputError }
        }
        // The uniform example loads: its two tensor_quantize entries (the second renamed pool2) give
        // both max pools an input grid, the first with its own IFMR settings, the second with the
        // defaults and activation_offset's asymmetric.
        XCTAssertNil(refusal("simple-uniform.cfg"))
        let uniform = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform.cfg")).resolve(for: lenet)
        XCTAssertEqual(uniform.layers.filter { $0.tensorQuantizer != nil }.map(\.rule), ["tensor_quantize[0]", "tensor_quantize[1]"])
        XCTAssertEqual(uniform.layer(named: "pool2")?.tensorQuantizer?.calibration, CalibrationMethod(IFMRParameters(asymmetric: true)))
        XCTAssertEqual(try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform-plain.cfg")).resolve(for: lenet).layers.map(\.quantizer),
                       uniform.layers.map(\.quantizer), "the layers' quantizers are those of the file without tensor_quantize")
        // The weight-only example loads: every layer weight-only; conv1 and the "Gemm" layers
        // asymmetric (channel_wise true is allowed on linear layers that run in float).
        XCTAssertNil(refusal("simple-weight-only.cfg"))
        let weightOnly = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-weight-only.cfg")).resolve(for: lenet)
        XCTAssertEqual(weightOnly.quantizedLayers.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        XCTAssertTrue(weightOnly.quantizedLayers.allSatisfy { $0.quantizer!.weightCompressOnly && $0.quantizer!.channelWise })
        XCTAssertEqual(weightOnly.quantizedLayers.filter { $0.quantizer!.asymmetricWeights }.map(\.name), ["conv1", "fc1", "fc2", "fc3"])
        // The NUQ example loads, its tensor_quantize entries included.
        XCTAssertNil(refusal("simple-nuq.cfg"))
        let nuq = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-nuq.cfg")).resolve(for: lenet)
        XCTAssertEqual(nuq.layers.filter { $0.tensorQuantizer != nil }.map(\.name), ["pool1", "pool2"])
        // A proto-text entry naming a node that is not a max pool is an error at its key path.
        XCTAssertThrowsError(try plan("tensor_quantize { layer_name: \"fc1\" input_index: 0 }")) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "tensor_quantize.layer_name", "\(error)")
        }
        // Without them it loads: conv1 with 32 levels after one Lloyd pass, the others uniform.
        let nuqPlain = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-nuq-plain.cfg")).resolve(for: lenet)
        XCTAssertEqual(nuqPlain.layer(named: "conv1")?.quantizer?.nonUniform, NUQParameters(steps: 32, iterations: 1))
        XCTAssertEqual(nuqPlain.quantizedLayers.filter { $0.quantizer!.nonUniform != nil }.map(\.name), ["conv1"])

        // The uniform example without tensor_quantize loads. By hand: conv1 by its layer override
        // (per channel, symmetric [0.8, 1.2] step 0.02), fc1 and fc2 by "Gemm" (per tensor, the
        // same IFMR), conv2 skipped by type "Conv", fc3 by name; symmetric means fixed_min false.
        let plain = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform-plain.cfg"))
        XCTAssertEqual(plain.format, .amctSimpleProtoText)
        let resolved = try plain.resolve(for: lenet)
        XCTAssertEqual(resolved.quantizedLayers.map(\.name), ["conv1", "fc1", "fc2"])
        XCTAssertEqual(resolved.layers.map(\.rule), ["override_layer_configs.conv1", "not quantizable (relu)",
                                                     "not quantizable (maxpool2d)", "skip_layer_types",
                                                     "not quantizable (relu)", "not quantizable (maxpool2d)",
                                                     "not quantizable (flatten)", "override_layer_types.linear",
                                                     "not quantizable (relu)", "override_layer_types.linear",
                                                     "not quantizable (relu)", "skip_layers"])
        let narrow = CalibrationMethod(IFMRParameters(searchRangeStart: 0.8, searchRangeEnd: 1.2, searchStep: 0.02, asymmetric: false))
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer, QuantizerSettings(fixedMin: false, channelWise: true, calibration: narrow))
        for name in ["fc1", "fc2"] {
            XCTAssertEqual(resolved.layer(named: name)?.quantizer, QuantizerSettings(fixedMin: false, channelWise: false, calibration: narrow), name)
        }
        XCTAssertEqual(resolved.warnings, ["skip_fusion_layers[0]: conv1 has no batchnorm2d after it; the entry has no effect"])
        XCTAssertEqual(resolved.foldsBeforeCalibration, [])
    }

    // MARK: Priority

    /// All four levels on LeNet-5, each deciding some key of some layer (hand-checked).
    func testPriorityLayerOverTypeOverCommonOverActivationOffset() throws {
        let resolved = try plan("""
            activation_offset: true            # level 4: asymmetric, unless a level above says
            common_config {                    # level 3
              arq_quantize { channel_wise: false }
              ifmr_quantize { search_range_start: 0.6 search_range_end: 1.4 search_step: 0.01 }
            }
            override_layer_types {             # level 2
              layer_type: "Gemm"
              calibration_config { ifmr_quantize { max_percentile: 0.99999 asymmetric: false } }
            }
            override_layer_types {
              layer_type: "Conv"
              calibration_config { arq_quantize { channel_wise: true } ifmr_quantize { search_step: 0.05 } }
            }
            override_layer_configs {           # level 1
              layer_name: "fc2"
              calibration_config { ifmr_quantize { asymmetric: true search_step: 0.02 } }
            }
            override_layer_configs {
              layer_name: "conv2"
              calibration_config { arq_quantize { channel_wise: false } ifmr_quantize { asymmetric: false } }
            }
            """)
        func ifmr(step: Double, maxPercentile: Double = 0.999999, asymmetric: Bool) -> CalibrationMethod {
            CalibrationMethod(IFMRParameters(maxPercentile: maxPercentile, searchRangeStart: 0.6, searchRangeEnd: 1.4,
                                             searchStep: step, asymmetric: asymmetric))
        }
        // conv1: asymmetric from activation_offset, range from common, step and channel_wise from
        // "Conv"; its input (the image) can be negative, so fixed_min false.
        XCTAssertEqual(resolved.layer(named: "conv1")?.rule, "override_layer_types.conv2d")
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer,
                       QuantizerSettings(fixedMin: false, channelWise: true, calibration: ifmr(step: 0.05, asymmetric: true)))
        // conv2: symmetric and per tensor from its own entry, step 0.05 from "Conv"; symmetric is
        // AMCT's signed INT8 range, so fixed_min false although relu1 → pool1 feeds it.
        XCTAssertEqual(resolved.layer(named: "conv2")?.rule, "override_layer_configs.conv2")
        XCTAssertEqual(resolved.layer(named: "conv2")?.quantizer,
                       QuantizerSettings(fixedMin: false, channelWise: false, calibration: ifmr(step: 0.05, asymmetric: false)))
        // fc1, fc3: symmetric and max_percentile from "Gemm", step and per tensor from common.
        for name in ["fc1", "fc3"] {
            XCTAssertEqual(resolved.layer(named: name)?.rule, "override_layer_types.linear")
            XCTAssertEqual(resolved.layer(named: name)?.quantizer,
                           QuantizerSettings(fixedMin: false, channelWise: false,
                                             calibration: ifmr(step: 0.01, maxPercentile: 0.99999, asymmetric: false)), name)
        }
        // fc2: asymmetric and step from its entry over "Gemm", max_percentile from "Gemm"; an
        // asymmetric layer after a ReLU gets fixed_min true by the graph rule.
        XCTAssertEqual(resolved.layer(named: "fc2")?.rule, "override_layer_configs.fc2")
        XCTAssertEqual(resolved.layer(named: "fc2")?.quantizer,
                       QuantizerSettings(fixedMin: true, channelWise: false,
                                         calibration: ifmr(step: 0.02, maxPercentile: 0.99999, asymmetric: true)))
        XCTAssertEqual(resolved.warnings, [])

        // activation_offset false: conv1, where no level above gives asymmetric, turns symmetric.
        let symmetric = try plan("activation_offset: false\noverride_layer_types { layer_type: \"Gemm\" "
                                 + "calibration_config { ifmr_quantize { asymmetric: true } } }")
        XCTAssertEqual(symmetric.layer(named: "conv1")?.quantizer,
                       QuantizerSettings(fixedMin: false, channelWise: true, calibration: CalibrationMethod(IFMRParameters(asymmetric: false))))
        XCTAssertEqual(symmetric.layer(named: "fc1")?.quantizer,
                       QuantizerSettings(fixedMin: true, channelWise: false, calibration: CalibrationMethod(IFMRParameters(asymmetric: true))))
    }

    func testLayerTypesTakeONNXNamesAndOurs() throws {
        XCTAssertEqual(try plan(#"skip_layer_types: "conv2d""#).quantizedLayers.map(\.name), ["fc1", "fc2", "fc3"])
        XCTAssertEqual(try plan(#"skip_layer_types: "MatMul""#).quantizedLayers.map(\.name), ["conv1", "conv2"])
        XCTAssertEqual(try plan(#"skip_layer_types: ["Gemm"]"#).quantizedLayers.map(\.name), ["conv1", "conv2"])
        XCTAssertThrowsError(try plan(#"skip_layer_types: ["Conv", "Gemm"]"#)) { error in
            XCTAssertTrue("\(error)".contains("no layer is quantized"), "\(error)")
        }
        let onnx = try plan(#"skip_layer_types: "Conv" override_layer_types { layer_type: "linear" calibration_config {} }"#)
        XCTAssertEqual(onnx.quantizedLayers.map(\.name), ["fc1", "fc2", "fc3"])
        assertError(#"skip_layer_types: "Gemm" skip_layer_types: "MatMul""#, keyPath: "skip_layer_types[1]",
                    at: "line 1, column 26", mentions: ["MatMul names linear again"])
        assertError("override_layer_types { layer_type: \"Gemm\" calibration_config {} }\n"
                    + "override_layer_types { layer_type: \"MatMul\" calibration_config {} }",
                    keyPath: "override_layer_types[1].layer_type", at: "line 2, column 24",
                    mentions: ["an earlier override_layer_types entry configures already"])
        assertError(#"skip_layer_types: "Relu""#, keyPath: "skip_layer_types[0]", at: "line 1, column 1",
                    mentions: ["unknown layer type \"Relu\" (allowed: conv2d, linear, Conv, Gemm, MatMul)"])
        assertError(#"skip_layer_types: "relu""#, keyPath: "skip_layer_types[0]", at: "line 1, column 1",
                    mentions: ["layers of this type are never quantized: \"relu\""])
    }

    // MARK: Refusals and ranges

    func testUnsupportedSemanticsAreRefusedWithTheirKeyPath() {
        // joint_quant runs (JointQuantTests); a value that is not a bool is still an error at its line.
        assertError("version: 1\njoint_quant: 3", keyPath: "joint_quant", at: "line 2, column 1")
        // enable_auto_nuq runs (AutoNUQTests); its value is checked like every switch's.
        assertError("version: 1\nenable_auto_nuq: 2", keyPath: "enable_auto_nuq", at: "line 2, column 1", mentions: ["true or false"])
        XCTAssertEqual(try plan("enable_auto_nuq: true").autoNonUniform?.filter(\.isPicked).map(\.layer), ["fc1", "fc2", "fc3"])
        // NUQ and weight-only layers run (NonUniformWeightsTests); NUQ's ranges are checked.
        assertError("common_config { nuq_quantize { num_steps: 8 } }", keyPath: "common_config.nuq_quantize.num_steps",
                    at: "line 1, column 32", mentions: ["must be 16 or 32, got 8"])
        assertError("common_config { nuq_quantize { num_of_iteration: 6 } }", keyPath: "common_config.nuq_quantize.num_of_iteration",
                    at: "line 1, column 32", mentions: ["must be in 0...5, got 6"])
        // tensor_quantize runs on a max pool (TensorQuantizeTests); other nodes and missing inputs are errors at the entry.
        XCTAssertNoThrow(try plan("tensor_quantize { layer_name: \"pool1\" input_index: 0 }"))
        assertError("tensor_quantize { layer_name: \"fc1\" input_index: 0 }", keyPath: "tensor_quantize.layer_name", at: "line 1, column 1",
                    mentions: ["fc1 is a linear layer", "maxpool2d or an add only"])
        assertError("tensor_quantize { layer_name: \"pool1\" input_index: 2 }", keyPath: "tensor_quantize.input_index", at: "line 1, column 1",
                    mentions: ["2 is out of range"])
        assertError("tensor_quantize { layer_name: \"pool1\" input_index: 0 ifmr_quantize { dst_type: INT16 } }",
                    keyPath: "tensor_quantize.ifmr_quantize.dst_type", at: "line 1, column 70", mentions: ["INT16 is not supported"])
        assertError("tensor_quantize { layer_name: \"pool1\" }", keyPath: "tensor_quantize.input_index", at: "line 1, column 1",
                    mentions: ["is required"])
        assertError("version: 2", keyPath: "version", at: "line 1, column 1", mentions: ["unsupported version 2 (allowed: 1)"])
        // Accepted false values mean what AMCT's defaults mean.
        XCTAssertNoThrow(try plan("joint_quant: false enable_auto_nuq: false common_config { weight_compress_only: false "
                                  + "arq_quantize { asymmetric: false } }"))
    }

    func testIFMRRangesNameTheProtoField() throws {
        assertError("common_config {\n  ifmr_quantize {\n    search_range_start: 0.7\n  }\n}",
                    keyPath: "common_config.ifmr_quantize.search_range_start", at: "line 3, column 5",
                    mentions: ["given without search_range_end"])
        assertError("common_config { ifmr_quantize { search_range_start: 1.3 search_range_end: 0.7 } }",
                    keyPath: "common_config.ifmr_quantize.search_range_start", at: "line 1, column 33",
                    mentions: ["0 < search_range_start < search_range_end ≤ 100, got [1.3, 0.7]"])
        assertError("common_config { ifmr_quantize { max_percentile: 0.4 } }",
                    keyPath: "common_config.ifmr_quantize.max_percentile", at: "line 1, column 33", mentions: ["must be in (0.5, 1], got 0.4"])
        assertError("common_config { ifmr_quantize { search_step: -0.01 } }",
                    keyPath: "common_config.ifmr_quantize.search_step", at: "line 1, column 33", mentions: ["must be a finite number > 0"])
        assertError("common_config { ifmr_quantize { dst_type: INT4 } }",
                    keyPath: "common_config.ifmr_quantize.dst_type", at: "line 1, column 33", mentions: ["allowed: INT8, INT16"])
        let int16 = try plan("common_config { ifmr_quantize { dst_type: INT16 } }")
        XCTAssertEqual(int16.layer(named: "conv1")?.quantizer?.activationType, .int16)
        // A step wider than the range: the IFMR conflict, after the levels are combined.
        XCTAssertThrowsError(try plan("common_config { ifmr_quantize { search_range_start: 0.9 search_range_end: 1.1 search_step: 0.5 } }")) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "common_config.ifmr_quantize.search_step", "\(error)")
        }
        // channel_wise on a linear layer names the proto path.
        XCTAssertThrowsError(try plan("common_config { arq_quantize { channel_wise: true } }")) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "common_config.arq_quantize.channel_wise", "\(error)")
        }
    }

    // MARK: Parse errors

    func testParseErrorsGiveLineAndColumn() {
        assertError("version: 1\nskip_layers: \"fc3", keyPath: "", at: "line 2, column 18", mentions: ["unterminated string"])
        assertError("common_config {\n  arq_quantize { channel_wise: true }\n", keyPath: "", at: "line 3, column 1",
                    mentions: ["missing \"}\""])
        assertError("version 1", keyPath: "", at: "line 1, column 9", mentions: ["expected \":\" or \"{\" after field name version, got \"1\""])
        assertError("# comment\nversion: 1.2.3", keyPath: "", at: "line 2, column 10", mentions: ["malformed number 1.2.3"])
        assertError("skip_layers: \"a\\qb\"", keyPath: "", at: "line 1, column 16", mentions: ["unknown escape \\q"])
        assertError("version: 1\n  @", keyPath: "", at: "line 2, column 3", mentions: ["expected a field name, got \"@\""])
        assertError("common_config }", keyPath: "", at: "line 1, column 15", mentions: ["got \"}\""])
        assertError("skip_layers: [\"a\" \"b\"", keyPath: "", at: "line 1, column 22", mentions: ["expected \",\" or \"]\" in a list"])
        assertError("version:", keyPath: "", at: "line 1, column 9", mentions: ["expected a value, got the end of the file"])
        // Values of the wrong type, unknown and repeated fields: the field's position and key path.
        assertError("activation_offset: \"yes\"", keyPath: "activation_offset", at: "line 1, column 1",
                    mentions: ["expected true or false, got the string \"yes\""])
        assertError("do_fusion { }", keyPath: "do_fusion", at: "line 1, column 1", mentions: ["expected true or false, got a message"])
        assertError("skip_layers: fc3", keyPath: "skip_layers", at: "line 1, column 1", mentions: ["expected a quoted string, got fc3"])
        assertError("common_config {\n  arq_quantize { chanel_wise: true }\n}", keyPath: "common_config.arq_quantize.chanel_wise",
                    at: "line 2, column 18", mentions: ["unknown field (allowed here: channel_wise, asymmetric)"])
        assertError("batch_num: 2", keyPath: "batch_num", at: "line 1, column 1", mentions: ["unknown field (allowed here: activation_offset"])
        assertError("version: 1\nversion: 1", keyPath: "version", at: "line 2, column 1", mentions: ["given twice (first on line 1)"])
        assertError("common_config { ifmr_quantize { search_step: inf } }", keyPath: "common_config.ifmr_quantize.search_step",
                    at: "line 1, column 33", mentions: ["expected a finite number, got inf"])
        assertError("override_layer_configs { layer_name: \"conv1\" }", keyPath: "override_layer_configs.calibration_config",
                    at: "line 1, column 1", mentions: ["is required"])
        // Hostile nesting is an error, not a stack overflow.
        let deep = String(repeating: "common_config { ", count: 100_000)
        assertError(deep, keyPath: "", at: "line 1, column 1615", mentions: ["nested more than 100 deep"])
    }

    /// The grammar's other spellings: `<…>` messages, `;` and `,` separators, lists, escapes,
    /// adjacent strings, and the bool spellings protobuf accepts.
    func testTextFormatSpellings() throws {
        let message = try ProtoTextMessage.parse(Data("""
            a: 'x\\ty' "z\\101\\x42";  b < c: -0x10, d: 1e-3f > b { c: 0 d: .5 }
            e: [1, 2] f: True g: f
            """.utf8), file: "t.cfg")
        XCTAssertEqual(try message.string("a"), "x\tyzAB")
        let bs = try message.messages("b")
        XCTAssertEqual(bs.map(\.path), ["b[0]", "b[1]"])
        XCTAssertEqual(try bs[0].int("c", range: -100...100), -16)
        XCTAssertEqual(try bs[0].double("d"), 0.001)
        XCTAssertEqual(try bs[1].double("d"), 0.5)
        XCTAssertEqual(message.all("e").count, 2)
        XCTAssertEqual(try message.bool("f"), true)
        XCTAssertEqual(try message.bool("g"), false)
    }

    // MARK: Front door

    func testTheFrontDoorTellsProtoTextFromJSON() throws {
        XCTAssertTrue(ConfigFormat.isProtoText(Data("# c\nversion: 1".utf8)))
        XCTAssertTrue(ConfigFormat.isProtoText(Data("\u{FEFF}version: 1".utf8)))
        XCTAssertFalse(ConfigFormat.isProtoText(Data("\n  {\"version\": 1}".utf8)))
        XCTAssertFalse(ConfigFormat.isProtoText(Data(" \n".utf8)), "an empty file is left to the JSON reader")
        // By content, not extension: a JSON file named .cfg is read as JSON.
        let folder = try makeTemporaryFolder(self)
        try Data(#"{"conv1": {"retrain_enable": true}}"#.utf8).write(to: URL(fileURLWithPath: folder + "/x.cfg"))
        XCTAssertEqual(try RetrainConfig.load(file: folder + "/x.cfg").format, .amctRetrain)
        try Data("skip_layers: \"fc3\"".utf8).write(to: URL(fileURLWithPath: folder + "/y.json"))
        XCTAssertEqual(try RetrainConfig.load(file: folder + "/y.json").format, .amctSimpleProtoText)
    }

    func testCommandsSayTheyReadProtoText() throws {
        let (status, log) = try qat(["plan", "--config", "Configs/amct/simple-uniform-plain.cfg"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.hasPrefix("read AMCT simple config (proto text) Configs/amct/simple-uniform-plain.cfg\n"), log)
        let (jsonStatus, json) = try qat(["plan", "--config", "Configs/amct/simple-uniform-plain.cfg", "--json"])
        XCTAssertEqual(jsonStatus, 0, json)
        // The resolved plan as JSON reads back to the same plan.
        let root = try JSONObject.parse(Data(json.split(separator: "\n", maxSplits: 1)[1].utf8), file: "plan.json")
        let written = try RetrainConfig.parse(root).resolve(for: lenet)
        let original = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform-plain.cfg")).resolve(for: lenet)
        // The written plan states every fixed_min, so only fixedMinIsDefault may differ.
        XCTAssertEqual(written.layers.map(\.quantizer), original.layers.map { layer in
            layer.quantizer.map { var settings = $0; settings.fixedMinIsDefault = false; return settings }
        })
        let (checkStatus, checked) = try qat(["check", "model", "--config", "Configs/amct/simple-uniform-plain.cfg"])
        XCTAssertTrue(checked.hasPrefix("read AMCT simple config (proto text)"), "\(checkStatus): \(checked)")
        let (refusedStatus, refused) = try qat(["plan", "--config", "Configs/amct/simple-nuq.cfg", "--model", "Configs/models/resnet-tiny.json"])
        XCTAssertEqual(refusedStatus, 1)
        XCTAssertEqual(refused.split(separator: "\n").count, 1, refused)
        XCTAssertTrue(refused.contains("tensor_quantize[1].layer_name: line 67, column 1: pool2 is a avgpool2d layer"), refused)
        // eval and verify read only a data section, which proto text has not.
        let (evalStatus, evaluated) = try qat(["eval", "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"),
                                               "--config", "Configs/amct/simple-uniform-plain.cfg"])
        XCTAssertEqual(evalStatus, 1)
        XCTAssertTrue(evaluated.hasSuffix("is an AMCT simple config (proto text), which has no data section: give --data, "
                                          + "or a JSON run config with a data section\n"), evaluated)
    }

    /// `qat sensitivity --write-config` on a proto-text config writes JSON that resolves to the
    /// same settings (the resolved plan: JSON cannot state the signed symmetric rule).
    func testSensitivityWritesTheSamePlanAsJSON() throws {
        let config = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform-plain.cfg"))
        let plan = try config.resolve(for: lenet)
        let analysis = SensitivityAnalysis(spec: lenet, config: config, plan: plan, boundsDescription: "") { _ in
            try Model(spec: self.lenet)
        }
        let fixed = analysis.fixedConfig(applying: .skip, to: ["fc1"], base: nil, runFolder: nil)
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(fixed.jsonText().utf8), file: "fixed.json")).resolve(for: lenet)
        XCTAssertEqual(reread.quantizedLayers.map(\.name), ["conv1", "fc2"])
        for name in ["conv1", "fc2"] {
            var expected = try XCTUnwrap(plan.layer(named: name)?.quantizer)
            expected.fixedMinIsDefault = false
            XCTAssertEqual(reread.layer(named: name)?.quantizer, expected, name)
        }
    }

    func testCalibratedFromProtoTextDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5", deployed = folder + "/int8.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/amct/simple-uniform-plain.cfg", "--checkpoint",
                                     repositoryPath("Checkpoints/lenet5-float.h5"), "--batch-num", "2", "--test-limit", "500",
                                     "--output", ptq])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.hasPrefix("read AMCT simple config (proto text) Configs/amct/simple-uniform-plain.cfg\n"), log)
        XCTAssertTrue(log.contains("calibrated conv1, fc1, fc2 with IFMR on 2 batch(es)"), log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }
}
