import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// Cross-layer equalization and bias correction (`qat calibrate --cle --bias-correction`).
final class PTQTransformTests: XCTestCase {
    private func layer(_ name: String, _ kind: LayerKind, _ inputs: [String] = []) -> LayerSpec {
        LayerSpec(name: name, kind: kind, inputs: inputs)
    }

    /// Hand-computed: A's 1×1 rows 4 and 1, B's input columns 1 and 4 give s = 2 and ½; both
    /// sides become 2, and the function is the same.
    func testEqualizationOfAHandSetPair() throws {
        let spec = ModelSpec(name: "cle", inputShape: [1, 2, 2], layers: [
            layer("a", .conv2d(.init(inputChannels: 1, outputChannels: 2, kernelSize: 1))),
            layer("relu", .relu),
            layer("b", .conv2d(.init(inputChannels: 2, outputChannels: 1, kernelSize: 1))),
            layer("flatten", .flatten),
            layer("fc", .linear(.init(inputFeatures: 4, outputFeatures: 3))),
        ])
        let model = try Model(spec: spec, seed: 1)
        let a = model.layer(named: "a") as! Conv2DLayer, b = model.layer(named: "b") as! Conv2DLayer
        a.weight.value.storage = [4, -1]
        a.bias!.value.storage = [0.5, -0.25]
        b.weight.value.storage = [1, -4]
        let x = Tensor(shape: [1, 1, 2, 2], storage: [1, -2, 0.5, 3])
        let before = model.forward(x, training: false, tape: nil).value.storage
        let pairs = CrossLayerEqualization.apply(to: model)
        XCTAssertEqual(pairs, [.init(first: "a", second: "b")])
        XCTAssertEqual(a.weight.value.storage, [2, -2])
        XCTAssertEqual(a.bias!.value.storage, [0.25, -0.5])
        XCTAssertEqual(b.weight.value.storage, [2, -2])
        let after = model.forward(x, training: false, tape: nil).value.storage
        for (u, v) in zip(before, after) { XCTAssertEqual(u, v, accuracy: 1e-6) }
    }

    /// resnet-tiny: the one pair without a second reader in between (block1_conv1 → bn → ReLU →
    /// block1_conv2) is equalized through its BN's γ and β, ranges become equal, logits stay.
    func testEqualizationThroughABatchNormKeepsTheFunction() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))
        let model = try Model(spec: spec, seed: 5)
        let bn = model.layer(named: "block1_bn1") as! BatchNorm2DLayer
        for c in 0..<8 {
            bn.gamma.value.storage[c] = 0.3 + 0.4 * Float(c)
            bn.beta.value.storage[c] = 0.1 * Float(c) - 0.3
            bn.statistics.variance.storage[c] = 0.5 + Float(c) * 0.25
            bn.statistics.mean.storage[c] = 0.05 * Float(c)
        }
        let images = try fashionMNIST(.test, count: 32).batch(Array(0..<32)[...]).images
        let before = model.forward(images, training: false, tape: nil).value
        let pairs = CrossLayerEqualization.apply(to: model)
        XCTAssertEqual(pairs, [.init(first: "block1_conv1", second: "block1_conv2")])
        let after = model.forward(images, training: false, tape: nil).value
        let scale = max(before.maxAbs(), 1e-3)
        for (u, v) in zip(before.storage, after.storage) { XCTAssertEqual(u, v, accuracy: 1e-5 * scale) }
        let first = model.layer(named: "block1_conv1") as! Conv2DLayer, second = model.layer(named: "block1_conv2") as! Conv2DLayer
        for c in 0..<8 {
            let k = abs(bn.gamma.value.storage[c]) / (bn.statistics.variance.storage[c] + 1e-5).squareRoot()
            let rangeFirst = first.weight.value.storage[(c * 72)..<((c + 1) * 72)].map(abs).max()! * k
            var rangeSecond: Float = 0
            for o in 0..<8 { for t in 0..<9 { rangeSecond = max(rangeSecond, abs(second.weight.value.storage[(o * 8 + c) * 9 + t])) } }
            XCTAssertEqual(rangeFirst, rangeSecond, accuracy: 1e-3 * rangeSecond, "channel \(c)")
        }
    }

    /// After bias correction every corrected layer's per-channel output mean in the fake-quant
    /// model equals the float model's on the calibration batches (to one accumulator unit and
    /// float rounding), where before it did not.
    func testBiasCorrectionBringsEachLayersMeanBackToTheFloatModels() throws {
        let (model, _) = try Model.load(checkpoint: repositoryPath("Checkpoints/lenet5-float.h5"))
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: model.spec).utf8), file: "r.json"))
        model.applyQuantization(try config.resolve(for: model.spec))
        let data = try fashionMNIST(.train, count: 256)
        let batches = [data.batch(Array(0..<128)[...]).images, data.batch(Array(128..<256)[...]).images]
        try model.calibrate(on: batches)
        let quantized = Set(model.layers.indices.filter { (model.layers[$0] as? WeightedLayer)?.quantizer != nil })
        let reference = model.withoutFakeQuantizers { BiasCorrection.channelMeans(of: model, layers: quantized, batches: batches) }
        let before = BiasCorrection.channelMeans(of: model, layers: quantized, batches: batches)
        let result = BiasCorrection.apply(to: model, batches: batches)
        XCTAssertEqual(result.corrected.map(\.layer), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        XCTAssertEqual(result.skipped, [])
        let after = BiasCorrection.channelMeans(of: model, layers: quantized, batches: batches)
        var largestBefore = 0.0
        for index in quantized.sorted() {
            let name = model.spec.layers[index].name
            // Eval mode adds the bias in whole accumulator units (ALGORITHMS §5), before and after the
            // correction: each rounding moves the mean by up to half a unit.
            let layer = model.layers[index] as! WeightedLayer, quantizer = layer.quantizer as! FakeQuantizer
            let unit = Double(try quantizer.inputGrid().scale) * Double(quantizer.weightRowScales(layer.weight.value).max()!)
            let tolerance = 1e-5 * max(reference[index]!.map(abs).max()!, 1e-3) + unit + 1e-7
            for c in reference[index]!.indices {
                largestBefore = max(largestBefore, abs(before[index]![c] - reference[index]![c]) / tolerance)
                XCTAssertEqual(after[index]![c], reference[index]![c], accuracy: tolerance, "\(name) channel \(c)")
            }
        }
        XCTAssertGreaterThan(largestBefore, 10, "quantization shifted no mean: the test could not fail")
    }

    /// `qat calibrate --cle --bias-correction` runs both, says what they did, and the result
    /// deploys and verifies.
    func testCalibrateWithBothTransformsDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/retrain.json", "--checkpoint",
                                     repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq, "--batch-num", "2",
                                     "--test-limit", "500", "--cle", "--bias-correction"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("cross-layer equalization: no conv → [BN] → ReLU → conv pair"), log)
        XCTAssertTrue(log.contains("bias correction on the 2 calibration batch(es)") && log.contains("fc3: largest shift"), log)
        let deployed = folder + "/ptq-int8.h5"
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
    }

    /// A Vitis config with include_cle and include_bias_corr true runs both in `qat calibrate`;
    /// `qat train --init` from the calibrated checkpoint does not run them again.
    func testVitisSwitchesRunTheTransformsOnlyFromFloatWeights() throws {
        let folder = try makeTemporaryFolder(self)
        let text = try String(contentsOfFile: repositoryPath("Configs/vitis/plain-maxmin.json"), encoding: .utf8)
            .replacingOccurrences(of: #""include_cle": false"#, with: #""include_cle": true"#)
            .replacingOccurrences(of: #""include_bias_corr": false"#, with: #""include_bias_corr": true"#)
        let config = folder + "/vitis.json"
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        let ptq = folder + "/ptq.h5"
        let (status, log) = try qat(["calibrate", "--config", config, "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"),
                                     "--output", ptq, "--batch-num", "2", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("cross-layer equalization:") && log.contains("bias correction on the 2 calibration batch(es)"), log)
        let (trainStatus, trained) = try qat(["train", "--config", config, "--init", ptq, "--epochs", "1", "--train-limit", "256",
                                              "--test-limit", "100", "--checkpoint-dir", folder + "/run", "--output", folder + "/qat.h5"])
        XCTAssertEqual(trainStatus, 0, trained)
        XCTAssertTrue(trained.contains("not applied: cle, bias_correction"), trained)
        XCTAssertFalse(trained.contains("bias correction on"), trained)
    }
}
