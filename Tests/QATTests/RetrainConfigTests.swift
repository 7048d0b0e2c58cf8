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

/// The retrain config: parsing, validation, resolution into a plan, the default config and
/// the shipped example files.
final class RetrainConfigTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func repoFile(_ relativePath: String) -> String { repoRoot.appendingPathComponent(relativePath).path }

    static let lenet = try! ModelSpec.load(file: repoFile("Configs/models/lenet5.json"))
    static let resnetTiny = try! ModelSpec.load(file: repoFile("Configs/models/resnet-tiny.json"))

    // MARK: Helpers

    private func parse(_ json: String) throws -> RetrainConfig {
        try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json"))
    }

    private func plan(_ json: String, model: ModelSpec = RetrainConfigTests.lenet) throws -> QuantizationPlan {
        try parse(json).resolve(for: model)
    }

    /// Parsing and resolving `json` must throw an InputError at `keyPath` whose message holds
    /// every string in `mentions`.
    private func assertError(_ json: String, keyPath: String, mentions: [String], model: ModelSpec = RetrainConfigTests.lenet,
                             file: StaticString = #filePath, line: UInt = #line) {
        do {
            let plan = try plan(json, model: model)
            XCTFail("expected an error at \(keyPath), got a plan with \(plan.quantizedLayers.count) quantized layers", file: file, line: line)
        } catch let error as InputError {
            XCTAssertEqual(error.file, "test.json", file: file, line: line)
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", file: file, line: line)
            for text in mentions {
                XCTAssertTrue(error.message.contains(text), "\"\(error.message)\" does not mention \"\(text)\"", file: file, line: line)
            }
        } catch {
            XCTFail("expected an InputError, got \(error)", file: file, line: line)
        }
    }

    /// A small non-sequential model: conv a → relu r → conv b, conv c reads r, conv d reads the
    /// input, linear e reads a flatten after relu r2.
    private static let graph: ModelSpec = {
        func layer(_ name: String, _ kind: LayerKind, _ inputs: [String] = []) -> LayerSpec {
            LayerSpec(name: name, kind: kind, inputs: inputs)
        }
        // Only the wiring matters here; the shapes need not fit.
        let conv = LayerKind.conv2d(.init(inputChannels: 1, outputChannels: 1, kernelSize: 1))
        let fc = LayerKind.linear(.init(inputFeatures: 1, outputFeatures: 1))
        return ModelSpec(name: "graph", inputShape: [1, 8, 8], layers: [
            layer("a", conv), layer("r", .relu), layer("b", conv), layer("c", conv, ["r"]),
            layer("d", conv, ["input"]), layer("r2", .relu), layer("flat", .flatten), layer("e", fc),
            layer("r3", .relu), layer("pool", .maxpool2d(.init(kernelSize: 2)), ["r3"]), layer("f", fc, ["r3"]),
        ])
    }()

    private let entry = #"{"retrain_data_config": {"algo": "ulq_quantize"}, "retrain_weight_config": {"algo": "arq_retrain"}}"#

    // MARK: AMCT form

    func testAMCTFormResolvesToExpectedPlan() throws {
        let plan = try plan("""
            {"version": 1, "batch_num": 3,
             "conv1": {"retrain_enable": true,
                       "retrain_data_config": {"algo": "ulq_quantize", "clip_max": 3.0, "clip_min": -3.0, "dst_type": "INT16"},
                       "retrain_weight_config": {"algo": "arq_retrain", "channel_wise": false, "dst_type": "INT8"}},
             "conv2": {},
             "fc2": {"retrain_data_config": {"fixed_min": false}, "retrain_weight_config": {"algo": "ulq_retrain"}},
             "fc3": {"retrain_enable": false}}
            """)
        XCTAssertEqual(plan.modelName, "lenet5")
        XCTAssertEqual(plan.batchCount, 3)
        XCTAssertEqual(plan.warnings, [])
        XCTAssertEqual(plan.layers.map(\.name), Self.lenet.layers.map(\.name))
        XCTAssertEqual(plan.layers.map(\.rule), [
            "layer entry conv1", "not quantizable (relu)", "not quantizable (maxpool2d)", "layer entry conv2",
            "not quantizable (relu)", "not quantizable (maxpool2d)", "not quantizable (flatten)", "not listed",
            "not quantizable (relu)", "layer entry fc2", "not quantizable (relu)", "layer entry fc3 (retrain_enable false)",
        ])
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["conv1", "conv2", "fc2"])
        XCTAssertEqual(plan.layer(named: "conv1")?.quantizer, QuantizerSettings(
            clipMax: 3, clipMin: -3, fixedMin: false, activationType: .int16, channelWise: false))
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer, QuantizerSettings(fixedMin: true, channelWise: true))
        XCTAssertEqual(plan.layer(named: "fc2")?.quantizer, QuantizerSettings(
            fixedMin: false, fixedMinIsDefault: false, weightAlgorithm: .ulqRetrain, channelWise: false))
        XCTAssertEqual(plan.layer(named: "conv1")?.quantizer?.activationType.bitWidth, 16)
        XCTAssertTrue(plan.layer(named: "conv2")!.quantizer!.needsCalibration)
    }

    func testRuntimeSectionsAreKeptAndAreNotLayers() throws {
        let config = try parse("""
            {"model": {"spec": "Configs/models/lenet5.json"}, "data": {"path": "/tmp"}, "train": {"epochs": 1},
             "checkpoint": {"dir": "x"}, "calibration": {}, "conv1": {}}
            """)
        XCTAssertEqual(config.runtimeSections.keys.sorted(), ["checkpoint", "data", "model", "train"])
        XCTAssertEqual(config.runtimeSections["model"]?["spec"], .string("Configs/models/lenet5.json"))
        XCTAssertEqual(config.calibration, CalibrationConfig())
        XCTAssertEqual(config.version, 1)
        XCTAssertEqual(config.batchCount, 1)
        guard case .perLayer(let entries) = config.rules else { return XCTFail("expected the AMCT form") }
        XCTAssertEqual(Array(entries.keys), ["conv1"])
        XCTAssertEqual(try config.resolve(for: Self.lenet).quantizedLayers.map(\.name), ["conv1"])
    }

    // MARK: Simple form

    func testSimpleFormResolvesToExpectedPlan() throws {
        let plan = try plan("""
            {"batch_num": 2,
             "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT8"},
             "retrain_weight_config": {"algo": "arq_retrain"},
             "skip_layers": ["fc3"],
             "override_layer_configs": {"conv1": {"retrain_data_config": {"clip_max": 2.5, "clip_min": -1.5}}}}
            """)
        XCTAssertEqual(plan.batchCount, 2)
        XCTAssertEqual(plan.warnings, [])
        XCTAssertEqual(plan.layers.filter(\.kind.isQuantizable).map(\.rule),
                       ["override_layer_configs.conv1", "global", "global", "global", "skip_layers"])
        XCTAssertEqual(plan.layer(named: "conv1")?.quantizer, QuantizerSettings(clipMax: 2.5, clipMin: -1.5, fixedMin: false, channelWise: true))
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer, QuantizerSettings(fixedMin: true, channelWise: true))
        XCTAssertEqual(plan.layer(named: "fc1")?.quantizer, QuantizerSettings(fixedMin: true, channelWise: false))
        XCTAssertEqual(plan.layer(named: "fc2")?.quantizer, QuantizerSettings(fixedMin: true, channelWise: false))
        XCTAssertFalse(plan.layer(named: "fc3")!.isQuantized)
    }

    func testSimpleFormWithOnlySkipListsUsesDefaults() throws {
        let plan = try plan(#"{"skip_layer_types": ["conv2d"]}"#)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["fc1", "fc2", "fc3"])
        XCTAssertEqual(plan.layer(named: "conv1")?.rule, "skip_layer_types")
        XCTAssertEqual(plan.layer(named: "fc1")?.quantizer, QuantizerSettings(fixedMin: true, channelWise: false))
    }

    func testPriorityLayerOverTypeOverGlobal() throws {
        let plan = try plan("""
            {"retrain_data_config": {"clip_max": 1, "clip_min": -1, "dst_type": "INT16"},
             "override_layer_types": {"linear": {"retrain_data_config": {"clip_max": 2, "clip_min": -2},
                                                 "retrain_weight_config": {"algo": "ulq_retrain"}}},
             "override_layer_configs": {"fc3": {"retrain_data_config": {"clip_max": 3, "clip_min": -3, "fixed_min": false}}}}
            """)
        XCTAssertEqual(plan.layer(named: "conv1")?.rule, "global")
        XCTAssertEqual(plan.layer(named: "conv1")?.quantizer,
                       QuantizerSettings(clipMax: 1, clipMin: -1, fixedMin: false, activationType: .int16, channelWise: true))
        XCTAssertEqual(plan.layer(named: "fc1")?.rule, "override_layer_types.linear")
        XCTAssertEqual(plan.layer(named: "fc1")?.quantizer, QuantizerSettings(
            clipMax: 2, clipMin: -2, fixedMin: true, activationType: .int16, weightAlgorithm: .ulqRetrain, channelWise: false))
        // fc3: clip bounds and fixed_min from its own entry, algo from the type, width from global.
        XCTAssertEqual(plan.layer(named: "fc3")?.rule, "override_layer_configs.fc3")
        XCTAssertEqual(plan.layer(named: "fc3")?.quantizer, QuantizerSettings(
            clipMax: 3, clipMin: -3, fixedMin: false, fixedMinIsDefault: false, activationType: .int16,
            weightAlgorithm: .ulqRetrain, channelWise: false))
    }

    func testLayerOverrideBeatsSkippedType() throws {
        let plan = try plan(#"{"skip_layer_types": ["linear"], "skip_layers": ["conv2"], "override_layer_configs": {"fc3": {}}}"#)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["conv1", "fc3"])
        XCTAssertEqual(plan.layers.filter(\.kind.isQuantizable).map(\.rule),
                       ["global", "skip_layers", "skip_layer_types", "skip_layer_types", "override_layer_configs.fc3"])
    }

    func testSimpleFormWarningsForEntriesThatMatchNothing() throws {
        let plan = try plan("""
            {"skip_layers": ["conv9", "relu1"],
             "override_layer_configs": {"fc9": {}}}
            """)
        XCTAssertEqual(plan.quantizedLayers.count, 5)
        XCTAssertEqual(plan.warnings.count, 3)
        XCTAssertTrue(plan.warnings[0].hasPrefix("skip_layers[0]: no layer named \"conv9\""), plan.warnings[0])
        XCTAssertTrue(plan.warnings[0].contains("conv1, conv2, fc1"), plan.warnings[0])
        XCTAssertTrue(plan.warnings[1].hasPrefix("skip_layers[1]: relu1 is a relu layer"), plan.warnings[1])
        XCTAssertTrue(plan.warnings[2].hasPrefix("override_layer_configs.fc9: no layer named \"fc9\""), plan.warnings[2])

        let mlp = ModelSpec(name: "mlp", inputShape: [1, 2, 2], layers: [
            LayerSpec(name: "flat", kind: .flatten), LayerSpec(name: "fc", kind: .linear(.init(inputFeatures: 4, outputFeatures: 2)))])
        let typePlan = try self.plan(#"{"override_layer_types": {"conv2d": {}}}"#, model: mlp)
        XCTAssertEqual(typePlan.warnings, ["override_layer_types.conv2d: model mlp has no conv2d layer; the entry has no effect"])
        let skipPlan = try self.plan(#"{"skip_layer_types": ["conv2d"]}"#, model: mlp)
        XCTAssertEqual(skipPlan.warnings, ["skip_layer_types[0]: model mlp has no conv2d layer; the entry has no effect"])
    }

    func testClipMinWithFixedMinIsAWarning() throws {
        let plan = try plan(#"{"fc2": {"retrain_data_config": {"clip_max": 4, "clip_min": -1}}}"#)
        XCTAssertEqual(plan.layer(named: "fc2")?.quantizer?.fixedMin, true)
        XCTAssertEqual(plan.warnings, ["fc2: clip_min -1.0 is ignored because fixed_min is true (the lower bound stays 0)"])
    }

    // MARK: fixed_min default

    func testFixedMinDefaultFollowsTheProducerThroughPoolAndFlatten() throws {
        let lenetPlan = try plan(createDefaultConfig(for: Self.lenet))
        // conv1 reads the image; conv2 reads relu1 through a maxpool and fc1 reads relu2 through
        // maxpool and flatten, so they are non-negative like fc2 and fc3, which read a relu directly.
        XCTAssertEqual(lenetPlan.quantizedLayers.map { $0.quantizer!.fixedMin }, [false, true, true, true, true])
        XCTAssertTrue(lenetPlan.quantizedLayers.allSatisfy { $0.quantizer!.fixedMinIsDefault })

        // Non-sequential: `inputs` decides, not the previous line of the spec.
        let graphPlan = try plan(createDefaultConfig(for: Self.graph), model: Self.graph)
        let fixedMin = Dictionary(uniqueKeysWithValues: graphPlan.quantizedLayers.map { ($0.name, $0.quantizer!.fixedMin) })
        XCTAssertEqual(fixedMin, ["a": false, "b": true, "c": true, "d": false, "e": true, "f": true])

        let explicit = try plan(#"{"conv1": {"retrain_data_config": {"fixed_min": true}}, "fc2": {"retrain_data_config": {"fixed_min": false}}}"#)
        XCTAssertEqual(explicit.layer(named: "conv1")?.quantizer?.fixedMin, true)
        XCTAssertEqual(explicit.layer(named: "fc2")?.quantizer?.fixedMin, false)
        XCTAssertEqual(explicit.layer(named: "fc2")?.quantizer?.fixedMinIsDefault, false)
    }

    func testFixedMinDefaultOnResNetTiny() throws {
        let plan = try plan(createDefaultConfig(for: Self.resnetTiny), model: Self.resnetTiny)
        let fixedMin = Dictionary(uniqueKeysWithValues: plan.quantizedLayers.map { ($0.name, $0.quantizer!.fixedMin) })
        XCTAssertEqual(fixedMin, ["stem": false, "block1_conv1": true, "block1_conv2": true, "conv2": true, "fc": true])
    }

    // MARK: Errors: structure and types

    func testUnknownKeysAtEveryLevel() {
        assertError(#"{"conv1": {"retrain_enabled": true}}"#, keyPath: "conv1.retrain_enabled",
                    mentions: ["unknown key", "retrain_enable", "retrain_data_config", "retrain_weight_config"])
        assertError(#"{"conv1": {"retrain_data_config": {"algo": "ulq_quantize", "clip": 1}}}"#,
                    keyPath: "conv1.retrain_data_config.clip", mentions: ["unknown key", "clip_max", "fixed_min", "dst_type"])
        assertError(#"{"conv1": {"retrain_weight_config": {"channelwise": true}}}"#,
                    keyPath: "conv1.retrain_weight_config.channelwise", mentions: ["unknown key", "channel_wise"])
        assertError(#"{"retrain_weight_config": {"algo": "arq_retrain", "bits": 8}}"#,
                    keyPath: "retrain_weight_config.bits", mentions: ["unknown key"])
        assertError(#"{"skip_layers": [], "override_layer_types": {"linear": {"retrain_enable": false}}}"#,
                    keyPath: "override_layer_types.linear.retrain_enable", mentions: ["unknown key", "retrain_data_config"])
        assertError(#"{"override_layer_configs": {"fc1": {"retrain_weight_config": {"x": 1}}}}"#,
                    keyPath: "override_layer_configs.fc1.retrain_weight_config.x", mentions: ["unknown key"])
    }

    func testWrongTypes() {
        assertError(#"{"conv1": {"retrain_enable": "yes"}}"#, keyPath: "conv1.retrain_enable", mentions: ["expected true or false"])
        assertError(#"{"conv1": {"retrain_data_config": {"clip_max": "3", "clip_min": -3}}}"#,
                    keyPath: "conv1.retrain_data_config.clip_max", mentions: ["expected a number"])
        assertError(#"{"conv1": {"retrain_data_config": {"fixed_min": 1}}}"#,
                    keyPath: "conv1.retrain_data_config.fixed_min", mentions: ["expected true or false"])
        assertError(#"{"conv1": {"retrain_weight_config": {"algo": 3}}}"#,
                    keyPath: "conv1.retrain_weight_config.algo", mentions: ["expected a string"])
        assertError(#"{"conv1": {"retrain_data_config": []}}"#, keyPath: "conv1.retrain_data_config", mentions: ["expected an object"])
        assertError(#"{"conv1": true}"#, keyPath: "conv1", mentions: ["expected a layer entry object", "batch_num"])
        assertError(#"{"version": "1", "conv1": {}}"#, keyPath: "version", mentions: ["expected a number"])
        assertError(#"{"batch_num": 1.5, "conv1": {}}"#, keyPath: "batch_num", mentions: ["expected an integer"])
        assertError(#"{"model": "lenet5.json", "conv1": {}}"#, keyPath: "model", mentions: ["expected an object"])
        assertError(#"{"skip_layers": "fc3"}"#, keyPath: "skip_layers", mentions: ["expected an array of strings"])
        assertError(#"{"skip_layers": [3]}"#, keyPath: "skip_layers[0]", mentions: ["expected a string"])
        assertError(#"{"override_layer_configs": {"fc3": 1}}"#, keyPath: "override_layer_configs.fc3", mentions: ["expected an object"])
        assertError(#"{"override_layer_types": []}"#, keyPath: "override_layer_types", mentions: ["expected an object"])
    }

    func testVersionAndBatchNum() {
        assertError(#"{"version": 2, "conv1": {}}"#, keyPath: "version", mentions: ["unsupported version 2", "allowed: 1"])
        assertError(#"{"batch_num": 0, "conv1": {}}"#, keyPath: "batch_num", mentions: ["must be > 0", "got 0"])
        assertError(#"{"batch_num": -4, "skip_layers": []}"#, keyPath: "batch_num", mentions: ["must be > 0"])
    }

    // MARK: Errors: values

    func testClipBoundSigns() {
        for bad in ["0", "-1", "0.0"] {
            assertError(#"{"conv1": {"retrain_data_config": {"clip_max": \#(bad), "clip_min": -1}}}"#,
                        keyPath: "conv1.retrain_data_config.clip_max", mentions: ["must be > 0"])
        }
        for bad in ["0", "2"] {
            assertError(#"{"conv1": {"retrain_data_config": {"clip_max": 1, "clip_min": \#(bad)}}}"#,
                        keyPath: "conv1.retrain_data_config.clip_min", mentions: ["must be < 0"])
        }
        assertError(#"{"conv1": {"retrain_data_config": {"clip_max": 1e300, "clip_min": -1}}}"#,
                    keyPath: "conv1.retrain_data_config.clip_max", mentions: ["finite"])
    }

    func testOnlyOneClipBound() {
        assertError(#"{"conv1": {"retrain_data_config": {"clip_max": 3}}}"#,
                    keyPath: "conv1.retrain_data_config.clip_max", mentions: ["without clip_min", "IFMR"])
        assertError(#"{"override_layer_types": {"conv2d": {"retrain_data_config": {"clip_min": -3}}}}"#,
                    keyPath: "override_layer_types.conv2d.retrain_data_config.clip_min", mentions: ["without clip_max"])
    }

    func testUnknownAlgorithmsAndTypes() {
        assertError(#"{"conv1": {"retrain_data_config": {"algo": "ifmr"}}}"#,
                    keyPath: "conv1.retrain_data_config.algo", mentions: ["\"ifmr\"", "allowed: \"ulq_quantize\""])
        assertError(#"{"conv1": {"retrain_weight_config": {"algo": "arq"}}}"#,
                    keyPath: "conv1.retrain_weight_config.algo", mentions: ["allowed: \"arq_retrain\", \"ulq_retrain\""])
        assertError(#"{"conv1": {"retrain_data_config": {"dst_type": "INT4"}}}"#,
                    keyPath: "conv1.retrain_data_config.dst_type", mentions: ["\"INT4\"", "allowed: \"INT8\", \"INT16\""])
        assertError(#"{"conv1": {"retrain_weight_config": {"dst_type": "INT16"}}}"#,
                    keyPath: "conv1.retrain_weight_config.dst_type", mentions: ["allowed: \"INT8\""])
        assertError(#"{"skip_layer_types": ["Conv2D"]}"#, keyPath: "skip_layer_types[0]",
                    mentions: ["unknown layer type \"Conv2D\"", "allowed: conv2d, linear"])
        assertError(#"{"override_layer_types": {"relu": {}}}"#, keyPath: "override_layer_types.relu",
                    mentions: ["never quantized", "allowed: conv2d, linear"])
    }

    func testChannelWiseOnLinear() {
        assertError(#"{"fc1": {"retrain_weight_config": {"channel_wise": true}}}"#,
                    keyPath: "fc1.retrain_weight_config.channel_wise", mentions: ["linear layer fc1", "allowed: false"])
        // From the global config: the message says how to fix it.
        assertError(#"{"retrain_weight_config": {"channel_wise": true}}"#,
                    keyPath: "retrain_weight_config.channel_wise", mentions: ["linear layer fc1", "override_layer_types.linear"])
        assertError(#"{"override_layer_configs": {"fc3": {"retrain_weight_config": {"channel_wise": true}}}}"#,
                    keyPath: "override_layer_configs.fc3.retrain_weight_config.channel_wise", mentions: ["linear layer fc3"])
        // Fine when linear layers are overridden or skipped, or the layer is disabled.
        XCTAssertNoThrow(try plan(#"{"retrain_weight_config": {"channel_wise": true}, "override_layer_types": {"linear": {"retrain_weight_config": {"channel_wise": false}}}}"#))
        XCTAssertNoThrow(try plan(#"{"retrain_weight_config": {"channel_wise": true}, "skip_layer_types": ["linear"]}"#))
        XCTAssertNoThrow(try plan(#"{"conv1": {}, "fc1": {"retrain_enable": false, "retrain_weight_config": {"channel_wise": true}}}"#))
    }

    // MARK: Errors: against the model

    func testLayerNotInModel() {
        assertError(#"{"conv1": {}, "inference/Conv2D": {}}"#, keyPath: "inference/Conv2D",
                    mentions: ["no layer named \"inference/Conv2D\"", "lenet5", "conv1, conv2, fc1, fc2, fc3"])
        // A misspelt top-level key ends up here too, which names the problem well enough.
        assertError(#"{"batchnum": {}, "conv1": {}}"#, keyPath: "batchnum", mentions: ["no layer named \"batchnum\""])
    }

    func testEntryOnNonQuantizableLayer() {
        assertError(#"{"conv1": {}, "relu1": {"retrain_enable": false}}"#, keyPath: "relu1",
                    mentions: ["relu1 is a relu layer", "conv2d, linear"])
        assertError(#"{"override_layer_configs": {"pool1": {}}}"#, keyPath: "override_layer_configs.pool1",
                    mentions: ["pool1 is a maxpool2d layer"])
    }

    func testAllLayersDisabled() {
        assertError("{}", keyPath: "", mentions: ["no layer is quantized", "conv1, conv2, fc1, fc2, fc3"])
        assertError(#"{"conv1": {"retrain_enable": false}, "fc1": {"retrain_enable": false}}"#, keyPath: "",
                    mentions: ["no layer is quantized"])
        assertError(#"{"skip_layer_types": ["conv2d", "linear"]}"#, keyPath: "", mentions: ["no layer is quantized"])
        assertError(#"{"skip_layers": ["conv1", "conv2", "fc1", "fc2", "fc3"]}"#, keyPath: "", mentions: ["no layer is quantized"])
    }

    func testFormsCannotBeMixed() {
        assertError(#"{"skip_layers": ["fc3"], "conv1": {}}"#, keyPath: "conv1",
                    mentions: ["cannot be mixed with the simple form", "override_layer_configs"])
    }

    func testContradictorySimpleRules() {
        assertError(#"{"skip_layers": ["fc3"], "override_layer_configs": {"fc3": {}}}"#,
                    keyPath: "override_layer_configs.fc3", mentions: ["also in skip_layers"])
        assertError(#"{"skip_layer_types": ["linear"], "override_layer_types": {"linear": {}}}"#,
                    keyPath: "override_layer_types.linear", mentions: ["also in skip_layer_types"])
    }

    // MARK: Default config

    func testDefaultConfigRoundTrip() throws {
        for model in [Self.lenet, Self.resnetTiny, Self.graph] {
            let text = createDefaultConfig(for: model)
            let config = try parse(text)
            XCTAssertEqual(config.version, 1)
            XCTAssertEqual(config.batchCount, 1)
            let plan = try config.resolve(for: model)
            let quantizable = model.layers.filter(\.kind.isQuantizable)
            XCTAssertEqual(plan.quantizedLayers.map(\.name), quantizable.map(\.name))
            for layer in plan.quantizedLayers {
                let q = layer.quantizer!
                XCTAssertEqual(layer.rule, "layer entry \(layer.name)")
                XCTAssertEqual(q.channelWise, layer.kind.layerType == .conv2d, layer.name)
                XCTAssertEqual(q.activationAlgorithm, .ulqQuantize)
                XCTAssertEqual(q.weightAlgorithm, .arqRetrain)
                XCTAssertEqual(q.activationType, .int8)
                XCTAssertEqual(q.weightType, .int8)
                XCTAssertTrue(q.needsCalibration)
                XCTAssertTrue(q.fixedMinIsDefault)
            }
            XCTAssertEqual(plan.warnings, [])
        }
    }

    func testDefaultConfigTextIsStableAndInModelOrder() throws {
        let text = createDefaultConfig(for: Self.lenet)
        XCTAssertEqual(text, createDefaultConfig(for: Self.lenet))
        XCTAssertTrue(text.hasPrefix("{\n  \"version\": 1,\n  \"batch_num\": 1,\n  \"conv1\": {\n    \"retrain_enable\": true,\n"), text)
        let positions = ["conv1", "conv2", "fc1", "fc2", "fc3"].map { text.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(positions, positions.sorted())
        XCTAssertTrue(text.hasSuffix("}\n"))
    }

    func testDefaultConfigEscapesLayerNames() throws {
        let name = "odd \"name\" \\ with\ttab"
        let model = ModelSpec(name: "odd", inputShape: [1, 4, 4],
                              layers: [LayerSpec(name: name, kind: .conv2d(.init(inputChannels: 1, outputChannels: 1, kernelSize: 1)))])
        let plan = try plan(createDefaultConfig(for: model), model: model)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), [name])
    }

    // MARK: Table

    func testTableShowsEveryLayerAndTheWarnings() throws {
        let plan = try plan("""
            {"skip_layers": ["fc3", "nope"],
             "override_layer_configs": {"conv1": {"retrain_data_config": {"clip_max": 2, "clip_min": -2, "dst_type": "INT16"}}}}
            """)
        let table = plan.table()
        let lines = table.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertTrue(lines[0].contains("model lenet5"), lines[0])
        XCTAssertTrue(lines[0].contains("4 of 12 layers quantized"), lines[0])
        let header = lines.firstIndex { $0.hasPrefix("layer ") }!
        XCTAssertTrue(lines[header].contains("quantized"))
        let rows = Array(lines[(header + 2)...].prefix(12))
        XCTAssertEqual(rows.map { String($0.split(separator: " ")[0]) }, Self.lenet.layers.map(\.name))
        // Fixed width: every row starts its columns at the same offsets as the header.
        let ruleColumn = lines[header].range(of: "rule")!.lowerBound.utf16Offset(in: lines[header])
        XCTAssertTrue(rows.allSatisfy { $0.count > ruleColumn })
        let conv1 = rows[0], relu1 = rows[1], conv2 = rows[3], fc2 = rows[9], fc3 = rows[11]
        for text in ["conv2d", "yes", "INT16", "ulq_quantize, clip [-2.0, 2.0]", "false (default)",
                     "arq_retrain, channel_wise", "override_layer_configs.conv1"] {
            XCTAssertTrue(conv1.contains(text), "\(text) not in \(conv1)")
        }
        for text in ["relu", "no", "float", "not quantizable (relu)"] { XCTAssertTrue(relu1.contains(text), relu1) }
        XCTAssertTrue(conv2.contains("IFMR") && conv2.contains("INT8") && conv2.hasSuffix("global"), conv2)
        XCTAssertTrue(fc2.contains("true (relu input)") && fc2.contains("per-tensor"), fc2)
        XCTAssertTrue(fc3.hasSuffix("skip_layers"), fc3)
        XCTAssertTrue(table.contains("\nwarnings:\n  - skip_layers[1]: no layer named \"nope\""), table)
    }

    // MARK: Shipped files

    func testShippedAMCTExamplesResolveAgainstLeNet() throws {
        let folder = Self.repoFile("Configs/amct")
        // Every shipped JSON example loads, the AMCT PTQ manual's two literal examples included
        // (tensor_quantize runs; AMCTPTQConfigTests.testTheManualsExamples checks their plans).
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".json") }.sorted()
        XCTAssertTrue(files.contains("ptq-ifmr.json") && files.contains("ptq-hfmg.json"), "\(files)")
        XCTAssertGreaterThanOrEqual(files.count, 4)
        for name in files {
            let plan = try RetrainConfig.load(file: "\(folder)/\(name)").resolve(for: Self.lenet)
            XCTAssertFalse(plan.quantizedLayers.isEmpty, name)
        }
        let manual = try RetrainConfig.load(file: "\(folder)/manual-tuning-clip.json").resolve(for: Self.lenet)
        XCTAssertEqual(manual.quantizedLayers.map(\.name), ["conv1", "conv2"])
        XCTAssertEqual(manual.layer(named: "conv2")?.quantizer, QuantizerSettings(clipMax: 3, clipMin: -3, fixedMin: true, channelWise: true))
        // conv2's input is non-negative (relu1 → pool1), so the manual's clip_min -3 has no effect.
        XCTAssertEqual(manual.warnings, ["conv2: clip_min -3.0 is ignored because fixed_min is true (the lower bound stays 0)"])
    }

    func testShippedRetrainConfigIsTheDefaultWithSections() throws {
        let config = try RetrainConfig.load(file: Self.repoFile("Configs/retrain.json"))
        XCTAssertEqual(config.runtimeSections.keys.sorted(), ["checkpoint", "data", "model", "train"])
        XCTAssertEqual(config.runtimeSections["model"]?["spec"], .string("Configs/models/lenet5.json"))
        var plan = try config.resolve(for: Self.lenet)
        var expected = try parse(createDefaultConfig(for: Self.lenet)).resolve(for: Self.lenet)
        plan.configFile = ""
        expected.configFile = ""
        XCTAssertEqual(plan, expected)
    }
}
