import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATONNX
@testable import QATDeploy

/// `qat export`: the float model round-trips through `qat import`; the QDQ model carries the
/// deploy program's codes, scales and zero points; bad input is one line, exit 1, nothing written.
/// (ONNX Runtime's agreement on the test set is `make interop`: tests/interop/ort_equivalence.py.)
final class ONNXExportTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    /// import → export --float → import gives the same spec and bit-identical weights, for the
    /// fixtures and the PyTorch exports (every layer kind, depthwise, asymmetric pads, constants).
    func testFloatExportRoundTripsThroughImport() throws {
        let files = ["Tests/Fixtures/onnx/lenet.onnx", "Tests/Fixtures/onnx/mobile.onnx", "Tests/Fixtures/onnx/old-opset.onnx",
                     "examples/onnx-models/mobilenetv2-tiny.onnx", "examples/onnx-models/resnet18-tiny.onnx"]
        for file in files {
            let first = try ImportedModel.load(onnxFile: repositoryPath(file))
            let exported = folder + "/" + (file as NSString).lastPathComponent
            try ONNXExporter.exportFloat(model: first.model, opset: 15, file: file).write(to: URL(fileURLWithPath: exported))
            let second = try ImportedModel.load(onnxFile: exported, options: ImportOptions(modelName: first.spec.name))
            XCTAssertEqual(second.spec.jsonString(), first.spec.jsonString(), file)
            XCTAssertEqual(second.opset, 15)
            XCTAssertEqual(second.removedNodes, 0, "one node per layer: \(file)")
            for (a, b) in zip(first.checkpoint.parameters + first.checkpoint.buffers, second.checkpoint.parameters + second.checkpoint.buffers) {
                XCTAssertEqual(a.name, b.name, file)
                XCTAssertEqual(a.tensor.shape, b.tensor.shape, "\(file) \(a.name)")
                XCTAssertEqual(a.tensor.storage.map(\.bitPattern), b.tensor.storage.map(\.bitPattern), "\(file) \(a.name)")
            }
            XCTAssertEqual(first.checkpoint.parameters.count + first.checkpoint.buffers.count,
                           second.checkpoint.parameters.count + second.checkpoint.buffers.count, file)
        }
    }

    /// A QAT run of the imported LeNet fixture (a BN to fold, a ReLU6, a residual add, an average
    /// pool): every integer layer of the deploy program appears as DequantizeLinear of exactly its
    /// int8 codes (per channel, axis 0) and int32 bias, and every codes value as QuantizeLinear
    /// with its scale and zero point; float nodes stay float; layer names carry over.
    func testQDQExportCarriesTheDeployProgram() throws {
        let lenet = "Tests/Fixtures/onnx/lenet.onnx"
        let config = folder + "/retrain.json", checkpoint = folder + "/qat.h5", output = folder + "/qdq.onnx"
        let (createStatus, created) = try qat(["create-config", "--model", lenet, "--output", config])
        XCTAssertEqual(createStatus, 0, created)
        let (trainStatus, log) = try qat(["train", "--config", config, "--model", lenet, "--epochs", "1",
                                          "--train-limit", "128", "--test-limit", "128", "--output", checkpoint])
        XCTAssertEqual(trainStatus, 0, log)
        let (status, text) = try qat(["export", "--checkpoint", checkpoint, "--output", output])
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("QDQ ONNX model"), text)

        let deploy = try Deployer.deploy(checkpoint: checkpoint)
        let onnx = try ONNXModel.read(file: output)
        XCTAssertEqual(onnx.defaultOpset, 13)
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0) })
        func node(named name: String) -> ONNXNode? { onnx.nodes.first { $0.name == name } }
        let integer = deploy.nodes.filter(\.isInteger)
        XCTAssertFalse(integer.isEmpty)
        for d in integer {
            let main = try XCTUnwrap(node(named: d.name), d.name)
            XCTAssertEqual(main.opType, d.op == .conv2d ? "Conv" : "Gemm")
            let codes = try XCTUnwrap(initializers[d.name + ".weight/codes"])
            XCTAssertEqual(codes.dataType, 3, "int8")
            XCTAssertEqual(codes.dims, d.weightShape!)
            XCTAssertEqual(codes.integers!, d.weightCodes.map(Int64.init))
            XCTAssertEqual(initializers[d.name + ".weight/scale"]!.floats, d.weightScales)
            let dequantize = try XCTUnwrap(node(named: d.name + ".weight/dequantize"))
            guard case .int(0)? = dequantize.attributes["axis"] else { return XCTFail("per-channel axis 0 on \(d.name)") }
            let bias = try XCTUnwrap(initializers[d.name + ".bias/codes"])
            XCTAssertEqual(bias.dataType, 6, "int32")
            XCTAssertEqual(bias.integers!, d.biasCodes.map(Int64.init))
            XCTAssertEqual(initializers[d.name + ".bias/scale"]!.floats,
                           d.weightScales.map { Float(Double(d.inputQuantizer!.scale) * Double($0)) })
        }
        // An integer layer reading anything but codes on its own grid quantizes its input first,
        // as the engine does (the fixture has one: a value read by an integer layer and by a float add).
        var quantizedByReader = 0
        for d in integer where deploy.nodes.first(where: { $0.name == d.inputs[0] })?.output != d.inputQuantizer {
            let quantize = try XCTUnwrap(node(named: d.name + "/input/quantize"), d.name)
            XCTAssertEqual(quantize.opType, "QuantizeLinear")
            XCTAssertEqual(initializers[d.name + "/input/scale"]!.floats, [d.inputQuantizer!.scale], d.name)
            XCTAssertEqual(initializers[d.name + "/input/zero_point"]!.integers!, [Int64(d.inputQuantizer!.offset)], d.name)
            quantizedByReader += 1
        }
        XCTAssertGreaterThan(quantizedByReader, 0, "the fixture has an integer layer reading a float value")
        for d in deploy.nodes {
            if let q = d.output {
                let quantize = try XCTUnwrap(node(named: d.name + "/quantize"), d.name)
                XCTAssertEqual(quantize.outputs, [d.name])
                XCTAssertEqual(initializers[d.name + "/scale"]!.floats, [q.scale], d.name)
                XCTAssertEqual(initializers[d.name + "/zero_point"]!.integers!, [Int64(q.offset)], d.name)
                XCTAssertEqual(initializers[d.name + "/zero_point"]!.dataType, 3, "int8 activations")
            } else if !d.isInteger, d.op != .constant {
                XCTAssertNotNil(node(named: d.name), "float node \(d.name) keeps its name")
            }
        }
        XCTAssertTrue(deploy.nodes.contains { $0.op == .add && $0.output == nil } || deploy.nodes.contains { $0.op == .avgpool2d },
                      "the fixture has float nodes")

        // The tensorrt profile refuses the first integer layer with an asymmetric activation grid
        // (after a ReLU, ULQ's range [0, M] gives zero point −128) or a negative weight scale (a
        // folded BN with γ < 0), naming it; nothing is written.
        let layer = try XCTUnwrap(integer.first { $0.inputQuantizer!.offset != 0 || $0.weightScales.contains { $0 < 0 } })
        let expected = layer.inputQuantizer!.offset != 0
            ? "layer \(layer.name): cannot be expressed in the tensorrt profile: its activation quantizer has zero point \(layer.inputQuantizer!.offset)"
            : "layer \(layer.name): cannot be expressed in the tensorrt profile: channel \(layer.weightScales.firstIndex { $0 < 0 }!) has a negative weight scale"
        let refused = folder + "/tensorrt.onnx"
        let (trtStatus, trtText) = try qat(["export", "--checkpoint", checkpoint, "--output", refused, "--profile", "tensorrt"])
        XCTAssertEqual(trtStatus, 1, trtText)
        XCTAssertEqual(trtText.split(separator: "\n").count, 1, trtText)
        XCTAssertTrue(trtText.contains(expected), trtText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused))
    }

    /// An INT16 layer has no 16-bit QuantizeLinear before opset 21: it is exported as float ops
    /// simulating its input grid (Div, Clip, Round, Mul with its scale and bounds), with a warning.
    func testINT16LayerIsExportedAsFloatOpsWithAWarning() throws {
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: repositoryPath("Configs/retrain.json")))) as! [String: Any]
        var conv2 = config["conv2"] as! [String: Any]
        var data = conv2["retrain_data_config"] as! [String: Any]
        data["dst_type"] = "INT16"
        conv2["retrain_data_config"] = data
        config["conv2"] = conv2
        let configFile = folder + "/int16.json", checkpoint = folder + "/int16.h5", output = folder + "/int16.onnx"
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configFile))
        let (trainStatus, log) = try qat(["train", "--config", configFile, "--epochs", "1", "--train-limit", "128", "--test-limit", "128",
                                          "--checkpoint-dir", folder + "/run", "--output", checkpoint])
        XCTAssertEqual(trainStatus, 0, log)
        let (status, text) = try qat(["export", "--checkpoint", checkpoint, "--output", output])
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("warning: layer conv2 is INT16: exported as float ops"), text)
        let deploy = try Deployer.deploy(checkpoint: checkpoint)
        let grid = try XCTUnwrap(deploy.nodes.first { $0.name == "conv2" }?.inputFakeQuantization)
        let onnx = try ONNXModel.read(file: output)
        XCTAssertEqual(onnx.nodes.filter { $0.name.hasPrefix("conv2/input/") }.map(\.opType), ["Div", "Clip", "Round", "Mul"])
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0.floats) })
        XCTAssertEqual(initializers["conv2/input/scale"], [grid.scale])
        XCTAssertEqual(initializers["conv2/input/low"], [Float(-32768 - grid.offset)])
        XCTAssertEqual(initializers["conv2/input/high"], [Float(32767 - grid.offset)])
        XCTAssertEqual(onnx.nodes.first { $0.name == "conv2" }?.opType, "Conv")
    }

    func testBadInputIsOneLineAndNothingIsWritten() throws {
        let output = folder + "/out.onnx"
        func expectFailure(_ arguments: [String], mentioning words: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let (status, text) = try qat(["export"] + arguments)
            XCTAssertEqual(status, 1, text, file: file, line: line)
            let lines = text.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, text, file: file, line: line)
            for word in words { XCTAssertTrue(text.contains(word), "\(word) in: \(text)", file: file, line: line) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: output), text, file: file, line: line)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix(".out.onnx") }, [],
                           "no temporary left", file: file, line: line)
        }
        let float = "Checkpoints/lenet5-float.h5"
        // A float checkpoint without --float.
        try expectFailure(["--checkpoint", float, "--output", output], mentioning: [float, "float checkpoint", "--float"])
        // An opset below per-channel DequantizeLinear.
        try expectFailure(["--checkpoint", float, "--output", output, "--float", "--opset", "12"], mentioning: ["--opset", "opset 12"])
        // A layer the opset cannot express: hard_swish (ONNX HardSwish is opset 14).
        let (importStatus, imported) = try qat(["import", "Tests/Fixtures/onnx/mobile.onnx", "--output-dir", folder + "/mobile"])
        XCTAssertEqual(importStatus, 0, imported)
        try expectFailure(["--checkpoint", folder + "/mobile/mobile-float.h5", "--output", output, "--float"],
                          mentioning: ["hard_swish", "opset 14", "layer "])
        // An output that cannot be written: the folder does not exist.
        let (status, text) = try qat(["export", "--checkpoint", float, "--output", folder + "/missing/out.onnx", "--float"])
        XCTAssertEqual(status, 1, text)
        XCTAssertEqual(text.split(separator: "\n").count, 1, text)
        XCTAssertTrue(text.contains(folder + "/missing/out.onnx"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/missing"))
        // The same model at opset 14 exports.
        let (goodStatus, good) = try qat(["export", "--checkpoint", folder + "/mobile/mobile-float.h5", "--output", output, "--float", "--opset", "14"])
        XCTAssertEqual(goodStatus, 0, good)
        XCTAssertEqual(try ONNXModel.read(file: output).defaultOpset, 14)
    }
}
