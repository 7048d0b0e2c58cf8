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
@testable import QATCLI

/// INT8 deployment (issue 5): BN folding, the deploy file, the INT8 engine and the
/// fake-quant ≡ INT8 contract on a QAT LeNet-5 and on the residual resnet-tiny.
final class DeployTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    let lenetSpecFile = repositoryPath("Configs/models/lenet5.json")
    let resnetSpecFile = repositoryPath("Configs/models/resnet-tiny.json")

    func settings(spec: String, initCheckpoint: String?, trainLimit: Int, epochs: Int, learningRate: Float,
                  directory: String) -> RunSettings {
        var s = RunSettings()
        s.modelSpec = spec
        s.initCheckpoint = initCheckpoint
        s.trainLimit = trainLimit
        s.testLimit = 64
        s.batchSize = 64
        s.learningRate = learningRate
        s.setEpochs(epochs)
        s.checkpointDirectory = directory
        return s
    }

    /// A short run (QAT when `quantized`) to its final checkpoint.
    func train(_ s: RunSettings, quantized: Bool) throws -> String {
        let spec = try ModelSpec.load(file: s.modelSpec)
        let config = quantized
            ? try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "retrain.json")) : nil
        let job = try TrainingRun(configFile: "retrain.json", config: config, settings: s)
        job.log = { _ in }
        let train = try fashionMNIST(.train, count: s.trainLimit!)
        let test = try fashionMNIST(.test, count: s.testLimit!)
        try job.prepareFreshStart(train: train)
        return try job.train(on: train, test: test)!
    }

    func assertWithinContract(_ report: DeployVerification, file: StaticString = #filePath, line: UInt = #line) {
        for layer in report.layers {
            XCTAssertGreaterThan(layer.count, 0, layer.name, file: file, line: line)
            XCTAssertGreaterThanOrEqual(layer.equalFraction, 0.999, "\(layer.name)\n\(report.table())", file: file, line: line)
            XCTAssertLessThanOrEqual(layer.maxDifference, 1, "\(layer.name)\n\(report.table())", file: file, line: line)
            XCTAssertGreaterThanOrEqual(layer.equalFractionAlone, 0.999, "\(layer.name) alone\n\(report.table())", file: file, line: line)
            XCTAssertLessThanOrEqual(layer.maxDifferenceAlone, 1, "\(layer.name) alone\n\(report.table())", file: file, line: line)
        }
        XCTAssertGreaterThanOrEqual(report.predictionAgreement, 0.999, report.table(), file: file, line: line)
        XCTAssertTrue(report.passed, report.table(), file: file, line: line)
    }

    // MARK: BatchNorm folding

    /// resnet-tiny with fake quantizers, calibrated, and BN statistics / γ set by hand:
    /// per BN, channel 0 has γ = 0, odd channels γ < 0, and the running statistics are far
    /// from (0, 1).
    func resnetWithHandSetBatchNorm() throws -> (Model, Dataset) {
        let spec = try ModelSpec.load(file: resnetSpecFile)
        let model = try Model(spec: spec, seed: 3)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json"))
        model.applyQuantization(try config.resolve(for: spec))
        var rng = SeededGenerator(seed: 11)
        for bn in model.batchNormLayers {
            let c = bn.attributes.features
            for ch in 0..<c {
                let magnitude = Float.random(in: 0.5...2, using: &rng)
                bn.gamma.value.storage[ch] = ch == 0 ? 0 : (ch % 2 == 1 ? -magnitude : magnitude)
                bn.beta.value.storage[ch] = Float.random(in: -0.5...0.5, using: &rng)
                bn.statistics.mean.storage[ch] = Float.random(in: -0.3...0.3, using: &rng)
                bn.statistics.variance.storage[ch] = Float.random(in: 0.05...3, using: &rng)
            }
        }
        let data = try fashionMNIST(.test, count: 256)
        try model.calibrate(on: [data.batch(Array(0..<128)[...]).images])
        return (model, data)
    }

    func testBatchNormFoldingKeepsEvalOutputsWithZeroAndNegativeGamma() throws {
        let (model, data) = try resnetWithHandSetBatchNorm()
        let deployed = try Deployer.deploy(model: model, source: "test")
        // Every BN folded into its quantized conv: no float BN node is left.
        XCTAssertFalse(deployed.nodes.contains { $0.op == .batchnorm2d })
        let stem = try XCTUnwrap(deployed.nodes.first { $0.name == "stem" })
        XCTAssertEqual(stem.fused, ["stem_bn"])
        let bn = model.layer(named: "stem_bn") as! BatchNorm2DLayer
        // Codes are the ARQ codes of the unfolded weight (zero for γ = 0), the sign sits in the scale.
        let conv = model.layer(named: "stem") as! Conv2DLayer
        let (codes, rowScales) = Deployer.weightCodes(conv.weight.value, quantizer: conv.quantizer as! FakeQuantizer)
        let perChannel = codes.count / 8
        XCTAssertEqual(Array(stem.weightCodes[0..<perChannel]), [Int8](repeating: 0, count: perChannel))
        XCTAssertEqual(Array(stem.weightCodes[perChannel...]), Array(codes[perChannel...]))
        for ch in 1..<8 {
            let k = bn.gamma.value.storage[ch] / (bn.statistics.variance.storage[ch] + 1e-5).squareRoot()
            XCTAssertEqual(stem.weightScales[ch], rowScales[ch] * k, accuracy: 1e-6 * abs(rowScales[ch] * k))
            XCTAssertEqual(stem.weightScales[ch] < 0, ch % 2 == 1)
        }

        // Each folded conv, run on the integer kernels with the fake-quant model's own input codes
        // and dequantized, equals conv + BN of the eval-mode fake-quant model to float tolerance.
        let batch = data.batch(Array(0..<256)[...]).images
        var fake: [String: Tensor] = [:]
        var inputs: [String: [Float]] = [:]
        for q in model.fakeQuantizers { q.collectInput = { inputs[q.layerName] = $0.storage } }
        _ = model.forward(batch, training: false, tape: nil) { fake[model.layers[$0].name] = $1.value }
        for q in model.fakeQuantizers { q.collectInput = nil }
        for (convName, bnName) in [("stem", "stem_bn"), ("block1_conv1", "block1_bn1"), ("block1_conv2", "block1_bn2"), ("conv2", "bn2")] {
            let node = try XCTUnwrap(deployed.nodes.first { $0.name == convName })
            XCTAssertEqual(node.fused.first, bnName)
            let qd = try XCTUnwrap(node.inputQuantizer)
            let expected = try XCTUnwrap(fake[bnName])
            let x = try XCTUnwrap(inputs[convName])
            let spec = (model.layer(named: convName) as! Conv2DLayer).convolution
            let inShape = [spec.inputChannels, Int((Double(x.count / 256 / spec.inputChannels)).squareRoot())]
            let g = ConvGeometry(batch: 256, channels: inShape[0], height: inShape[1], width: inShape[1],
                                 outputChannels: spec.outputChannels, kernel: spec.kernel.height, stride: spec.stride.height,
                                 padding: spec.padding.top)
            let scales = node.weightScales.map { qd.scale * $0 }
            let y = Int8Kernels.conv2dDequantized(Int8Kernels.quantize(x, qd), g, inputZeroPoint: qd.zeroPoint, weights: node.weightCodes,
                                                  bias: node.biasCodes, scales: scales,
                                                  offsets: zip(node.biasResidual, scales).map { $0 * $1 })
            XCTAssertEqual(y.count, expected.count)
            let scale = max(expected.maxAbs(), 1e-3)
            var worst: Float = 0
            for i in 0..<y.count { worst = max(worst, abs(y[i] - expected.storage[i])) }
            XCTAssertLessThan(worst / scale, 1e-5, "\(convName)+\(bnName): folded INT8 output differs from conv + BN by \(worst) (max |y| \(scale))")
            // γ = 0: channel 0 is the constant β.
            let plane = expected.shape[2] * expected.shape[3]
            let beta = (model.layer(named: bnName) as! BatchNorm2DLayer).beta.value.storage[0]
            for n in 0..<4 { for i in 0..<plane { XCTAssertEqual(y[n * expected.shape[1] * plane + i], beta, accuracy: 1e-6) } }
        }

        // The engine's own outputs of the folded layers that stay float (they feed the add and the
        // average pool) agree too, up to the rare one-code differences of their input codes.
        let engine = try Int8Model(deployed)
        var int8: [String: Tensor] = [:]
        _ = engine.forward(batch, observe: { int8[$0] = $1 })
        for name in ["stem_bn", "block1_bn2", "bn2"] {
            let (a, b) = (try XCTUnwrap(fake[name]), try XCTUnwrap(int8[name], name))
            XCTAssertEqual(a.shape, b.shape)
            let tolerance = 1e-5 * max(a.maxAbs(), 1e-3)
            var close = 0
            for i in 0..<a.count where abs(a.storage[i] - b.storage[i]) <= tolerance { close += 1 }
            XCTAssertGreaterThan(Double(close) / Double(a.count), 0.99, name)
        }
        // block1_conv1 + bn1 + relu1 requantize into block1_conv2's codes: still within the contract.
        assertWithinContract(DeployVerification.run(model: model, engine: engine, data: data))
    }

    // MARK: The contract on trained models

    /// The acceptance test on LeNet-5: a short QAT run from the shipped float checkpoint, deploy,
    /// verify on 2000 test images; INT8 accuracy within 0.1 pp of fake quant; identical logits on
    /// every kernel path.
    func testQATLeNetDeploysWithinTheContract() throws {
        let qat = try train(settings(spec: lenetSpecFile, initCheckpoint: repositoryPath("Checkpoints/lenet5-float.h5"),
                                     trainLimit: 640, epochs: 1, learningRate: 0.01, directory: folder + "/qat"), quantized: true)
        let deployFile = folder + "/lenet-int8.h5"
        try deploy(checkpoint: qat, output: deployFile)
        let deployed = try DeployFile.read(from: deployFile)
        XCTAssertEqual(deployed, try Deployer.deploy(checkpoint: qat), "the file round-trips")
        XCTAssertEqual(deployed.nodes.map(\.name),
                       ["quantize:input", "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "fc3"])
        XCTAssertEqual(deployed.nodes.filter { $0.fusedActivation == .relu }.map(\.name), ["conv1", "conv2", "fc1", "fc2"])
        XCTAssertNil(deployed.nodes.last!.output, "fc3's logits are dequantized")

        let test = try fashionMNIST(.test, count: 2000)
        let report = try DeployVerification.run(checkpoint: qat, deployFile: deployFile, data: test)
        assertWithinContract(report)
        XCTAssertEqual(report.layers.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        XCTAssertEqual(report.int8Accuracy, report.fakeQuantAccuracy, accuracy: 0.001, report.table())
        let engine = try Int8Model.load(deployFile: deployFile)
        XCTAssertEqual(Evaluator.evaluate(engine, on: test).accuracy, report.int8Accuracy)

        let batch = test.batch(Array(0..<100)[...]).images
        let saved = Int8Kernels.activePath
        defer { Int8Kernels.activePath = saved }
        var logits: [[UInt32]] = []
        for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
            Int8Kernels.activePath = path
            logits.append(engine.forward(batch).storage.map(\.bitPattern))
        }
        XCTAssertTrue(logits.allSatisfy { $0 == logits[0] }, "kernel paths disagree")
    }

    /// INT16 layers deploy as float layers that simulate their quantizers: INT8 engine and fake
    /// quant agree on every prediction, and the INT8 layers still meet the code contract.
    func testINT16LayerDeploysAsExactFloatSimulation() throws {
        let spec = try ModelSpec.load(file: lenetSpecFile)
        let json = createDefaultConfig(for: spec).replacingOccurrences(
            of: "\"conv2\": {\n    \"retrain_enable\": true,\n    \"retrain_data_config\": {\n      \"algo\": \"ulq_quantize\",\n      \"dst_type\": \"INT8\"",
            with: "\"conv2\": {\n    \"retrain_enable\": true,\n    \"retrain_data_config\": {\n      \"algo\": \"ulq_quantize\",\n      \"dst_type\": \"INT16\"")
        let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "retrain.json"))
        XCTAssertEqual(try config.resolve(for: spec).layer(named: "conv2")?.quantizer?.activationType, .int16)
        let s = settings(spec: lenetSpecFile, initCheckpoint: repositoryPath("Checkpoints/lenet5-float.h5"),
                         trainLimit: 320, epochs: 1, learningRate: 0.01, directory: folder + "/int16")
        let job = try TrainingRun(configFile: "retrain.json", config: config, settings: s)
        job.log = { _ in }
        let train = try fashionMNIST(.train, count: 320)
        try job.prepareFreshStart(train: train)
        let checkpoint = try job.train(on: train, test: try fashionMNIST(.test, count: 64))!
        let deployFile = folder + "/int16.h5"
        try deploy(checkpoint: checkpoint, output: deployFile)
        let conv2 = try XCTUnwrap(DeployFile.read(from: deployFile).nodes.first { $0.name == "conv2" })
        XCTAssertFalse(conv2.isInteger)
        XCTAssertEqual(conv2.inputFakeQuantization?.bits, 16)
        let report = try DeployVerification.run(checkpoint: checkpoint, deployFile: deployFile, data: try fashionMNIST(.test, count: 1000))
        XCTAssertEqual(report.layers.map(\.name), ["conv1", "fc1", "fc2", "fc3"])
        assertWithinContract(report)
        XCTAssertEqual(report.int8Accuracy, report.fakeQuantAccuracy, accuracy: 0.001, report.table())
    }

    /// The residual model: float training from random init and a short QAT run on a few hundred
    /// images, then verify (BN folded into every conv, a float residual add, an average pool).
    func testResidualModelDeploysWithinTheContract() throws {
        let float = try train(settings(spec: resnetSpecFile, initCheckpoint: nil, trainLimit: 384, epochs: 2,
                                       learningRate: 0.05, directory: folder + "/float"), quantized: false)
        let qat = try train(settings(spec: resnetSpecFile, initCheckpoint: float, trainLimit: 384, epochs: 1,
                                     learningRate: 0.01, directory: folder + "/qat"), quantized: true)
        let deployFile = folder + "/resnet-int8.h5"
        try deploy(checkpoint: qat, output: deployFile)
        let deployed = try DeployFile.read(from: deployFile)
        let byName = Dictionary(uniqueKeysWithValues: deployed.nodes.map { ($0.name, $0) })
        XCTAssertEqual(byName["block1_conv1"]?.fused, ["block1_bn1", "block1_relu1"])
        XCTAssertNotNil(byName["block1_conv1"]?.output, "requantized into block1_conv2's codes")
        XCTAssertNil(byName["stem"]?.output, "stem feeds the add too, so it dequantizes")
        XCTAssertNil(byName["block1_add"]?.output, "the add runs in float")
        XCTAssertEqual(byName["quantize:block1_add"]?.produces, "block1_relu2", "… and is quantized once for conv2, ReLU as saturation")
        XCTAssertEqual(byName["pool1"]?.output, byName["conv2"]?.inputQuantizer, "max-pool on codes")

        let report = try DeployVerification.run(checkpoint: qat, deployFile: deployFile, data: fashionMNIST(.test, count: 500))
        assertWithinContract(report)
        XCTAssertEqual(report.layers.map(\.name), ["stem", "block1_conv1", "block1_conv2", "conv2", "fc"])
    }

    /// ReLU6 end to end: a small model with ReLU6 fused into an integer conv and an integer
    /// linear layer (saturation at the zero point and at the code of 6.0), into a quantize node
    /// after a float residual add, and as a float op, trains with QAT, deploys and meets the
    /// same contract.
    func testReLU6ModelDeploysWithinTheContract() throws {
        let specFile = folder + "/relu6.json"
        try """
            {"name": "relu6-net", "input": [1, 28, 28], "layers": [
              {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},
              {"name": "relu1", "type": "relu6"},
              {"name": "pool1", "type": "maxpool2d", "kernel_size": 2},
              {"name": "conv2", "type": "conv2d", "in_channels": 6, "out_channels": 16, "kernel_size": 5},
              {"name": "relu2", "type": "relu6"},
              {"name": "conv3", "type": "conv2d", "in_channels": 16, "out_channels": 16, "kernel_size": 3, "padding": 1},
              {"name": "add", "type": "add", "inputs": ["conv3", "relu2"]},
              {"name": "relu3", "type": "relu6"},
              {"name": "pool2", "type": "maxpool2d", "kernel_size": 2},
              {"name": "flatten", "type": "flatten"},
              {"name": "fc1", "type": "linear", "in_features": 400, "out_features": 64},
              {"name": "relu4", "type": "relu6"},
              {"name": "fc2", "type": "linear", "in_features": 64, "out_features": 10}]}
            """.write(toFile: specFile, atomically: true, encoding: .utf8)
        let float = try train(settings(spec: specFile, initCheckpoint: nil, trainLimit: 384, epochs: 2,
                                       learningRate: 0.05, directory: folder + "/float"), quantized: false)
        // Short float training leaves every activation below 4; larger conv1 and fc1 weights make
        // ReLU6 saturate often, so the clamp at the code of 6.0 is really exercised.
        let (floatModel, _) = try Model.load(checkpoint: float)
        for (name, factor) in [("conv1", Float(4)), ("fc1", 5)] {
            let layer = floatModel.layer(named: name) as! WeightedLayer
            for variable in [layer.weight] + (layer.bias.map { [$0] } ?? []) {
                variable.value.storage = variable.value.storage.map { $0 * factor }
            }
        }
        let scaled = folder + "/float-scaled.h5"
        try floatModel.checkpointFile().write(to: scaled)
        let qat = try train(settings(spec: specFile, initCheckpoint: scaled, trainLimit: 384, epochs: 1,
                                     learningRate: 0.01, directory: folder + "/qat"), quantized: true)
        let deployFile = folder + "/relu6-int8.h5"
        try deploy(checkpoint: qat, output: deployFile)
        let deployed = try DeployFile.read(from: deployFile)
        XCTAssertEqual(deployed, try Deployer.deploy(checkpoint: qat), "the file round-trips")
        let byName = Dictionary(uniqueKeysWithValues: deployed.nodes.map { ($0.name, $0) })
        XCTAssertEqual(byName["conv1"]?.fusedActivation, .relu6)
        XCTAssertEqual(byName["conv1"]?.fused, ["relu1"])
        XCTAssertEqual(byName["fc1"]?.fusedActivation, .relu6)
        XCTAssertEqual(byName["quantize:add"]?.fusedActivation, .relu6, "the float add is quantized once, ReLU6 as saturation")
        XCTAssertEqual(byName["relu2"]?.op, .relu6, "read by conv3 and the add: a float ReLU6")
        XCTAssertNil(byName["relu2"]?.output)

        // The saturation at 6 is exercised: some ReLU6 outputs of the fake-quant model are exactly 6.
        let test = try fashionMNIST(.test, count: 500)
        let (model, _) = try Model.load(checkpoint: qat)
        var saturated: [String: Int] = [:]
        _ = model.forward(test.batch(Array(0..<200)[...]).images, training: false, tape: nil) { index, y in
            let layer = model.spec.layers[index]
            if layer.kind == .relu6 { saturated[layer.name] = y.value.storage.filter { $0 == 6 }.count }
        }
        XCTAssertGreaterThan(saturated["relu1"] ?? 0, 0, "relu1 never reaches 6: the test would not exercise the upper clamp")
        XCTAssertGreaterThan(saturated["relu4"] ?? 0, 0, "relu4 never reaches 6")

        let report = try DeployVerification.run(checkpoint: qat, deployFile: deployFile, data: test)
        assertWithinContract(report)
        XCTAssertEqual(report.layers.map(\.name), ["conv1", "conv2", "conv3", "fc1", "fc2"])
    }

    // MARK: Errors

    func testDeployErrorsNameTheFileAndTheLayer() throws {
        // A float checkpoint has nothing to deploy.
        assertInputError(try Deployer.deploy(checkpoint: repositoryPath("Checkpoints/lenet5-float.h5")),
                         mentions: ["lenet5-float.h5", "no layer is quantized"])

        let spec = try ModelSpec.load(file: lenetSpecFile)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json"))
        let model = try Model(spec: spec, seed: 1)
        model.applyQuantization(try config.resolve(for: spec))
        assertInputError(try Deployer.deploy(model: model, source: "m.h5"), mentions: ["m.h5", "layer conv1", "never calibrated"])

        let data = try fashionMNIST(.test, count: 64)
        try model.calibrate(on: [data.batch(Array(0..<64)[...]).images])
        XCTAssertNoThrow(try Deployer.deploy(model: model, source: "m.h5"))
        let fc2 = model.layer(named: "fc2") as! LinearLayer
        fc2.bias!.value.storage[3] = 1e9
        assertInputError(try Deployer.deploy(model: model, source: "m.h5"), mentions: ["layer fc2", "int32 bias of channel 3"])
        fc2.bias!.value.storage[3] = 0
        fc2.weight.value.storage[0] = .nan
        assertInputError(try Deployer.deploy(model: model, source: "m.h5"), mentions: ["layer fc2", "NaN"])

        // A checkpoint is not a deploy file, and the other way round.
        XCTAssertThrowsError(try Int8Model.load(deployFile: repositoryPath("Checkpoints/lenet5-float.h5"))) { error in
            XCTAssertTrue("\(error)".contains("qat deploy"), "\(error)")
        }
    }

    func testEvalTakesExactlyOneOfCheckpointAndDeploy() throws {
        XCTAssertThrowsError(try QATCommand.parseAsRoot(["eval", "--checkpoint", "a.h5", "--deploy", "b.h5"]))
        XCTAssertThrowsError(try QATCommand.parseAsRoot(["eval"]))
        XCTAssertNoThrow(try QATCommand.parseAsRoot(["eval", "--deploy", "b.h5"]))
        XCTAssertNoThrow(try QATCommand.parseAsRoot(["verify", "--checkpoint", "a.h5", "--deploy", "b.h5"]))
        XCTAssertNoThrow(try QATCommand.parseAsRoot(["deploy", "--checkpoint", "a.h5", "--output", "b.h5"]))
    }
}
