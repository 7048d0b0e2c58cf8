import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// Vitis AI's float data types (issue 12, `datatype` bfloat16, float16, float32): the casts
/// against hand-computed values, the plan of the manual's bfloat16_config.json and
/// mix_precision_config.json, the refusal of int beside float in one layer, and calibrate →
/// deploy → verify with the engine equal to fake quant bit for bit.
final class FloatCastTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    // MARK: The casts, hand-computed

    /// bfloat16 keeps 7 mantissa bits: 1 + 2⁻⁷ is the successor of 1, so 1 + 2⁻⁸ is a tie.
    func testBFloat16RoundsToNearestEvenAndOverflowsToInfinity() {
        let bf = FloatFormat.bfloat16
        XCTAssertEqual(bf.cast(1 + 0x1p-8), 1, "tie between 1 (even) and 1 + 2⁻⁷ (odd): down")
        XCTAssertEqual(bf.cast(1 + 3 * 0x1p-8), 1 + 0x1p-6, "tie between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even): up")
        XCTAssertEqual(bf.cast(1 + 0x1p-8 + 0x1p-20), 1 + 0x1p-7, "just above the tie: up")
        XCTAssertEqual(bf.cast(-(1 + 3 * 0x1p-8)), -(1 + 0x1p-6), "sign-symmetric")
        XCTAssertEqual(bf.cast(3.14159265), 3.140625, "π: 0x40490FDB → 0x40490000")
        XCTAssertEqual(bf.cast(2 - 0x1p-9), 2, "rounding carries into the exponent")
        // Largest finite bfloat16: (2 − 2⁻⁷)·2¹²⁷; float32's max rounds past it.
        XCTAssertEqual(bf.cast(.greatestFiniteMagnitude), .infinity)
        XCTAssertEqual(bf.cast(-.greatestFiniteMagnitude), -.infinity)
        XCTAssertEqual(bf.cast((2 - 0x1p-7) * 0x1p127), (2 - 0x1p-7) * 0x1p127)
        // Subnormals: the smallest bfloat16 subnormal is 2⁻¹³³ (float32's 2⁻¹⁴⁹ shifted by 16 bits).
        XCTAssertEqual(bf.cast(0x1p-133), 0x1p-133)
        XCTAssertEqual(bf.cast(0x1p-134), 0, "tie between 0 (even) and 2⁻¹³³: down")
        XCTAssertEqual(bf.cast(3 * 0x1p-134), 0x1p-132, "tie between 2⁻¹³³ (odd) and 2⁻¹³²: up")
        XCTAssertEqual(bf.cast(0x1p-140), 0)
        XCTAssertTrue(bf.cast(.nan).isNaN)
        XCTAssertEqual(bf.cast(.infinity), .infinity)
        XCTAssertEqual(bf.cast(-0.0).sign, .minus, "−0 stays −0")
    }

    /// float16 keeps 10 mantissa bits, 5 exponent bits: largest finite 65504, smallest subnormal 2⁻²⁴.
    func testFloat16RoundsToNearestEvenOverflowsAndUnderflowsGradually() {
        let h = FloatFormat.float16
        XCTAssertEqual(h.cast(1 + 0x1p-11), 1, "tie: down to even")
        XCTAssertEqual(h.cast(1 + 3 * 0x1p-11), 1 + 0x1p-9, "tie: up to even")
        XCTAssertEqual(h.cast(0.1), 0.0999755859375, "0.1 → 1638·2⁻¹⁴")
        XCTAssertEqual(h.cast(65504), 65504)
        XCTAssertEqual(h.cast(65519), 65504, "below the tie with 65536: down to the largest finite")
        XCTAssertEqual(h.cast(65520), .infinity, "the tie with 2¹⁶ rounds to even, which overflows: ∞, not saturation")
        XCTAssertEqual(h.cast(-1e6), -.infinity)
        XCTAssertEqual(h.cast(0x1p-24), 0x1p-24, "smallest subnormal")
        XCTAssertEqual(h.cast(0x1p-25), 0, "tie between 0 and 2⁻²⁴: down to even")
        XCTAssertEqual(h.cast(3 * 0x1p-25), 0x1p-23, "tie between 2⁻²⁴ (odd) and 2⁻²³: up")
        XCTAssertEqual(h.cast(0x1.8p-20), 0x1.8p-20, "a subnormal float16 with two significant bits is exact")
        XCTAssertEqual(h.cast(0x1p-15 + 0x1p-25), 0x1p-15, "subnormal range: spacing 2⁻²⁴, the 2⁻²⁵ excess is a tie → even")
        XCTAssertTrue(h.cast(.nan).isNaN)
        XCTAssertEqual(FloatFormat.float32.cast(1 + 0x1p-20), 1 + 0x1p-20, "float32 is the identity")
    }

    /// The fake cast passes the gradient straight through, and float32 returns its input itself.
    func testFakeCastHasAStraightThroughGradient() {
        let x = Variable(Tensor(shape: [4], storage: [1 + 0x1p-8, -3, 65520, 0.1]), requiresGrad: true)
        let tape = Tape()
        let y = fakeCast(x, to: .float16, tape: tape)
        XCTAssertEqual(y.value.storage, [1 + 0x1p-8, -3, .infinity, 0.0999755859375].map { FloatFormat.float16.cast($0) })
        let upstream: [Float] = [0.5, -2, 3, 7]
        tape.backward(from: weightedSum(y, weights: upstream, tape: tape))
        XCTAssertEqual(x.grad?.storage, upstream)
        XCTAssertTrue(fakeCast(x, to: .float32, tape: tape) === x)
    }

    // MARK: The manual's examples

    func testTheManualsFloatExamplesResolveToCastLayers() throws {
        let bf16 = try RetrainConfig.load(file: repositoryPath("Configs/vitis/bfloat16_config.json")).resolve(for: lenet)
        XCTAssertEqual(bf16.quantizedLayers.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        for layer in bf16.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.floatCast, FloatCast(input: .bfloat16, weights: .bfloat16, bias: .bfloat16), layer.name)
            XCTAssertEqual(layer.quantizer?.needsCalibration, false)
        }
        let mix = try RetrainConfig.load(file: repositoryPath("Configs/vitis/mix_precision_config.json")).resolve(for: lenet)
        for layer in mix.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.floatCast, FloatCast(input: .bfloat16, weights: .bfloat16, bias: .float16), layer.name)
        }
        let table = mix.table()
        XCTAssertTrue(table.contains("cast       input bfloat16, weights bfloat16, bias float16"), table)
        // The checkpoint's record of the plan gives the plan back.
        for plan in [bf16, mix] {
            let record = plan.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
            XCTAssertTrue(record.contains("\"data_type\": \"bfloat16\""), record)
            XCTAssertFalse(record.contains("ulq_quantize"), "a cast layer records its data types only: \(record)")
            let reread = try RetrainConfig.parse(JSONObject.parse(Data(record.utf8), file: "record")).resolve(for: lenet)
            XCTAssertEqual(reread.layers.map(\.quantizer), plan.layers.map(\.quantizer))
        }
    }

    func testFloat32IsTheIdentityAndLayersMayMixPrecisionAcrossLayers() throws {
        let header = #""include_cle": false, "include_bias_corr": false, "target_device": "CPU", "quantizable_data_type": ["input", "weights", "bias", "activation"]"#
        let int8 = #""datatype": "int", "bit_width": 8, "method": "maxmin", "round_mode": "half_even", "symmetry": true, "per_channel": false, "signed": true, "narrow_range": false, "scale_type": "float", "calib_statistic_method": "max""#
        // A float32 model configuration, one integer layer by name: it must stay integer.
        let text = #"{\#(header), "overall_quantize_config": {"datatype": "float32"}, "layer_quantize_config": [{"layer_type": null, "layer_name": "conv2", "quantizable_data_type": ["weights", "activation"], "overall_quantize_config": {\#(int8)}}]}"#
        let plan = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "v.json")).resolve(for: lenet)
        XCTAssertEqual(plan.layer(named: "conv1")?.quantizer?.floatCast?.isIdentity, true)
        XCTAssertNil(plan.layer(named: "conv2")?.quantizer?.floatCast, "the integer layer configuration wins")
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer?.calibration, CalibrationMethod(MaxMinCalibrator()))
        XCTAssertTrue(plan.table().contains("float32 is the identity"), plan.table())
        // float32 leaves every value as it is: the model's outputs equal the float model's.
        let model = try Model.load(checkpoint: repositoryPath("Checkpoints/lenet5-float.h5")).0
        let images = try fashionMNIST(.test, count: 16).batch(Array(0..<16)[...]).images
        let float = model.forward(images, training: false, tape: nil).value.storage
        var identity = plan
        identity.layers = identity.layers.map { var l = $0; if l.name == "conv2" { l.quantizer = nil }; return l }
        model.applyQuantization(identity)
        XCTAssertEqual(model.forward(images, training: false, tape: nil).value.storage, float)
    }

    // MARK: Refusals

    func testIntBesideFloatInOneLayerIsRefusedInOneLine() {
        func parse(_ text: String) throws -> QuantizationPlan {
            try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "v.json")).resolve(for: lenet)
        }
        let header = #""include_cle": false, "include_bias_corr": false, "target_device": "CPU""#
        let int8 = #""datatype": "int", "method": "maxmin", "calib_statistic_method": "max", "scale_type": "float""#
        assertInputError(try parse(#"{\#(header), "overall_quantize_config": {\#(int8)}, "quantizable_data_type": ["input", "weights", "activation"], "tensor_quantize_config": {"activation": {"datatype": "bfloat16"}, "input": {"datatype": "bfloat16"}}}"#),
                         mentions: ["v.json", "overall_quantize_config.datatype", "int beside bfloat16 activation", "one float format throughout"])
        assertInputError(try parse(#"{\#(header), "overall_quantize_config": {"datatype": "bfloat16"}, "tensor_quantize_config": {"bias": {"datatype": "int"}}}"#),
                         mentions: ["tensor_quantize_config.bias.datatype", "int for bias in a layer of bfloat16 weights"])
        assertInputError(try parse(#"{\#(header), "overall_quantize_config": {"datatype": "bfloat16"}, "tensor_quantize_config": {"input": {"datatype": "float16"}}}"#),
                         mentions: ["tensor_quantize_config.input.datatype", "differs from activation's bfloat16"])
        assertInputError(try parse(#"{\#(header), "overall_quantize_config": {"datatype": "bfloat16", "bit_width": 8}}"#),
                         mentions: ["overall_quantize_config.bit_width", "applies to datatype int only"])
        // qat's own JSON (the record's keys): the same rule, with the key that made the mix.
        assertInputError(try parse(#"{"conv1": {"retrain_data_config": {"data_type": "bfloat16"}}}"#),
                         mentions: ["conv1.retrain_weight_config.data_type", "int (the default) on layer conv1, whose input is bfloat16"])
        assertInputError(try parse(#"{"conv1": {"retrain_data_config": {"data_type": "float16", "clip_max": 3, "clip_min": -3}}}"#),
                         mentions: ["conv1.retrain_data_config.clip_max", "applies to data_type int only"])
        assertInputError(try parse(#"{"conv1": {"retrain_weight_config": {"bias_data_type": "float16"}}}"#),
                         mentions: ["conv1.retrain_weight_config.bias_data_type", "float16 on layer conv1, whose weights and input are int"])
    }

    // MARK: Through calibrate, deploy, verify

    func testCastModelsDeployVerifyAndMatchFakeQuantBitForBit() throws {
        let folder = try makeTemporaryFolder(self)
        for name in ["bfloat16_config", "mix_precision_config"] {
            let ptq = folder + "/\(name).h5", deployed = folder + "/\(name)-int8.h5"
            let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/\(name).json", "--model", "Configs/models/lenet5.json",
                                         "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                         "--batch-num", "1", "--test-limit", "500"])
            XCTAssertEqual(status, 0, log)
            XCTAssertTrue(log.contains("(5 cast layer(s) need no calibration)"), log)
            let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
            XCTAssertEqual(deployStatus, 0, deployLog)
            let bias = name == "bfloat16_config" ? "bfloat16" : "float16"
            XCTAssertEqual(deployLog.components(separatedBy: "input cast to bfloat16 and back, weights bfloat16, bias \(bias), run as a float").count,
                           6, "one line per cast layer: \(deployLog)")
            let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
            XCTAssertEqual(verifyStatus, 0, verified)
            XCTAssertTrue(verified.contains("predictions equal: 100.000% of 500 images"), verified)
            // The engine casts the input as fake quant does: the logits agree bit for bit.
            let (model, _) = try Model.load(checkpoint: ptq)
            let engine = try Int8Model.load(deployFile: deployed)
            let images = try fashionMNIST(.test, count: 64).batch(Array(0..<64)[...]).images
            XCTAssertEqual(engine.forward(images).storage.map(\.bitPattern),
                           model.forward(images, training: false, tape: nil).value.storage.map(\.bitPattern), name)
            let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", folder + "/\(name).onnx"])
            XCTAssertEqual(exportStatus, 1)
            XCTAssertTrue(exported.contains("layer conv1: cannot be exported yet: it is a cast layer"), exported)
            XCTAssertEqual(exported.split(separator: "\n").count, 1, exported)
        }
    }
}
