import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATONNX
@testable import QATDeploy

/// `qat export --profile tensorrt` with the shipped TensorRT retrain config, and `--exact`'s
/// integer-op graph. (ONNX Runtime's bit-for-bit agreement with `--exact` on the test set is
/// `make interop`.)
final class ONNXExportProfileTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    func train(_ config: String, to checkpoint: String) throws {
        let (status, log) = try qat(["train", "--config", config, "--epochs", "1", "--train-limit", "128", "--test-limit", "128",
                                     "--checkpoint-dir", checkpoint + ".run", "--output", checkpoint])
        XCTAssertEqual(status, 0, log)
    }

    /// Configs/retrain-tensorrt.json (symmetric fixed activation ranges [−128·s, 127·s]) gives
    /// zero point 0 on every grid, so the model exports under the tensorrt profile with every
    /// zero point 0; the default Configs/retrain.json (ULQ's [0, M] after a ReLU) is refused,
    /// naming conv2, with nothing written.
    func testTensorRTConfigExportsAndTheDefaultConfigIsRefusedNamingTheLayer() throws {
        let symmetric = folder + "/tensorrt.h5", output = folder + "/tensorrt.onnx"
        try train(repositoryPath("Configs/retrain-tensorrt.json"), to: symmetric)
        let (status, text) = try qat(["export", "--checkpoint", symmetric, "--output", output, "--profile", "tensorrt"])
        XCTAssertEqual(status, 0, text)
        let onnx = try ONNXModel.read(file: output)
        let zeroPoints = onnx.initializers.filter { $0.name.hasSuffix("zero_point") }
        XCTAssertFalse(zeroPoints.isEmpty)
        for z in zeroPoints { XCTAssertEqual(Set(z.integers!), [0], z.name) }
        let deploy = try Deployer.deploy(checkpoint: symmetric)
        for node in deploy.nodes where node.isInteger {
            XCTAssertEqual(node.inputQuantizer!.offset, 0, node.name)
            XCTAssertTrue(node.weightScales.allSatisfy { $0 > 0 }, node.name)
        }

        let asymmetric = folder + "/default.h5", refused = folder + "/refused.onnx"
        try train(repositoryPath("Configs/retrain.json"), to: asymmetric)
        let (refusedStatus, refusedText) = try qat(["export", "--checkpoint", asymmetric, "--output", refused, "--profile", "tensorrt"])
        XCTAssertEqual(refusedStatus, 1, refusedText)
        XCTAssertEqual(refusedText.split(separator: "\n").count, 1, refusedText)
        XCTAssertTrue(refusedText.contains("layer conv2: cannot be expressed in the tensorrt profile: its activation quantizer has zero point -128"),
                      refusedText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused))

        // --exact writes ConvInteger, which TensorRT's explicit quantization does not take.
        let (exactStatus, exactText) = try qat(["export", "--checkpoint", symmetric, "--output", refused, "--profile", "tensorrt", "--exact"])
        XCTAssertEqual(exactStatus, 1, exactText)
        XCTAssertEqual(exactText.split(separator: "\n").count, 1, exactText)
        XCTAssertTrue(exactText.contains("--exact") && exactText.contains("tensorrt"), exactText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused))
        let (floatStatus, floatText) = try qat(["export", "--checkpoint", symmetric, "--output", refused, "--float", "--exact"])
        XCTAssertEqual(floatStatus, 1, floatText)
        XCTAssertTrue(floatText.contains("--exact"), floatText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: refused))
    }

    /// --exact spells out ALGORITHMS §5 for each integer layer: ConvInteger/MatMulInteger named
    /// after the layer over exactly its int8 codes (MatMul's transposed) with zero points o_d and
    /// 0, the int32 bias b_q, then the float32 multiplier m[c] and offset r[c]·m[c] (the bias
    /// residual QDQ has no slot for), and a QuantizeLinear with scale 1 and zero point o_y.
    func testExactExportSpellsOutTheEngineArithmetic() throws {
        let checkpoint = folder + "/qat.h5", output = folder + "/exact.onnx"
        try train(repositoryPath("Configs/retrain.json"), to: checkpoint)
        let (status, text) = try qat(["export", "--checkpoint", checkpoint, "--output", output, "--exact"])
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("exact integer-op ONNX model"), text)
        let onnx = try ONNXModel.read(file: output)
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0) })
        func node(named name: String) -> ONNXNode? { onnx.nodes.first { $0.name == name } }
        let deploy = try Deployer.deploy(checkpoint: checkpoint)
        let integer = deploy.nodes.filter(\.isInteger)
        XCTAssertEqual(integer.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        XCTAssertFalse(onnx.nodes.contains { $0.opType == "Conv" || $0.opType == "Gemm" }, "no float conv/linear left")
        for d in integer {
            let main = try XCTUnwrap(node(named: d.name), d.name)
            let codes = try XCTUnwrap(initializers[d.name + ".weight/codes"]).integers!
            if d.op == .conv2d {
                XCTAssertEqual(main.opType, "ConvInteger")
                XCTAssertEqual(codes, d.weightCodes.map(Int64.init), d.name)
            } else {
                XCTAssertEqual(main.opType, "MatMulInteger")
                let (outputs, inputs) = (d.weightShape![0], d.weightShape![1])
                XCTAssertEqual(codes.count, outputs * inputs)
                for o in [0, outputs - 1] { for i in [0, inputs / 2, inputs - 1] {
                    XCTAssertEqual(codes[i * outputs + o], Int64(d.weightCodes[o * inputs + i]), "\(d.name) [\(o), \(i)]")
                } }
            }
            XCTAssertEqual(initializers[main.inputs[2]]!.integers!, [Int64(d.inputQuantizer!.offset)], d.name)
            XCTAssertEqual(initializers[main.inputs[3]]!.integers!, [0], d.name)
            XCTAssertEqual(initializers[d.name + ".bias/codes"]!.integers!, d.biasCodes.map(Int64.init), d.name)
            XCTAssertEqual(initializers[d.name + "/multiplier"]!.floats.map(\.bitPattern), d.multipliers.map(\.bitPattern), d.name)
            // Fake quant puts the bias on the accumulator grid, so there is no residual offset to add.
            XCTAssertEqual(d.biasResidual, [Float](repeating: 0, count: d.outputChannels), d.name)
            XCTAssertNil(initializers[d.name + "/offset"], d.name)
            XCTAssertNil(node(named: d.name + "/add_offset"), d.name)
            XCTAssertEqual(node(named: d.name + "/to_float")?.opType, "Cast")
            if let q = d.output {
                let quantize = try XCTUnwrap(node(named: d.name + "/quantize"))
                XCTAssertEqual(quantize.outputs, [d.name])
                XCTAssertEqual(initializers[quantize.inputs[1]]!.floats, [1], d.name)
                XCTAssertEqual(initializers[quantize.inputs[2]]!.integers!, [Int64(q.offset)], d.name)
                // A fused ReLU clamps at the zero point: Clip(v, 0, 127 − o_y) before the QuantizeLinear.
                if d.fusedActivation == .relu {
                    let clamp = try XCTUnwrap(node(named: d.name + "/clamp"))
                    XCTAssertEqual(initializers[clamp.inputs[1]]!.floats, [0], d.name)
                    XCTAssertEqual(initializers[clamp.inputs[2]]!.floats, [Float(127 - q.offset)], d.name)
                }
            } else {
                XCTAssertEqual(node(named: d.name + "/multiply")?.outputs, [d.name], "float output of \(d.name)")
            }
        }
    }
}
