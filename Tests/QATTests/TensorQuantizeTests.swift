import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
@testable import QATONNX
import QAT

/// AMCT's `tensor_quantize` (issue 12): a max pool's input gets an INT8 grid of its own; fake
/// quant pools the fake-quantized values, the INT8 engine pools the codes (max commutes with the
/// monotone quantizer) and the next layer requantizes them from that grid.
final class TensorQuantizeTests: XCTestCase {
    let lenetSpecFile = repositoryPath("Configs/models/lenet5.json")

    /// Grid [−2, 127/64] (s = 1/64, o = 0) on a 2×2 max pool's input: the pool of the rounded values.
    func testPoolOfTheFakeQuantizedInputHandComputed() throws {
        let spec = try ModelSpec.parse(JSONObject.parse(Data(#"""
            {"name": "tiny-pool", "input": [1, 2, 2], "layers": [
              {"name": "pool", "type": "maxpool2d", "kernel_size": 2},
              {"name": "flatten", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 1, "out_features": 2}]}
            """#.utf8), file: "tiny.json"))
        let model = try Model(spec: spec)
        let pool = try XCTUnwrap(model.layer(named: "pool") as? StatelessLayer)
        let quantizer = TensorQuantizer(layerName: "pool", settings: TensorQuantizerSettings(calibration: .default))
        pool.inputQuantizer = quantizer
        quantizer.activation.setClipRange(max: 127.0 / 64, min: -2)
        // Two samples: max 0.1 → 6/64; max 3.0 → clamped to 127/64; ties 1.5/64 → 2/64 (half to even).
        let x = Tensor(shape: [3, 1, 2, 2], storage: [0.1, -0.5, 0.05, 0.07, 3.0, 1.0, -3.0, 0.0, 1.5 / 64, 0.5 / 64, -1, 0.01])
        let y = pool.forward([Variable(x)], training: false, tape: nil)
        XCTAssertEqual(y.value.storage, [6.0 / 64, 127.0 / 64, 2.0 / 64])

        // Deployed: the input is quantized onto the pool's grid, pooled on codes; bit for bit fake quant's.
        let deployed = try Deployer.deploy(model: model, source: "tiny")
        XCTAssertEqual(deployed.nodes.map(\.name), ["quantize:input", "pool", "flatten", "fc"])
        XCTAssertEqual(deployed.nodes[1].sharedInputGrid, quantizer.grid())
        XCTAssertEqual(deployed.nodes[1].output, quantizer.grid(), "codes out, on the pool's grid")
        var engineOutput: Tensor?
        _ = try Int8Model(deployed).forward(x, observe: { if $0 == "pool" { engineOutput = $1 } })
        XCTAssertEqual(engineOutput?.storage, y.value.storage)
        let file = try makeTemporaryFolder(self) + "/tiny-int8.h5"
        try deployed.write(to: file)
        XCTAssertEqual(try DeployFile.read(from: file), deployed, "the file keeps the pool's grid")
    }

    /// The plan's record (checkpoints) rebuilds the same input grids.
    func testTheRecordKeepsEachPoolsGrid() throws {
        let spec = try ModelSpec.load(file: lenetSpecFile)
        let plan = try RetrainConfig.load(file: repositoryPath("Configs/amct/simple-uniform.cfg")).resolve(for: spec)
        let record = plan.explicitConfig().jsonText(layerOrder: spec.layers.map(\.name))
        XCTAssertTrue(record.contains("\"\(ConfigFormat.tensorQuantizeKey)\": {"), record)
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(record.utf8), file: "record")).resolve(for: spec)
        XCTAssertEqual(reread.layers.map(\.tensorQuantizer), plan.layers.map(\.tensorQuantizer))
        // The record states every fixed_min, so only fixedMinIsDefault may differ.
        XCTAssertEqual(reread.layers.map(\.quantizer), plan.layers.map { layer in
            layer.quantizer.map { var settings = $0; settings.fixedMinIsDefault = false; return settings }
        })
        XCTAssertFalse(try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-plain.json")).resolve(for: spec)
            .explicitConfig().jsonText().contains(ConfigFormat.tensorQuantizeKey))
    }

    /// LeNet-5 with the manual's IFMR example (tensor_quantize on pool1): calibrate → deploy →
    /// verify PASS, pool1's input codes checked like a layer's; QDQ export puts Q/DQ before MaxPool.
    func testLeNetWithTensorQuantizeCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5", int8 = folder + "/int8.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/amct/ptq-ifmr.json", "--model", lenetSpecFile,
                                     "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                     "--train-limit", "256", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("pool1"), log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", int8])
        XCTAssertEqual(deployStatus, 0, deployLog)
        XCTAssertTrue(deployLog.contains("tensor_quantize: input as int8 codes on its own grid"), deployLog)
        let (model, _) = try Model.load(checkpoint: ptq)
        let grid = try XCTUnwrap(model.tensorQuantizers.first?.grid())
        let pool = try XCTUnwrap(try DeployFile.read(from: int8).nodes.first { $0.name == "pool1" })
        XCTAssertEqual(pool.sharedInputGrid, grid)

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", int8, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
        let poolRow = try XCTUnwrap(verified.split(separator: "\n").first { $0.hasPrefix("pool1 ") })
        XCTAssertTrue(poolRow.contains("100.0000%"), String(poolRow))

        let onnxFile = folder + "/qdq.onnx"
        let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", onnxFile])
        XCTAssertEqual(exportStatus, 0, exported)
        let onnx = try ONNXModel.read(file: onnxFile)
        let maxPool = try XCTUnwrap(onnx.nodes.first { $0.name == "pool1" })
        let dequantize = try XCTUnwrap(onnx.nodes.first { $0.outputs == [maxPool.inputs[0]] })
        XCTAssertEqual(dequantize.opType, "DequantizeLinear")
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0) })
        XCTAssertEqual(initializers[dequantize.inputs[1]]?.floats, [grid.scale])
    }
}
