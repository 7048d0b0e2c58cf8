import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
import QATDeploy
import QATONNX
import QAT

/// Vitis AI's `convert_silu_to_hswish` (issue 12): every SiLU (a sigmoid whose output a mul
/// multiplies by the sigmoid's own input, as an imported ONNX Sigmoid + Mul looks) becomes a
/// hard swish; a model without SiLU is unchanged and says so.
final class SiLUConversionTests: XCTestCase {
    /// One SiLU on the model input (operands in the order mul(sigmoid, x)) and one after a conv
    /// (mul(x, sigmoid)), and a sigmoid that gates something else, which must stay.
    let siluNet = try! ModelSpec.parse(JSONObject.parse(Data(#"""
        {"name": "silunet", "input": [1, 6, 6], "layers": [
          {"name": "sig0", "type": "sigmoid", "inputs": ["input"]},
          {"name": "silu0", "type": "mul", "inputs": ["sig0", "input"]},
          {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": 1},
          {"name": "sig1", "type": "sigmoid"},
          {"name": "silu1", "type": "mul", "inputs": ["conv1", "sig1"]},
          {"name": "gate", "type": "sigmoid", "inputs": ["conv1"]},
          {"name": "gated", "type": "mul", "inputs": ["silu1", "gate"]},
          {"name": "flatten", "type": "flatten"},
          {"name": "fc", "type": "linear", "in_features": 72, "out_features": 3}
        ]}
        """#.utf8), file: "silunet.json"))

    let header = #""convert_relu6_to_relu": false, "include_cle": false, "keep_first_last_layer_accuracy": false, "keep_add_layer_accuracy": false, "include_bias_corr": false, "target_device": "CPU", "quantizable_data_type": ["input", "weights", "activation"], "overall_quantize_config": {"datatype": "int", "method": "maxmin", "scale_type": "float", "calib_statistic_method": "max"}"#

    func config(convert: Bool) throws -> RetrainConfig {
        let text = "{\(header), \"convert_silu_to_hswish\": \(convert)}"
        return try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "vitis.json"))
    }

    func testEverySiLUBecomesAHardSwishAndThePlanNamesIt() throws {
        let convert = try config(convert: true)
        XCTAssertEqual(convert.graphRewrites, [.siluToHardSwish])
        let rewritten = convert.model(for: siluNet)
        XCTAssertEqual(rewritten.layers.map(\.name), ["silu0", "conv1", "silu1", "gate", "gated", "flatten", "fc"],
                       "the two SiLU sigmoids are gone; the gate, read by another mul, stays")
        XCTAssertEqual(rewritten.layers[0], LayerSpec(name: "silu0", kind: .hardSwish, inputs: ["input"]))
        XCTAssertEqual(rewritten.layers[2], LayerSpec(name: "silu1", kind: .hardSwish, inputs: ["conv1"]))
        XCTAssertEqual(rewritten.layers[4].kind, .mul, "gated multiplies by another value's sigmoid: not a SiLU")
        XCTAssertNoThrow(try ModelGraph.Wiring(rewritten), "the rewritten spec is well wired (conv1 reads silu0)")
        XCTAssertEqual(try ModelGraph.Wiring(rewritten).sources[1], [0])

        let plan = try convert.resolve(for: siluNet)
        XCTAssertEqual(plan.rewrittenLayers, [.siluToHardSwish: ["silu0", "silu1"]])
        XCTAssertEqual(plan.layer(named: "silu1")?.rule, "convert_silu_to_hswish (was SiLU: sigmoid sig1 × mul)")
        XCTAssertEqual(plan.layer(named: "silu1")?.kind, .hardSwish)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["conv1", "fc"])
        XCTAssertEqual(try convert.resolve(for: rewritten).layers.map(\.kind), plan.layers.map(\.kind),
                       "a rewritten spec resolves to the same model")
        // Off (the manual's default): the model is left as it is.
        XCTAssertEqual(try config(convert: false).model(for: siluNet), siluNet)
    }

    /// The rewritten model computes x·relu6(x + 3)/6 where the original computed x·sigmoid(x),
    /// with the same weights, checked on each side against the formula.
    func testTheFunctionChangesAsHardSwishPredicts() throws {
        let original = try Model(spec: siluNet, seed: 3)
        let converted = try Model(spec: try config(convert: true).model(for: siluNet), seed: 3)
        for name in ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"] {
            let source = original.parameters.first { $0.name == name }!.variable.value
            converted.parameters.first { $0.name == name }!.variable.value = source
        }
        var generator = SeededGenerator(seed: 11)
        let x = Tensor.uniform([2, 1, 6, 6], bound: 5, using: &generator)
        var before: [String: [Float]] = [:], after: [String: [Float]] = [:]
        _ = original.forward(x, training: false, tape: nil) { before[original.layers[$0].name] = $1.value.storage }
        _ = converted.forward(x, training: false, tape: nil) { after[converted.layers[$0].name] = $1.value.storage }
        func silu(_ v: Float) -> Float { v / (1 + Foundation.exp(-v)) }
        func hardSwish(_ v: Float) -> Float { v * min(max(v + 3, 0), 6) / 6 }
        for (i, v) in x.storage.enumerated() {
            XCTAssertEqual(before["silu0"]![i], silu(v), accuracy: 1e-5)
            XCTAssertEqual(after["silu0"]![i], hardSwish(v), accuracy: 1e-6)
        }
        let conv1 = try XCTUnwrap(after["conv1"])
        for (i, v) in conv1.enumerated() { XCTAssertEqual(after["silu1"]![i], hardSwish(v), accuracy: 1e-5) }
        XCTAssertNotEqual(before["fc"], after["fc"], "the function did change")
    }

    func testAModelWithoutSiLUIsUnchangedAndSaysSo() throws {
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let convert = try config(convert: true)
        XCTAssertEqual(convert.model(for: lenet), lenet)
        let plan = try convert.resolve(for: lenet)
        XCTAssertEqual(plan.rewrittenLayers, [:])
        XCTAssertEqual(plan.warnings, ["convert_silu_to_hswish: no SiLU to convert in model lenet5 (a sigmoid whose output a mul "
                                       + "multiplies by the sigmoid's own input); the model is unchanged"])
        XCTAssertTrue(plan.table().contains("no SiLU to convert"))
        XCTAssertFalse(try config(convert: false).resolve(for: lenet).warnings.contains { $0.contains("SiLU") })
    }

    /// An ONNX SiLU is a Sigmoid and a Mul of its input by the Sigmoid's output: written as ONNX
    /// (qat's float export, one node per layer) and imported back, the net converts the same way.
    func testAnImportedONNXSiLUConverts() throws {
        let folder = try makeTemporaryFolder(self)
        let file = folder + "/silunet.onnx"
        let model = try Model(spec: siluNet, seed: 3)
        try ONNXExporter.exportFloat(model: model, opset: 15, file: file).write(to: URL(fileURLWithPath: file))
        let imported = try ImportedModel.load(onnxFile: file, options: ImportOptions(modelName: "silunet"))
        let kinds = imported.spec.layers.map(\.kind.typeName)
        XCTAssertEqual(kinds.filter { $0 == "sigmoid" }.count, 3, "\(kinds)")
        XCTAssertEqual(kinds.filter { $0 == "mul" }.count, 3, "\(kinds)")
        let convert = try config(convert: true)
        let plan = try convert.resolve(for: imported.spec)
        XCTAssertEqual(plan.rewrittenLayers[.siluToHardSwish]?.count, 2, "the two SiLUs, not the gate")
        let rewritten = convert.model(for: imported.spec).layers.map(\.kind.typeName)
        XCTAssertEqual(rewritten.filter { $0 == "hard_swish" }.count, 2, "\(rewritten)")
        XCTAssertEqual(rewritten.filter { $0 == "sigmoid" }.count, 1, "\(rewritten)")
    }
}
