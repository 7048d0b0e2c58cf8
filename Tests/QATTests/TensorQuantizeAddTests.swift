import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
@testable import QATONNX
import QAT

/// AMCT's `tensor_quantize` on an add (issue 12): the one input `input_index` names gets an INT8
/// grid of its own, the other input stays as it is and the sum stays float, in fake quant and
/// on the INT8 engine alike.
final class TensorQuantizeAddTests: XCTestCase {
    let resnetSpecFile = repositoryPath("Configs/models/resnet-tiny.json")

    /// relu(x) + x: an add whose two inputs differ (input 0 the ReLU, input 1 the image).
    let tinySpec = try! ModelSpec.parse(JSONObject.parse(Data(#"""
        {"name": "tiny-add-one", "input": [1, 2, 2], "layers": [
          {"name": "relu", "type": "relu"},
          {"name": "sum", "type": "add", "inputs": ["relu", "input"]},
          {"name": "flatten", "type": "flatten"},
          {"name": "fc", "type": "linear", "in_features": 4, "out_features": 2}]}
        """#.utf8), file: "tiny.json"))

    /// resnet-tiny's layers in an AMCT PTQ config.json with one tensor_quantize entry on block1_add.
    func ptqConfig(inputIndex: Int, jointQuant: Bool = false) -> String {
        let layer = #"{"quant_enable": true, "activation_quant_params": {"num_bits": 8, "act_algo": "ifmr"}}"#
        let linear = #"{"quant_enable": true, "weight_quant_params": {"num_bits": 8, "channel_wise": false}}"#
        return #"{"version": 1, "batch_num": 2, "activation_offset": true, "joint_quant": \#(jointQuant), "#
            + #""tensor_quantize": [{"layer_name": "block1_add", "input_index": \#(inputIndex), "#
            + #""activation_quant_params": {"num_bits": 8, "act_algo": "hfmg", "num_of_bins": 1024, "asymmetric": true}}], "#
            + #""stem": \#(layer), "block1_conv1": \#(layer), "block1_conv2": \#(layer), "conv2": \#(layer), "fc": \#(linear)}"#
    }

    /// The tiny model with a grid [−2, 127/64] (s = 1/64 exactly, o = 0) on input `inputIndex` of the add.
    func tinyModel(inputIndex: Int) throws -> (Model, StatelessLayer, TensorQuantizer) {
        let model = try Model(spec: tinySpec)
        let add = try XCTUnwrap(model.layer(named: "sum") as? StatelessLayer)
        let quantizer = TensorQuantizer(layerName: "sum", settings: TensorQuantizerSettings(calibration: .default, inputIndex: inputIndex))
        add.inputQuantizer = quantizer
        quantizer.activation.setClipRange(max: 127.0 / 64, min: -2)
        XCTAssertEqual(quantizer.grid(), QuantizationGrid(bits: 8, scale: 1.0 / 64, offset: 0))
        return (model, add, quantizer)
    }

    // MARK: Hand-computed

    /// Input 1 on the grid: rounded to 1/64 (half to even), clamped to [−128, 127] codes; input 0
    /// untouched; the float sum. The engine gives fake quant's sum bit for bit.
    func testOneInputOnItsOwnGridHandComputed() throws {
        let (model, add, quantizer) = try tinyModel(inputIndex: 1)
        let a = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.1, -0.5, 3.0, 1.5 / 64]))
        let b = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.2, -3.0, 0.5, 0.5 / 64]))
        // b → 13/64, −2 (clamped), 32/64, 0 (tie to even); a as it is.
        var operands: [Tensor] = []
        quantizer.collectInput = { operands.append($0) }
        let y = add.forward([a, b], training: false, tape: nil)
        quantizer.collectInput = nil
        XCTAssertEqual(y.value.storage, [Float(0.1) + 13.0 / 64, -2.5, 3.5, 1.5 / 64])
        XCTAssertEqual(operands, [b.value], "only the quantized input reaches calibration")

        // The model: sum = relu(x) + q(x). x: [0.1, −0.5, 3, 1.5/64] → q: 6/64, −32/64, 127/64, 2/64;
        // [0.2, −3, 0.5, 0.5/64] → 13/64, −2, 32/64, 0.
        let x = Tensor(shape: [2, 1, 2, 2], storage: [0.1, -0.5, 3.0, 1.5 / 64, 0.2, -3.0, 0.5, 0.5 / 64])
        let expected: [Float] = [Float(0.1) + 6.0 / 64, -0.5, 3 + 127.0 / 64, 3.5 / 64, Float(0.2) + 13.0 / 64, -2, 1, 0.5 / 64]
        var fakeSum: Tensor?
        _ = model.forward(x, training: false, tape: nil) { if $0 == 1 { fakeSum = $1.value } }
        XCTAssertEqual(fakeSum?.storage, expected)

        // Deployed: the image is read by the ReLU (float input of the add) and by the add's
        // quantized input, so it stays float and the add quantizes it onto its grid itself.
        let deployed = try Deployer.deploy(model: model, source: "tiny")
        XCTAssertEqual(deployed.nodes.map(\.name), ["relu", "sum", "flatten", "fc"])
        XCTAssertEqual(deployed.nodes[1].sharedInputGrid, quantizer.grid())
        XCTAssertEqual(deployed.nodes[1].sharedInputIndex, 1)
        XCTAssertNil(deployed.nodes[1].output, "the sum stays float")
        let engine = try Int8Model(deployed)
        var engineSum: Tensor?
        var codes: [Int8]?
        _ = engine.forward(x, observe: { if $0 == "sum" { engineSum = $1 } }, observeInputCodes: { if $0 == "sum" { codes = $1 } })
        XCTAssertEqual(engineSum?.storage, expected)
        XCTAssertEqual(codes, [6, -32, 127, 2, 13, -128, 32, 0], "input 1's codes, observed as an integer layer's input")

        // The file keeps the grid and its input.
        let file = try makeTemporaryFolder(self) + "/tiny-int8.h5"
        try deployed.write(to: file)
        XCTAssertEqual(try DeployFile.read(from: file), deployed)
        // An index that names no input of the add is one clear error naming the file.
        var damaged = deployed
        damaged.nodes[1].sharedInputIndex = 2
        let bad = try makeTemporaryFolder(self) + "/bad-int8.h5"
        try damaged.write(to: bad)
        XCTAssertThrowsError(try DeployFile.read(from: bad)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("shared_input_index 2 is not an input of this add node"), text)
            XCTAssertTrue(text.contains("bad-int8.h5"), text)
            XCTAssertFalse(text.contains("\n"), "one line: \(text)")
        }
    }

    /// Input 0 (the ReLU) on the grid: its producer reads no other value's grid, so a quantize node
    /// puts it on the add's grid; the engine still gives fake quant's sum bit for bit.
    func testTheOtherInputThroughAQuantizeNode() throws {
        let (model, _, _) = try tinyModel(inputIndex: 0)
        let x = Tensor(shape: [2, 1, 2, 2], storage: [0.1, -0.5, 3.0, 1.5 / 64, 0.2, -3.0, 0.5, 0.5 / 64])
        // q(relu(x)) + x: relu → [0.1, 0, 3, 1.5/64] → 6/64, 0, 127/64, 2/64; [0.2, 0, 0.5, 0.5/64] → 13/64, 0, 32/64, 0.
        let expected: [Float] = [6.0 / 64 + Float(0.1), -0.5, 127.0 / 64 + 3, 3.5 / 64, 13.0 / 64 + Float(0.2), -3, 1, 0.5 / 64]
        var fakeSum: Tensor?
        _ = model.forward(x, training: false, tape: nil) { if $0 == 1 { fakeSum = $1.value } }
        XCTAssertEqual(fakeSum?.storage, expected)
        let deployed = try Deployer.deploy(model: model, source: "tiny")
        XCTAssertEqual(deployed.nodes.map(\.name), ["relu", "quantize:relu", "sum", "flatten", "fc"])
        XCTAssertEqual(deployed.nodes[1].output, deployed.nodes[2].sharedInputGrid)
        XCTAssertEqual(deployed.nodes[2].sharedInputIndex, 0)
        var engineSum: Tensor?
        _ = try Int8Model(deployed).forward(x, observe: { if $0 == "sum" { engineSum = $1 } })
        XCTAssertEqual(engineSum?.storage, expected)
    }

    /// The gradient of the sum reaches the unquantized input whole and the quantized one through
    /// ULQ's straight-through window (zero where the value was clamped).
    func testGradientsOfBothInputs() throws {
        let (_, add, _) = try tinyModel(inputIndex: 1)
        let tape = Tape()
        let a = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.1, -0.5, 3.0, 0.2]), requiresGrad: true)
        let b = Variable(Tensor(shape: [1, 1, 2, 2], storage: [0.2, -3.0, 0.5, 2.5]), requiresGrad: true)
        let y = add.forward([a, b], training: true, tape: tape)
        tape.backward(from: weightedSum(y, weights: [1, 1, 1, 1], tape: tape))
        XCTAssertEqual(a.grad?.storage, [1, 1, 1, 1])
        XCTAssertEqual(b.grad?.storage, [1, 0, 1, 0], "−3 and 2.5 lie outside [−2, 127/64]")
    }

    // MARK: Plans

    /// Both AMCT forms plan input 1 of block1_add; the checkpoint's record keeps the input index.
    func testPlanAndItsRecordKeepTheInputIndex() throws {
        let spec = try ModelSpec.load(file: resnetSpecFile)
        func plan(_ json: String) throws -> QuantizationPlan {
            try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "ptq.json")).resolve(for: spec)
        }
        let ptq = try plan(ptqConfig(inputIndex: 1))
        let add = try XCTUnwrap(ptq.layer(named: "block1_add"))
        XCTAssertEqual(add.rule, "tensor_quantize[0]")
        XCTAssertEqual(add.tensorQuantizer?.inputIndex, 1)
        XCTAssertEqual(add.tensorQuantizer?.calibration.name, "hfmg")
        XCTAssertTrue(ptq.table().contains("input 1 grid, HFMG"), ptq.table())

        let record = ptq.explicitConfig().jsonText(layerOrder: spec.layers.map(\.name))
        XCTAssertTrue(record.contains("\"input_index\": 1"), record)
        XCTAssertFalse(record.contains(ConfigFormat.jointQuantKey), "one input of an add is not joint_quant")
        let reread = try plan(record)
        XCTAssertEqual(reread.layers.map(\.tensorQuantizer), ptq.layers.map(\.tensorQuantizer))
        // Input 0 writes no index (0 when absent, as a max pool's record) and reads back the same.
        let first = try plan(ptqConfig(inputIndex: 0))
        let firstRecord = first.explicitConfig().jsonText(layerOrder: spec.layers.map(\.name))
        XCTAssertFalse(firstRecord.contains("input_index"), firstRecord)
        XCTAssertEqual(try plan(firstRecord).layer(named: "block1_add")?.tensorQuantizer?.inputIndex, 0)
        XCTAssertThrowsError(try plan(#"{"tensor_quantize_calibration": {"block1_add": {"input_index": 2}}, "stem": {}}"#)) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "tensor_quantize_calibration.block1_add.input_index", "\(error)")
        }

        // The proto-text form: IFMR, activation_offset's symmetry; joint_quant with it is refused at the entry's line.
        func simple(_ text: String) throws -> QuantizationPlan {
            try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data(text.utf8), file: "quant.cfg")).resolve(for: spec)
        }
        let cfg = try simple("tensor_quantize { layer_name: \"block1_add\" input_index: 1 }\n")
        XCTAssertEqual(cfg.layer(named: "block1_add")?.tensorQuantizer,
                       TensorQuantizerSettings(calibration: CalibrationMethod(IFMRParameters(asymmetric: true)), inputIndex: 1))
        XCTAssertThrowsError(try simple("joint_quant: true\ntensor_quantize { layer_name: \"block1_add\" input_index: 1 }\n")) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "tensor_quantize.layer_name", "\(error)")
            XCTAssertTrue((error as? InputError)?.message.hasPrefix("line 2, column 1: block1_add is under joint_quant: true") == true, "\(error)")
        }
    }

    /// An add of a constant (a bias, broadcast): its computed input may take a grid, the constant not.
    func testAConstantInputIsRefused() throws {
        let spec = try ModelSpec.parse(JSONObject.parse(Data(#"""
            {"name": "tiny-bias", "input": [1, 2, 2], "layers": [
              {"name": "shift", "type": "constant", "shape": [1]},
              {"name": "shifted", "type": "add", "inputs": ["input", "shift"]},
              {"name": "flatten", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 4, "out_features": 2}]}
            """#.utf8), file: "tiny.json"))
        func plan(_ inputIndex: Int) throws -> QuantizationPlan {
            let json = #"{"tensor_quantize": [{"layer_name": "shifted", "input_index": \#(inputIndex)}], "fc": {}}"#
            return try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "ptq.json")).resolve(for: spec)
        }
        XCTAssertEqual(try plan(0).layer(named: "shifted")?.tensorQuantizer?.inputIndex, 0)
        XCTAssertThrowsError(try plan(1)) { error in
            XCTAssertEqual((error as? InputError)?.keyPath, "tensor_quantize[0].input_index", "\(error)")
            XCTAssertTrue((error as? InputError)?.message.contains("input 1 of shifted is the constant shift") == true, "\(error)")
        }
    }

    // MARK: End to end

    /// resnet-tiny, float-trained briefly, calibrated with tensor_quantize on block1_add's input 1
    /// (the skip path) → deploy → verify PASS, the add's codes of that input checked like a layer's;
    /// QDQ export puts Q/DQ on that input only.
    func testResNetTinyWithAnAddInputCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let float = folder + "/float.h5", ptq = folder + "/ptq.h5", int8 = folder + "/int8.h5", config = folder + "/ptq.json"
        let (trainStatus, trainLog) = try qat(["train", "--config", "Configs/float.json", "--model", resnetSpecFile, "--epochs", "1",
                                               "--train-limit", "640", "--test-limit", "64", "--checkpoint-dir", folder + "/run",
                                               "--output", float])
        XCTAssertEqual(trainStatus, 0, trainLog)
        try ptqConfig(inputIndex: 1).write(toFile: config, atomically: true, encoding: .utf8)
        let (status, log) = try qat(["calibrate", "--config", config, "--model", resnetSpecFile, "--checkpoint", float, "--output", ptq,
                                     "--train-limit", "256", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("block1_add"), log)

        let (model, _) = try Model.load(checkpoint: ptq)
        let quantizer = try XCTUnwrap(model.tensorQuantizers.first)
        XCTAssertEqual(quantizer.settings.inputIndex, 1, "the checkpoint's plan keeps the input")
        let grid = try XCTUnwrap(quantizer.grid())

        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", int8])
        XCTAssertEqual(deployStatus, 0, deployLog)
        XCTAssertTrue(deployLog.contains("tensor_quantize: input 1 as int8 codes on its own grid"), deployLog)
        let add = try XCTUnwrap(try DeployFile.read(from: int8).nodes.first { $0.name == "block1_add" })
        XCTAssertEqual(add.sharedInputGrid, grid)
        XCTAssertEqual(add.sharedInputIndex, 1)

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", int8, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
        let addRow = try XCTUnwrap(verified.split(separator: "\n").first { $0.hasPrefix("block1_add ") }, verified)
        XCTAssertFalse(addRow.contains("FAIL"), String(addRow))

        let onnxFile = folder + "/qdq.onnx"
        let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", onnxFile])
        XCTAssertEqual(exportStatus, 0, exported)
        let onnx = try ONNXModel.read(file: onnxFile)
        let initializers = Dictionary(uniqueKeysWithValues: onnx.initializers.map { ($0.name, $0) })
        let addNode = try XCTUnwrap(onnx.nodes.first { $0.name == "block1_add" })
        let producers = addNode.inputs.map { input in onnx.nodes.first { $0.outputs == [input] } }
        XCTAssertEqual(producers[1]?.opType, "DequantizeLinear")
        XCTAssertEqual(initializers[producers[1]?.inputs[1] ?? ""]?.floats, [grid.scale])
        XCTAssertEqual(initializers[producers[1]?.inputs[2] ?? ""]?.integers, [Int64(grid.offset)])
        XCTAssertNotEqual(producers[0]?.opType, "DequantizeLinear", "input 0 reaches the add as it comes")

        // Input 0 (block1_conv2 with its BN folded, read by the add alone): the conv requantizes
        // straight into the add's grid; verify PASS.
        let ptq0 = folder + "/ptq0.h5", int80 = folder + "/int80.h5", config0 = folder + "/ptq0.json"
        try ptqConfig(inputIndex: 0).write(toFile: config0, atomically: true, encoding: .utf8)
        let (status0, log0) = try qat(["calibrate", "--config", config0, "--model", resnetSpecFile, "--checkpoint", float, "--output", ptq0,
                                       "--train-limit", "256", "--test-limit", "300"])
        XCTAssertEqual(status0, 0, log0)
        let deployed0 = try Deployer.deploy(checkpoint: ptq0)
        try deployed0.write(to: int80)
        let add0 = try XCTUnwrap(deployed0.nodes.first { $0.name == "block1_add" })
        XCTAssertEqual(add0.sharedInputIndex, 0)
        XCTAssertEqual(deployed0.nodes.first { $0.name == "block1_conv2" }?.output, add0.sharedInputGrid)
        let (verifyStatus0, verified0) = try qat(["verify", "--checkpoint", ptq0, "--deploy", int80, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus0, 0, verified0)
        XCTAssertTrue(verified0.contains("PASS"), verified0)
    }
}
