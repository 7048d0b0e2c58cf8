import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
import QAT

/// AMCT's post-training quantization config.json read verbatim (issue 12 item 2): the manual's
/// examples, how each key maps onto the plan, each range violation and each unsupported
/// semantic as one error naming the key path, and the front door that tells formats apart.
final class AMCTPTQConfigTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let resnet = try! ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))

    func config(_ json: String) throws -> RetrainConfig {
        try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "ptq.json"))
    }

    func plan(_ json: String, model: ModelSpec? = nil) throws -> QuantizationPlan {
        try config(json).resolve(for: model ?? lenet)
    }

    func assertError(_ json: String, model: ModelSpec? = nil, keyPath: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try plan(json, model: model), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("expected an InputError, got \(error)", line: line) }
            XCTAssertEqual(error.file, "ptq.json", line: line)
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
        }
    }

    /// A layer entry with these activation_quant_params (and INT8 per-channel weights).
    func layer(_ name: String, _ activation: String, weights: String = #""num_bits": 8, "wts_algo": "arq_quantize", "channel_wise": true"#) -> String {
        #""\#(name)": {"quant_enable": true, "activation_quant_params": {\#(activation)}, "weight_quant_params": {\#(weights)}}"#
    }

    // MARK: The manual's examples (Configs/amct/ptq-*.json)

    func testTheManualsExamples() throws {
        let shipped = try FileManager.default.contentsOfDirectory(atPath: repositoryPath("Configs/amct"))
            .filter { $0.hasPrefix("ptq-") }.sorted()
        XCTAssertEqual(shipped, ["ptq-dmq.json", "ptq-hfmg.json", "ptq-ifmr.json", "ptq-plain.json"], "each is checked below")
        // Both literal examples load: pool1's input gets its own grid (tensor_quantize), symmetric
        // IFMR or HFMG as the entry says; their layers are conv2 (and fc1), which DMQ can run on.
        let ifmr = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-ifmr.json")).resolve(for: lenet)
        XCTAssertEqual(ifmr.layer(named: "pool1")?.rule, "tensor_quantize[0]")
        XCTAssertEqual(ifmr.layer(named: "pool1")?.tensorQuantizer?.calibration,
                       CalibrationMethod(IFMRParameters(asymmetric: false)))
        XCTAssertEqual(ifmr.quantizedLayers.map(\.name), ["conv2", "fc1"])
        XCTAssertEqual(ifmr.layers.filter { $0.tensorQuantizer != nil }.map(\.name), ["pool1"])
        let hfmg = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-hfmg.json")).resolve(for: lenet)
        XCTAssertEqual(hfmg.layer(named: "pool1")?.tensorQuantizer?.calibration.name, "hfmg")
        XCTAssertEqual(hfmg.quantizedLayers.map(\.name), ["conv2"])

        // The IFMR example without those two keys loads: two symmetric IFMR layers.
        let plain = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-plain.json"))
        XCTAssertEqual(plain.format, .amctPTQ)
        XCTAssertEqual(plain.fusion, ConvBNFusion(isEnabled: true, skippedLayers: []))
        let resolved = try plain.resolve(for: lenet)
        XCTAssertEqual(resolved.batchCount, 2)
        XCTAssertEqual(resolved.quantizedLayers.map(\.name), ["conv1", "conv2"])
        let conv1 = try XCTUnwrap(resolved.layer(named: "conv1")?.quantizer)
        let conv2 = try XCTUnwrap(resolved.layer(named: "conv2")?.quantizer)
        XCTAssertEqual(conv1.calibration, CalibrationMethod(IFMRParameters(asymmetric: false)))
        XCTAssertEqual(conv2.calibration, conv1.calibration)
        XCTAssertEqual([conv1.fixedMin, conv2.fixedMin], [false, false], "symmetric: zero point 0, as AMCT's symmetric INT8")
        XCTAssertEqual([conv1.fixedMinIsDefault, conv2.fixedMinIsDefault], [false, false])
        XCTAssertEqual([conv1.channelWise, conv2.channelWise], [true, false])
        XCTAssertEqual([conv1.activationType, conv1.weightType], [.int8, .int8])
        XCTAssertEqual(conv1.weightAlgorithm, .arqRetrain)
        XCTAssertEqual(resolved.layer(named: "fc1")?.rule, "not listed")
        XCTAssertEqual(resolved.warnings, [])

        // The IFMR example without tensor_quantize, its layers named conv2 and fc1 (conv1 reads the
        // image, so DMQ has no layer to divide its scales out of): DMQ with strength 0.5 on both.
        let dmq = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-dmq.json")).resolve(for: lenet)
        XCTAssertEqual(dmq.quantizedLayers.map(\.name), ["conv2", "fc1"])
        XCTAssertEqual(dmq.quantizedLayers.map(\.quantizer?.dmqStrength), [0.5, 0.5])
        XCTAssertEqual(dmq.ptqTransforms, [.dmq])
        XCTAssertEqual(resolved.ptqTransforms, [], "no dmq_balancer_param, no DMQ")
    }

    // MARK: Mapping onto the plan

    func testAsymmetricOverridesActivationOffset() throws {
        let resolved = try plan("""
            {"activation_offset": false,
             \(layer("conv1", #""num_bits": 8, "asymmetric": true"#)),
             \(layer("conv2", #""num_bits": 8"#)),
             \(layer("fc1", #""num_bits": 8, "act_algo": "hfmg", "num_of_bins": 2048, "asymmetric": true"#,
                     weights: #""num_bits": 8, "channel_wise": false"#))}
            """)
        let conv1 = try XCTUnwrap(resolved.layer(named: "conv1")?.quantizer)
        XCTAssertEqual(conv1.calibration, CalibrationMethod(IFMRParameters(asymmetric: true)))
        XCTAssertTrue(conv1.fixedMinIsDefault, "asymmetric: the graph rule decides fixed_min")
        XCTAssertFalse(conv1.fixedMin, "conv1 reads the image")
        let conv2 = try XCTUnwrap(resolved.layer(named: "conv2")?.quantizer)
        XCTAssertEqual(conv2.calibration, CalibrationMethod(IFMRParameters(asymmetric: false)), "activation_offset false")
        XCTAssertFalse(conv2.fixedMin)
        XCTAssertFalse(conv2.fixedMinIsDefault)
        let fc1 = try XCTUnwrap(resolved.layer(named: "fc1")?.quantizer)
        XCTAssertEqual(fc1.calibration, CalibrationMethod(HFMGParameters(binCount: 2048)))
        XCTAssertTrue(fc1.fixedMin, "relu input, asymmetric: the graph rule")

        // activation_offset true (also its default) makes IFMR asymmetric where asymmetric is not given.
        for header in [#""activation_offset": true,"#, ""] {
            let offset = try plan("{\(header) \(layer("conv1", #""num_bits": 8, "search_step": 0.02"#))}")
            XCTAssertEqual(offset.layer(named: "conv1")?.quantizer?.calibration,
                           CalibrationMethod(IFMRParameters(searchStep: 0.02, asymmetric: true)))
        }
        // HFMG symmetric (asymmetric false, or activation_offset false): zero point 0, fixed_min false.
        let symmetricHFMG = try plan("""
            {"activation_offset": false, \(layer("conv2", #""num_bits": 8, "act_algo": "hfmg""#)),
             \(layer("fc1", #""num_bits": 8, "act_algo": "hfmg", "asymmetric": false"#,
                     weights: #""num_bits": 8, "channel_wise": false"#))}
            """)
        for name in ["conv2", "fc1"] {
            let q = try XCTUnwrap(symmetricHFMG.layer(named: name)?.quantizer)
            XCTAssertEqual(q.calibration, CalibrationMethod(HFMGParameters(binCount: 4096, asymmetric: false)), name)
            XCTAssertFalse(q.fixedMin, name)
        }
        // An entry without activation_quant_params: INT8 IFMR as activation_offset says.
        let bare = try plan(#"{"activation_offset": false, "conv1": {"quant_enable": true}}"#)
        XCTAssertEqual(bare.layer(named: "conv1")?.quantizer?.calibration, CalibrationMethod(IFMRParameters(asymmetric: false)))
        XCTAssertEqual(bare.layer(named: "conv1")?.quantizer?.fixedMin, false)
    }

    func testWidthsEnableAndOmittedLayers() throws {
        let resolved = try plan("""
            {\(layer("conv1", #""num_bits": 16"#)), "conv2": {"quant_enable": false},
             \(layer("fc3", #""num_bits": 8"#, weights: #""num_bits": 8"#))}
            """)
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer?.activationType, .int16)
        XCTAssertEqual(resolved.layer(named: "conv1")?.quantizer?.weightType, .int8)
        XCTAssertNil(resolved.layer(named: "conv2")?.quantizer)
        XCTAssertEqual(resolved.layer(named: "conv2")?.rule, "layer entry conv2 (quant_enable false)")
        XCTAssertEqual(resolved.layer(named: "fc1")?.rule, "not listed")
        XCTAssertEqual(resolved.layer(named: "fc3")?.quantizer?.channelWise, false, "linear default: per tensor")
    }

    /// The resolved plan written as JSON (`qat plan --json`) reads back as the same plan; a
    /// non-default `asymmetric` is recorded, the default one is not (old records keep their bytes).
    func testResolvedPlanRoundTrips() throws {
        let resolved = try plan("""
            {"batch_num": 3, \(layer("conv1", #""num_bits": 8, "asymmetric": false"#)),
             \(layer("conv2", #""num_bits": 8, "act_algo": "hfmg", "num_of_bins": 1024"#)),
             \(layer("fc1", #""num_bits": 8, "max_percentile": 0.9999"#, weights: #""num_bits": 8, "channel_wise": false"#))}
            """)
        let text = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "plan.json"))
        XCTAssertEqual(reread.format, .amctRetrain)
        // The record writes every fixed_min explicitly, so only "who decided it" may differ.
        func decisions(_ plan: QuantizationPlan) -> [LayerPlan] {
            plan.layers.map { layer in
                var layer = layer
                layer.quantizer?.fixedMinIsDefault = false
                return layer
            }
        }
        XCTAssertEqual(decisions(try reread.resolve(for: lenet)), decisions(resolved))
        XCTAssertEqual(text.components(separatedBy: "\"asymmetric\": true").count, 2, "fc1 only: \(text)")
        XCTAssertFalse(text.contains("\"asymmetric\": false"), text)
        let retrain = try RetrainConfig.load(file: repositoryPath("Configs/retrain.json")).resolve(for: lenet)
        XCTAssertFalse(retrain.explicitConfig().jsonText().contains("asymmetric"))
    }

    // MARK: Ranges: one error naming the key path

    func testRangeViolations() {
        let ifmr = #""num_bits": 8, "act_algo": "ifmr""#
        assertError(#"{"version": 2}"#, keyPath: "version", mentions: ["allowed: 1"])
        assertError("{\"batch_num\": 0, \(layer("conv1", ifmr))}", keyPath: "batch_num", mentions: ["must be > 0"])
        assertError("{\(layer("conv1", ifmr + #", "max_percentile": 0.5"#))}",
                    keyPath: "conv1.activation_quant_params.max_percentile", mentions: ["(0.5, 1]"])
        assertError("{\(layer("conv1", ifmr + #", "min_percentile": 1.000001"#))}",
                    keyPath: "conv1.activation_quant_params.min_percentile", mentions: ["(0.5, 1]"])
        assertError("{\(layer("conv1", ifmr + #", "search_range": [1.3, 0.7]"#))}",
                    keyPath: "conv1.activation_quant_params.search_range", mentions: ["0 < start < end"])
        assertError("{\(layer("conv1", ifmr + #", "search_range": [0, 1.3]"#))}",
                    keyPath: "conv1.activation_quant_params.search_range", mentions: ["0 < start < end"])
        assertError("{\(layer("conv1", ifmr + #", "search_range": [0.7, 1.3], "search_step": 0.61"#))}",
                    keyPath: "conv1.activation_quant_params.search_step", mentions: ["wider than search_range"])
        assertError("{\(layer("conv1", ifmr + #", "search_step": 0"#))}",
                    keyPath: "conv1.activation_quant_params.search_step", mentions: ["> 0"])
        assertError("{\(layer("conv1", #""num_bits": 8, "act_algo": "hfmg", "num_of_bins": 1000"#))}",
                    keyPath: "conv1.activation_quant_params.num_of_bins", mentions: ["1024, 2048, 4096, 8192"])
        assertError("{\(layer("conv1", #""num_bits": 8, "act_algo": "kl""#))}",
                    keyPath: "conv1.activation_quant_params.act_algo", mentions: ["\"ifmr\", \"hfmg\", \"maxmin\""])
        assertError("{\(layer("conv1", #""num_bits": 8, "num_of_bins": 2048, "search_step": 0.02"#))}",
                    keyPath: "conv1.activation_quant_params.num_of_bins", mentions: ["one layer's settings belong to one method"])
        assertError("{\(layer("conv1", #""num_bits": 4"#))}", keyPath: "conv1.activation_quant_params.num_bits", mentions: ["8 or 16"])
        assertError("{\(layer("conv1", #""act_algo": "ifmr""#))}", keyPath: "conv1.activation_quant_params.num_bits", mentions: ["required"])
        assertError("{\(layer("conv1", #""num_bits": 8, "asymmetric": 1"#))}",
                    keyPath: "conv1.activation_quant_params.asymmetric", mentions: ["true or false"])
        assertError("{\(layer("conv1", #""num_bits": 8, "clip_max": 3"#))}",
                    keyPath: "conv1.activation_quant_params.clip_max", mentions: ["unknown key", "num_bits", "act_algo"])
        assertError("{\(layer("conv1", ifmr, weights: #""num_bits": 7"#))}", keyPath: "conv1.weight_quant_params.num_bits", mentions: ["8 or 16"])
        assertError("{\(layer("conv1", ifmr, weights: #""channel_wise": true"#))}", keyPath: "conv1.weight_quant_params.num_bits", mentions: ["required"])
        assertError("{\(layer("conv1", ifmr, weights: #""num_bits": 8, "wts_algo": "arq_retrain""#))}",
                    keyPath: "conv1.weight_quant_params.wts_algo", mentions: ["\"arq_quantize\""])
        assertError("{\(layer("fc1", ifmr))}", keyPath: "fc1.weight_quant_params.channel_wise", mentions: ["linear", "allowed: false"])
        assertError(#"{"conv1": {"quant_enable": "yes"}}"#, keyPath: "conv1.quant_enable", mentions: ["true or false"])
        assertError(#"{"conv1": {"dmq_balancer_param": 0.9}}"#, keyPath: "conv1.dmq_balancer_param", mentions: ["[0.2, 0.8]", "0.9"])
        assertError(#"{"conv1": {"dmq_balancer_param": 0.1}}"#, keyPath: "conv1.dmq_balancer_param", mentions: ["[0.2, 0.8]"])
        assertError(#"{"conv1": {"quant_enable": true, "retrain_enable": true}}"#, keyPath: "conv1.retrain_enable",
                    mentions: ["AMCT retrain config.json", "conv1.quant_enable", "one format"])
        assertError(#"{"activation_offset": true, "conv9": {"quant_enable": true}}"#, keyPath: "conv9", mentions: ["no layer named \"conv9\""])
        assertError(#"{"activation_offset": true, "relu1": {"quant_enable": true}}"#, keyPath: "relu1", mentions: ["cannot be quantized"])
        assertError(#"{"tensor_quantize": [{"input_index": 0}]}"#, keyPath: "tensor_quantize[0].layer_name", mentions: ["required"])
        assertError(#"{"tensor_quantize": [{"layer_name": "pool1"}]}"#, keyPath: "tensor_quantize[0].input_index", mentions: ["required"])
        assertError(#"{"tensor_quantize": [{"layer_name": "pool1", "input_index": -1}]}"#,
                    keyPath: "tensor_quantize[0].input_index", mentions: ["unsigned 32-bit"])
        assertError(#"{"tensor_quantize": [{"layer_name": "pool1", "input_index": 0, "activation_quant_params": {"num_bits": 8, "search_step": -1}}]}"#,
                    keyPath: "tensor_quantize[0].activation_quant_params.search_step", mentions: ["> 0"])
        assertError(#"{"skip_fusion_layers": "conv1", "conv1": {}}"#, keyPath: "skip_fusion_layers", mentions: ["array of strings"])
    }

    // MARK: Unsupported semantics: refused, never ignored

    func testUnsupportedSemanticsAreRefused() {
        // joint_quant runs (JointQuantTests): on a model without an eltwise add it changes nothing.
        XCTAssertEqual(try plan(#"{"joint_quant": true, "conv1": {}}"#).layers.compactMap(\.tensorQuantizer), [])
        // DMQ runs (DMQTests); on a layer reading the image there is no layer to take its scales.
        assertError(#"{"conv1": {"dmq_balancer_param": 0.5}}"#, keyPath: "conv1.dmq_balancer_param", mentions: ["DMQ", "model input"])
        // tensor_quantize runs on a max pool and on one input of an add (TensorQuantizeTests,
        // TensorQuantizeAddTests); any other node, or an input it does not have, is an error naming the key path.
        assertError(#"{"tensor_quantize": [{"layer_name": "pool9", "input_index": 0}], "conv1": {}}"#,
                    keyPath: "tensor_quantize[0].layer_name", mentions: ["no layer named \"pool9\"", "max pools: pool1, pool2; adds: none"])
        assertError(#"{"tensor_quantize": [{"layer_name": "relu1", "input_index": 0}], "conv1": {}}"#,
                    keyPath: "tensor_quantize[0].layer_name", mentions: ["relu1 is a relu layer", "maxpool2d or an add only"])
        assertError(#"{"tensor_quantize": [{"layer_name": "pool1", "input_index": 1}], "conv1": {}}"#,
                    keyPath: "tensor_quantize[0].input_index", mentions: ["1 is out of range: pool1 has 1 input(s)"])
        assertError(#"{"tensor_quantize": [{"layer_name": "pool1", "input_index": 0, "activation_quant_params": {"num_bits": 16}}], "conv1": {}}"#,
                    keyPath: "tensor_quantize[0].activation_quant_params.num_bits", mentions: ["16 is not supported"])
        // An add: input 0 or 1, not under joint_quant, one entry per add.
        assertError(#"{"tensor_quantize": [{"layer_name": "block1_add", "input_index": 2}], "stem": {}}"#, model: resnet,
                    keyPath: "tensor_quantize[0].input_index", mentions: ["2 is out of range: block1_add has 2 input(s) (index 0 to 1)"])
        assertError(#"{"joint_quant": true, "tensor_quantize": [{"layer_name": "block1_add", "input_index": 1}], "stem": {}}"#, model: resnet,
                    keyPath: "tensor_quantize[0].layer_name", mentions: ["block1_add is under joint_quant: true", "set joint_quant false"])
        assertError(#"{"tensor_quantize": [{"layer_name": "block1_add", "input_index": 0}, {"layer_name": "block1_add", "input_index": 1}], "stem": {}}"#,
                    model: resnet, keyPath: "tensor_quantize[1].layer_name", mentions: ["named by an earlier entry already"])
        assertError("{\(layer("conv1", #""num_bits": 8"#, weights: #""num_bits": 16"#))}",
                    keyPath: "conv1.weight_quant_params.num_bits", mentions: ["16-bit weights are not supported yet"])
        // A PTQ config without layer entries quantizes nothing: an error, not float training.
        XCTAssertTrue(try config(#"{"activation_offset": true}"#).hasQuantizationRules)
        assertError(#"{"activation_offset": true}"#, keyPath: "", mentions: ["no layer is quantized"])
        // What is supported stays accepted: joint_quant false, an empty tensor_quantize.
        XCTAssertNoThrow(try plan(#"{"joint_quant": false, "tensor_quantize": [], "conv1": {}}"#))
    }

    /// do_fusion folds a BatchNorm into the conv before it: with per-channel weight scales that
    /// is what qat's deployment does anyway; with one scale per tensor it is refused.
    func testConvBNFusion() throws {
        let perChannel = layer("stem", #""num_bits": 8"#)
        let perTensor = layer("stem", #""num_bits": 8"#, weights: #""num_bits": 8, "channel_wise": false"#)
        XCTAssertNoThrow(try plan("{\"do_fusion\": true, \(perChannel)}", model: resnet))
        assertError("{\(perTensor)}", model: resnet, keyPath: "do_fusion",
                    mentions: ["stem_bn", "stem", "per-tensor", "not supported yet", "defaults to true"])
        XCTAssertNoThrow(try plan("{\"do_fusion\": false, \(perTensor)}", model: resnet))
        XCTAssertNoThrow(try plan("{\"skip_fusion_layers\": [\"stem\"], \(perTensor)}", model: resnet))
        assertError("{\"skip_fusion_layers\": [\"stem\", \"stem9\"], \(perChannel)}", model: resnet,
                    keyPath: "skip_fusion_layers[1]", mentions: ["no layer named \"stem9\""])
        assertError("{\"skip_fusion_layers\": [\"stem_bn\"], \(perChannel)}", model: resnet,
                    keyPath: "skip_fusion_layers[0]", mentions: ["batchnorm2d layer", "conv2d followed by a batchnorm2d"])
        // Folding first gives qat's INT8 weights only when every γ is positive: checked on the weights.
        let folded = try plan("{\(perChannel)}", model: resnet)
        XCTAssertEqual(folded.foldsBeforeCalibration, [ConvBNPair(conv: "stem", batchNorm: "stem_bn")])
        XCTAssertEqual(try plan("{\"skip_fusion_layers\": [\"stem\"], \(perChannel)}", model: resnet).foldsBeforeCalibration, [])
        XCTAssertEqual(try plan("{\"do_fusion\": false, \(perChannel)}", model: resnet).foldsBeforeCalibration, [])
        let model = try Model(spec: resnet, seed: 1)
        XCTAssertNoThrow(try model.checkFoldsBeforeCalibration(folded))
        let gamma = try XCTUnwrap(model.layer(named: "stem_bn") as? BatchNorm2DLayer).gamma
        gamma.value.storage[3] = -0.5
        XCTAssertThrowsError(try model.checkFoldsBeforeCalibration(folded)) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "do_fusion")
            XCTAssertTrue("\(error)".contains("γ = -0.5 ≤ 0 in channel 3") && "\(error)".contains("not supported yet"), "\(error)")
        }
        let lenetPlan = try plan("{\"skip_fusion_layers\": [\"conv1\"], \(layer("conv1", #""num_bits": 8"#))}")
        XCTAssertEqual(lenetPlan.warnings, ["skip_fusion_layers[0]: conv1 has no batchnorm2d after it; the entry has no effect"])
    }

    // MARK: The front door

    func testFormatsAreToldApartByTheirKeys() throws {
        func format(_ file: String) throws -> ConfigFormat {
            try ConfigFormat.detect(JSONObject.load(file: repositoryPath(file)))
        }
        XCTAssertEqual(try format("Configs/retrain.json"), .amctRetrain)
        XCTAssertEqual(try format("Configs/amct/generated.json"), .amctRetrain)
        XCTAssertEqual(try format("Configs/amct/simple.json"), .simple)
        XCTAssertEqual(try format("Configs/amct/ptq-plain.json"), .amctPTQ)
        XCTAssertEqual(try format("Configs/float.json"), .floatTraining)
        XCTAssertEqual(try RetrainConfig.load(file: repositoryPath("Configs/float.json")).format, .floatTraining)
        XCTAssertEqual(try RetrainConfig.load(file: repositoryPath("Configs/amct/simple.json")).format, .simple)
        XCTAssertEqual(try config(#"{"conv1": {"activation_quant_params": {"num_bits": 8}}}"#).format, .amctPTQ)

        // A PTQ key in a retrain file: the two formats are named, not "expected a layer entry".
        assertError(#"{"activation_offset": true, "conv1": {"retrain_enable": true}}"#, keyPath: "conv1.retrain_enable",
                    mentions: ["AMCT retrain config.json", "activation_offset", "AMCT PTQ config.json"])
        assertError(#"{"skip_layers": ["fc3"], "do_fusion": true}"#, keyPath: "skip_layers", mentions: ["simple config", "do_fusion"])
        // An unknown top-level key says so, in either format.
        assertError(#"{"activation_offset": true, "batch_nums": 2}"#, keyPath: "batch_nums",
                    mentions: ["unknown key", "AMCT PTQ config.json", "activation_offset"])
        assertError(#"{"batch_nums": 2}"#, keyPath: "batch_nums", mentions: ["unknown key", "AMCT retrain config.json"])
        assertError(#"{"calibration": {"act_algo": "hfmg"}, "do_fusion": false}"#, keyPath: "calibration",
                    mentions: ["retrain formats", "activation_quant_params"])
    }
}

/// The PTQ config through the commands: `qat calibrate` gives a checkpoint that deploys and
/// verifies, every command says which format it read, and `qat plan --json` writes the plan.
final class AMCTPTQCommandTests: XCTestCase {
    let plain = "Configs/amct/ptq-plain.json"

    func testCalibrateDeployVerify() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5", deployed = folder + "/ptq-int8.h5"
        let (status, log) = try qat(["calibrate", "--config", plain, "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"),
                                     "--output", ptq, "--batch-num", "2", "--test-limit", "500"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.hasPrefix("read AMCT PTQ config.json \(plain)\n"), log)
        XCTAssertTrue(log.contains("calibrated conv1, conv2 with IFMR on 2 batch(es)"), log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        // Symmetric activations: conv1's input grid has zero point 0.
        XCTAssertTrue(deployLog.contains("conv1") && deployLog.contains("int8 in  → int8 (s "), deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }

    func testEveryCommandSaysWhichFormatItRead() throws {
        let (planStatus, planText) = try qat(["plan", "--config", plain])
        XCTAssertEqual(planStatus, 0, planText)
        XCTAssertTrue(planText.hasPrefix("read AMCT PTQ config.json \(plain)\nQuantization plan for model lenet5"), planText)
        let (checkStatus, checkText) = try qat(["check", "model", "--config", plain])
        XCTAssertTrue(checkStatus == 0 || checkStatus == 1, checkText)
        XCTAssertTrue(checkText.hasPrefix("read AMCT PTQ config.json \(plain)\n"), checkText)
        XCTAssertTrue(checkText.contains("fc1 is not in the config, so it stays float (add an entry, or \"quant_enable\": false"), checkText)
        let (retrainStatus, retrainText) = try qat(["plan", "--config", "Configs/amct/simple.json"])
        XCTAssertEqual(retrainStatus, 0, retrainText)
        XCTAssertTrue(retrainText.hasPrefix("read qat simple config (AMCT's simple config in JSON) Configs/amct/simple.json\n"), retrainText)

        // A PTQ config given to train: accepted, and the line says what train does with it.
        let folder = try makeTemporaryFolder(self)
        let (trainStatus, trainText) = try qat(["train", "--config", plain, "--init", repositoryPath("Checkpoints/lenet5-float.h5"),
                                                "--epochs", "1", "--train-limit", "256", "--test-limit", "50",
                                                "--output", folder + "/qat.h5", "--checkpoint-dir", folder + "/run"])
        XCTAssertEqual(trainStatus, 0, trainText)
        XCTAssertTrue(trainText.hasPrefix("read AMCT PTQ config.json \(plain): qat train calibrates as it says, then fine-tunes"), trainText)
        XCTAssertTrue(trainText.contains("calibrated conv1, conv2 with IFMR on 2 batch(es)"), trainText)

        // A bad key: one line naming it, nothing else.
        let bad = folder + "/bad.json"
        try #"{"activation_offset": true, "batch_nums": 2}"#.write(toFile: bad, atomically: true, encoding: .utf8)
        for command in [["plan"], ["check", "model"], ["train"], ["calibrate", "--output", folder + "/x.h5"]] {
            let (status, text) = try qat(command + ["--config", bad])
            XCTAssertEqual(status, 1, text)
            XCTAssertEqual(text.split(separator: "\n").count, 1, text)
            XCTAssertTrue(text.contains("batch_nums: unknown key"), text)
        }
    }

    func testPlanJSONIsTheResolvedPlan() throws {
        let (status, text) = try qat(["plan", "--config", plain, "--json"])
        XCTAssertEqual(status, 0, text)
        let header = "read AMCT PTQ config.json \(plain)\n"   // standard error, written first
        XCTAssertTrue(text.hasPrefix(header), text)
        let written = try RetrainConfig.parse(JSONObject.parse(Data(text.dropFirst(header.count).utf8), file: "plan.json"))
        XCTAssertEqual(written.format, .amctRetrain)
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let expected = try RetrainConfig.load(file: repositoryPath(plain)).resolve(for: lenet)
        XCTAssertEqual(try written.resolve(for: lenet).quantizedLayers.map(\.quantizer), expected.quantizedLayers.map(\.quantizer))
        XCTAssertEqual(written.batchCount, 2)
    }
}
