import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATONNX
import QAT

/// AMCT's `joint_quant` (issue 12): the two operands of every eltwise add share one INT8 grid,
/// in fake quant and on the INT8 engine, which then adds exactly what fake quant adds.
final class JointQuantTests: XCTestCase {
    let resnetSpecFile = repositoryPath("Configs/models/resnet-tiny.json")

    /// x + x, then a classifier: the smallest model with an eltwise add.
    let tinySpec = try! ModelSpec.parse(JSONObject.parse(Data(#"""
        {"name": "tiny-add", "input": [1, 2, 2], "layers": [
          {"name": "sum", "type": "add", "inputs": ["input", "input"]},
          {"name": "flatten", "type": "flatten"},
          {"name": "fc", "type": "linear", "in_features": 4, "out_features": 2}]}
        """#.utf8), file: "tiny.json"))

    /// resnet-tiny's layers in an AMCT PTQ config.json, with `joint_quant` as given.
    func ptqConfig(jointQuant: Bool, activationOffset: Bool = true) -> String {
        let layer = #"{"quant_enable": true, "activation_quant_params": {"num_bits": 8, "act_algo": "ifmr"}}"#
        let linear = #"{"quant_enable": true, "weight_quant_params": {"num_bits": 8, "channel_wise": false}}"#
        return #"{"version": 1, "batch_num": 2, "activation_offset": \#(activationOffset), "joint_quant": \#(jointQuant), "#
            + #""stem": \#(layer), "block1_conv1": \#(layer), "block1_conv2": \#(layer), "conv2": \#(layer), "fc": \#(linear)}"#
    }

    // MARK: Hand-computed

    /// Grid [−2, 127/64]: s = (127/64 + 2)/255 = 1/64 exactly, o = 0. Each operand is rounded to
    /// 1/64 (half to even) and clamped to [−128, 127] codes before the float sum.
    func testSharedGridFakeQuantizesBothOperandsBeforeTheSum() throws {
        let model = try Model(spec: tinySpec)
        let add = try XCTUnwrap(model.layer(named: "sum") as? StatelessLayer)
        let quantizer = TensorQuantizer(layerName: "sum", settings: TensorQuantizerSettings(calibration: .default))
        add.inputQuantizer = quantizer
        quantizer.activation.setClipRange(max: 127.0 / 64, min: -2)
        XCTAssertEqual(quantizer.grid(), QuantizationGrid(bits: 8, scale: 1.0 / 64, offset: 0))

        let a = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.1, -0.5, 3.0, 1.5 / 64]))
        let b = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.2, -3.0, 0.5, 0.5 / 64]))
        // a → 6/64, −32/64, 127/64 (clamped), 2/64 (tie to even); b → 13/64, −2 (clamped), 32/64, 0 (tie to even).
        let y = add.forward([a, b], training: false, tape: nil)
        XCTAssertEqual(y.value.storage, [19.0 / 64, -2.5, 159.0 / 64, 2.0 / 64])
        // Without the quantizer the add is the plain float sum.
        add.inputQuantizer = nil
        XCTAssertEqual(add.forward([a, b], training: false, tape: nil).value.storage, [0.1 + 0.2, -3.5, 3.5, 2.0 / 64])
        add.inputQuantizer = quantizer

        // Deployed: the input is quantized once onto the shared grid (its only readers are the
        // add's two operands), and the engine's add equals fake quant's bit for bit.
        let deployed = try Deployer.deploy(model: model, source: "tiny")
        XCTAssertEqual(deployed.nodes.map(\.name), ["quantize:input", "sum", "flatten", "fc"])
        XCTAssertEqual(deployed.nodes[0].output, quantizer.grid())
        XCTAssertEqual(deployed.nodes[1].sharedInputGrid, quantizer.grid())
        let x = Tensor(shape: [2, 1, 2, 2], storage: [0.1, -0.5, 3.0, 1.5 / 64, 0.2, -3.0, 0.5, 0.5 / 64])
        var engineSum: Tensor?
        _ = try Int8Model(deployed).forward(x, observe: { if $0 == "sum" { engineSum = $1 } })
        XCTAssertEqual(engineSum?.storage, [12.0 / 64, -1, 254.0 / 64, 4.0 / 64, 26.0 / 64, -4, 1, 0])
        var fakeSum: Tensor?
        _ = model.forward(x, training: false, tape: nil) { if $0 == 0 { fakeSum = $1.value } }
        XCTAssertEqual(fakeSum?.storage, engineSum?.storage)

        // The file keeps the shared grid.
        let file = try makeTemporaryFolder(self) + "/tiny-int8.h5"
        try deployed.write(to: file)
        XCTAssertEqual(try DeployFile.read(from: file).nodes[1].sharedInputGrid, quantizer.grid())
    }

    /// Calibration runs once on both operands' values together.
    func testTheSharedGridIsCalibratedOnBothOperandsTogether() throws {
        let spec = try ModelSpec.load(file: resnetSpecFile)
        let model = try Model(spec: spec, seed: 5)
        let plan = try RetrainConfig.parse(JSONObject.parse(Data(ptqConfig(jointQuant: true).utf8), file: "ptq.json")).resolve(for: spec)
        model.applyQuantization(plan)
        let add = try XCTUnwrap(model.tensorQuantizers.first)
        let batch = try fashionMNIST(.train, count: 16).batch(Array(0..<16)[...]).images

        // The operands a float forward of the other quantizers' calibration pass gives the add.
        let twin = try Model(spec: spec, seed: 5)
        twin.applyQuantization(plan)
        var operands: [Tensor] = []
        twin.tensorQuantizers[0].collectInput = { operands.append($0) }
        _ = twin.forward(batch, training: false, tape: nil)
        XCTAssertEqual(operands.count, 2)

        let calibrated = try model.calibrate(on: [batch])
        XCTAssertEqual(calibrated.first, "block1_add")
        let expected = try IFMRParameters().with(["asymmetric": .flag(true)])
            .startingClipRange(batches: operands, layer: "block1_add")
        XCTAssertEqual(add.activation.clipMax.value.storage[0], expected.clipMax)
        XCTAssertEqual(add.activation.clipMin.value.storage[0], expected.clipMin)
        // Not the range of either operand alone.
        let first = try IFMRParameters().with(["asymmetric": .flag(true)]).startingClipRange(batches: [operands[0]], layer: "a")
        XCTAssertNotEqual(first.clipMax, expected.clipMax)
    }

    // MARK: Configs and plans

    func testBothAMCTFormsPlanASharedGridForEachEltwiseAdd() throws {
        let spec = try ModelSpec.load(file: resnetSpecFile)
        func plan(_ json: String) throws -> QuantizationPlan {
            try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "ptq.json")).resolve(for: spec)
        }
        let joint = try plan(ptqConfig(jointQuant: true, activationOffset: false))
        let add = try XCTUnwrap(joint.layer(named: "block1_add"))
        XCTAssertEqual(add.rule, "joint_quant")
        XCTAssertFalse(add.isQuantized, "an add has no weights: it is not a quantized layer")
        let ifmr = try XCTUnwrap(add.tensorQuantizer?.calibration.calibrator as? IFMRParameters)
        XCTAssertFalse(ifmr.asymmetric, "activation_offset false: a symmetric IFMR grid")
        XCTAssertEqual(joint.layers.filter { $0.tensorQuantizer != nil }.map(\.name), ["block1_add"])
        XCTAssertTrue(joint.table().contains("shared input grid, IFMR"), joint.table())
        XCTAssertTrue(try plan(ptqConfig(jointQuant: false)).layers.allSatisfy { $0.tensorQuantizer == nil })

        // The proto-text form: activation_offset (default true) decides the symmetry.
        let cfg = try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data("joint_quant: true\n".utf8), file: "quant.cfg")).resolve(for: spec)
        XCTAssertEqual((cfg.layer(named: "block1_add")?.tensorQuantizer?.calibration.calibrator as? IFMRParameters)?.asymmetric, true)
        let without = try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data("joint_quant: false\n".utf8), file: "quant.cfg"))
        XCTAssertNil(without.jointQuantCalibration)

        // A checkpoint's record of the plan rebuilds the same shared grid; a plan without one writes no key.
        let record = joint.explicitConfig().jsonText(layerOrder: spec.layers.map(\.name))
        XCTAssertTrue(record.contains("\"\(ConfigFormat.jointQuantKey)\": {"), record)
        let reread = try plan(record)
        XCTAssertEqual(reread.layers.map(\.tensorQuantizer), joint.layers.map(\.tensorQuantizer))
        XCTAssertEqual(reread.layers.map(\.quantizer), joint.layers.map(\.quantizer))
        XCTAssertFalse(try plan(ptqConfig(jointQuant: false)).explicitConfig().jsonText().contains(ConfigFormat.jointQuantKey))
        // The record's key is checked like a calibration section.
        XCTAssertThrowsError(try plan(#"{"joint_quant_calibration": {"act_algo": "ifmr", "bins": 3}, "stem": {}}"#)) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "joint_quant_calibration.bins", "\(error)")
        }
    }

    // MARK: End to end

    /// resnet-tiny, float-trained briefly, calibrated with joint_quant → deploy → verify PASS, the
    /// add's codes included; block1_conv2 requantizes straight into the add's grid.
    func testResNetTinyWithJointQuantCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let float = folder + "/float.h5", ptq = folder + "/ptq.h5", int8 = folder + "/int8.h5", config = folder + "/ptq.json"
        let (trainStatus, trainLog) = try qat(["train", "--config", "Configs/float.json", "--model", resnetSpecFile, "--epochs", "1",
                                               "--train-limit", "640", "--test-limit", "64", "--checkpoint-dir", folder + "/run",
                                               "--output", float])
        XCTAssertEqual(trainStatus, 0, trainLog)
        try ptqConfig(jointQuant: true).write(toFile: config, atomically: true, encoding: .utf8)
        let (status, log) = try qat(["calibrate", "--config", config, "--model", resnetSpecFile, "--checkpoint", float, "--output", ptq,
                                     "--train-limit", "256", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("block1_add"), log)

        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", int8])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let deployed = try DeployFile.read(from: int8)
        let add = try XCTUnwrap(deployed.nodes.first { $0.name == "block1_add" })
        let shared = try XCTUnwrap(add.sharedInputGrid)
        XCTAssertEqual(deployed.nodes.first { $0.name == "block1_conv2" }?.output, shared)
        let (model, _) = try Model.load(checkpoint: ptq)
        XCTAssertEqual(model.tensorQuantizers.first?.grid(), shared)

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", int8, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
        XCTAssertTrue(verified.contains("block1_add"), verified)

        // QDQ ONNX: the add reads both operands through DequantizeLinear with the one shared grid.
        let onnxFile = folder + "/qdq.onnx"
        let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", onnxFile])
        XCTAssertEqual(exportStatus, 0, exported)
        let onnx = try ONNXModel.read(file: onnxFile)
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0) })
        let addNode = try XCTUnwrap(onnx.nodes.first { $0.name == "block1_add" })
        XCTAssertEqual(addNode.opType, "Add")
        XCTAssertEqual(addNode.inputs.count, 2)
        for input in addNode.inputs {
            let dequantize = try XCTUnwrap(onnx.nodes.first { $0.outputs == [input] }, input)
            XCTAssertEqual(dequantize.opType, "DequantizeLinear")
            XCTAssertEqual(initializers[dequantize.inputs[1]]?.floats, [shared.scale])
            XCTAssertEqual(initializers[dequantize.inputs[2]]?.integers, [Int64(shared.offset)])
        }
    }
}
