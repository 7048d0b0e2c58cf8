import Foundation
import XCTest
@testable import QATCore
@testable import QATDeploy
@testable import QATIO
@testable import QATModel

/// Fake quant in eval mode adds an integer layer's bias in whole accumulator units, as the INT8
/// engine and ONNX QDQ runtimes do (docs/ALGORITHMS.md §5), so deploy needs no bias residual.
final class AccumulatorBiasTests: XCTestCase {
    /// LeNet-5 with its quantizers calibrated on 64 test images.
    private func calibratedLeNet() throws -> (Model, Tensor) {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json"))
        let model = try Model(spec: spec, seed: 3)
        model.applyQuantization(try config.resolve(for: spec))
        let images = try fashionMNIST(.test, count: 64).batch(Array(0..<64)[...]).images
        try model.calibrate(on: [images])
        return (model, images)
    }

    /// Hand-computed: one logit whose weight row is zero is its bias alone. With a bias of 2.3,
    /// 2.6 and 2.0 accumulator units, eval mode gives 2, 3 and 2 units; an unquantized layer
    /// keeps the float bias.
    func testEvalRoundsTheBiasToWholeAccumulatorUnits() throws {
        let (model, images) = try calibratedLeNet()
        let fc3 = model.layer(named: "fc3") as! LinearLayer
        let quantizer = fc3.quantizer as! FakeQuantizer
        let channel = 4
        for i in 0..<84 { fc3.weight.value.storage[channel * 84 + i] = 0 }
        let sd = Double(try quantizer.inputGrid().scale)
        let scales = quantizer.weightRowScales(fc3.weight.value)
        let unit = sd * Double(scales.count == 1 ? scales[0] : scales[channel])
        func logit(biasUnits: Double) -> [Double] {
            fc3.bias!.value.storage[channel] = Float(biasUnits * unit)
            let y = model.forward(images, training: false, tape: nil).value
            return (0..<64).map { Double(y.storage[$0 * 10 + channel]) }
        }
        let tolerance = 1e-5 * unit
        for (bias, expected) in [(2.3, 2.0), (2.6, 3.0), (2.0, 2.0), (-2.4, -2.0), (-3.6, -4.0)] {
            for (n, y) in logit(biasUnits: bias).enumerated() {
                XCTAssertEqual(y, expected * unit, accuracy: tolerance, "image \(n): \(bias) units must give \(expected)")
            }
        }
        // Without its quantizer the layer keeps the float bias.
        fc3.quantizer = nil
        for y in logit(biasUnits: 2.3) { XCTAssertEqual(y, 2.3 * unit, accuracy: tolerance) }
    }

    /// The deployer writes the same rounded bias and no residual, and a BN folded into a conv is
    /// rounded in the BN's output, as the engine adds it.
    func testDeployWritesTheBiasFakeQuantUsesAndNoResidual() throws {
        let (model, _) = try calibratedLeNet()
        let deployed = try Deployer.deploy(model: model, source: "test")
        let integer = deployed.nodes.filter { !$0.biasCodes.isEmpty }
        XCTAssertEqual(integer.map(\.name), ["conv1", "conv2", "fc1", "fc2", "fc3"])
        for node in integer {
            XCTAssertEqual(node.biasResidual, [Float](repeating: 0, count: node.outputChannels), node.name)
            let layer = model.layer(named: node.name) as! WeightedLayer
            let quantizer = layer.quantizer as! FakeQuantizer
            let sd = Double(try quantizer.inputGrid().scale)
            for c in 0..<node.outputChannels {
                let unit = sd * Double(node.weightScales[c])
                XCTAssertEqual(Double(node.biasCodes[c]), (Double(layer.bias!.value.storage[c]) / unit).rounded(.toNearestOrEven), node.name)
            }
        }
        // The corrections sit on the values the engine adds the bias to.
        let (corrections, exactBiases) = model.accumulatorGridCorrections()
        XCTAssertTrue(exactBiases.isEmpty, "float scales: every layer takes the correction")
        XCTAssertEqual(Set(corrections.keys), Set(integer.map { model.graph.index(of: $0.name)! }))
    }

    /// A conv whose only reader is a BatchNorm folds it; one with two readers, or a BN after a
    /// non-conv, does not.
    func testBatchNormFoldsAreDerivedFromTheGraph() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))
        let graph = try ModelGraph(spec)
        let folds = Dictionary(uniqueKeysWithValues: graph.batchNormFolds.map { (spec.layers[$0].name, spec.layers[$1].name) })
        XCTAssertEqual(folds["stem"], "stem_bn")
        XCTAssertEqual(folds.count, spec.layers.filter { if case .batchnorm2d = $0.kind { return true } else { return false } }.count)
        for (conv, bn) in folds {
            XCTAssertEqual(graph.consumers(of: graph.index(of: conv)!), [graph.index(of: bn)!])
        }
    }
}
