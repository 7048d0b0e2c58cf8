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

/// ReLU6 through every stage but training: the spec, the graph, the fixed_min default,
/// `qat check model` and the INT8 saturation. The float op is in OpReLU6Tests, the trained
/// model's deploy-and-verify contract in DeployTests.
final class ReLU6Tests: XCTestCase {
    /// conv1 → relu6 → pool → conv2 → relu6 → flatten → fc.
    static let specJSON = """
        {"name": "relu6-net", "input": [1, 8, 8], "layers": [
          {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
          {"name": "clip1", "type": "relu6"},
          {"name": "pool1", "type": "maxpool2d", "kernel_size": 2},
          {"name": "conv2", "type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3},
          {"name": "clip2", "type": "relu6"},
          {"name": "flatten", "type": "flatten"},
          {"name": "fc", "type": "linear", "in_features": 16, "out_features": 3}]}
        """

    func spec() throws -> ModelSpec { try ModelSpec.parse(JSONObject.parse(Data(Self.specJSON.utf8), file: "relu6.json")) }

    func testSpecReadsAndWritesReLU6() throws {
        let spec = try spec()
        XCTAssertEqual(spec.layers[1].kind, .relu6)
        XCTAssertEqual(spec.layers[1].kind.typeName, "relu6")
        XCTAssertEqual(LayerType(name: "relu6"), .relu6)
        XCTAssertTrue(spec.jsonString().contains(#"{"name":"clip1","type":"relu6"}"#), spec.jsonString())
        XCTAssertEqual(try ModelSpec.parse(JSONObject.parse(Data(spec.jsonString().utf8), file: "again.json")), spec)
        let graph = try ModelGraph(spec)
        XCTAssertEqual(graph.outputShapes[1], [4, 8, 8], "relu6 keeps the shape")
        XCTAssertEqual(graph.consumers(of: 1), [2])
        assertInputError(try ModelSpec.parse(JSONObject.parse(Data(#"{"input": [1, 2, 2], "layers": [{"name": "a", "type": "relu6", "inputs": ["input", "input"]}]}"#.utf8), file: "two.json")),
                         mentions: ["two.json", "relu6 takes one input"])
    }

    func testFixedMinLooksThroughToAReLU6() throws {
        let spec = try spec()
        let plan = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json")).resolve(for: spec)
        XCTAssertEqual(plan.quantizedLayers.map { $0.quantizer!.fixedMin }, [false, true, true])
        let wiring = try ModelGraph.Wiring(spec)
        XCTAssertEqual(wiring.nonNegativeSource(ofLayerAt: 3), 1, "conv2 reads clip1 through pool1")
        XCTAssertEqual(wiring.nonNegativeSource(ofLayerAt: 6), 4, "fc reads clip2 through flatten")
        XCTAssertNil(wiring.nonNegativeSource(ofLayerAt: 0))
        XCTAssertEqual(LayerType.relu6.quantizationRole, .nonNegativeOutput(atMost: 6))
    }

    func testModelCheckFlagsClipMaxAboveSix() throws {
        let spec = try spec()
        func report(_ clipMax: Double) throws -> ModelCheckReport {
            let config = try RetrainConfig.parse(JSONObject.parse(Data("""
                {"conv1": {}, "conv2": {"retrain_data_config": {"clip_max": \(clipMax), "clip_min": -1}}, "fc": {}}
                """.utf8), file: "r.json"))
            return checkModel(spec: spec, config: config)
        }
        let wide = try report(8)
        XCTAssertEqual(wide.findings("clip range").map(\.subject), ["conv2"], wide.text())
        XCTAssertEqual(wide.findings("clip range").first?.severity, .warning)
        XCTAssertTrue(wide.findings("clip range")[0].message.contains("clip1 (relu6)"), wide.text())
        XCTAssertTrue(try report(6).findings("clip range").isEmpty)
    }

    /// The code of 6.0 is clamp(round(6 / s) + o, −128, 127), whether or not 6 lies on the grid.
    func testCodeOfSixOnHandComputedGrids() {
        func top(_ scale: Float, _ zeroPoint: Int8) -> Int8 {
            FusedActivation.relu6.codeRange(on: QuantizationGrid(bits: 8, scale: scale, offset: Int(zeroPoint))).upperBound
        }
        XCTAssertEqual(top(0.05, -128), -8)        // 6 / 0.05 = 120 exactly
        XCTAssertEqual(top(0.047, -128), 0)        // 127.66 rounds to 128: 6 is not on the grid
        XCTAssertEqual(top(6.0 / 255, -128), 127)  // the grid of clip [0, 6]: 6 is the top code
        XCTAssertEqual(top(0.1, 100), 127)         // 160 saturates at 127
        XCTAssertEqual(FusedActivation.relu6.codeRange(on: QuantizationGrid(bits: 8, scale: 0.05, offset: Int(-3))).lowerBound, -3)
        XCTAssertEqual(FusedActivation.relu.codeRange(on: QuantizationGrid(bits: 8, scale: 0.05, offset: Int(-3))), -3...127)
    }

    /// Saturating at the code of 6.0 inside the kernels equals clamping their plain output, on every path.
    func testKernelsSaturateAtTheUpperBound() {
        var rng = SeededGenerator(seed: 91)
        let g = ConvGeometry(batch: 2, channels: 3, height: 6, width: 6, outputChannels: 5, kernel: 3, stride: 1, padding: 1)
        let x = (0..<(2 * 3 * 36)).map { _ in Int8(truncatingIfNeeded: rng.next()) }
        let w = (0..<(5 * 27)).map { _ in Int8(truncatingIfNeeded: rng.next()) }
        let bias: [Int32] = [100, -200, 0, 3000, -50]
        let plain = Int8Kernels.Requantization(multipliers: [0.004, 0.003, 0.005, 0.002, 0.004], zeroPoint: -20, relu: true)
        var bounded = plain
        bounded.upperBound = 30
        let a = x.map { $0 &+ 1 }
        let qa = QuantizationGrid(bits: 8, scale: 0.05, offset: 3), qb = QuantizationGrid(bits: 8, scale: 0.07, offset: -5)
        let qy = QuantizationGrid(bits: 8, scale: 0.04, offset: -20)
        for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
            let conv = Int8Kernels.conv2d(x, g, inputZeroPoint: 2, weights: w, bias: bias, requantize: plain, path: path)
            XCTAssertTrue(conv.contains { $0 > 30 } && conv.contains { $0 < 30 }, "the bound cuts somewhere")
            XCTAssertEqual(Int8Kernels.conv2d(x, g, inputZeroPoint: 2, weights: w, bias: bias, requantize: bounded, path: path),
                           conv.map { min($0, 30) }, "\(path)")
            XCTAssertEqual(Int8Kernels.conv2dMaxPool(x, g, inputZeroPoint: 2, weights: w, bias: bias, requantize: bounded,
                                                     poolKernel: 2, poolStride: 2, path: path),
                           Int8Kernels.maxPool2d(conv, planes: 10, height: 6, width: 6, kernel: 2, stride: 2, path: path).map { min($0, 30) })
            let flat = Array(x[0..<(2 * 27)])
            let linear = Int8Kernels.linear(flat, batch: 2, inputZeroPoint: 2, weights: w, bias: bias, requantize: plain, path: path)
            XCTAssertEqual(Int8Kernels.linear(flat, batch: 2, inputZeroPoint: 2, weights: w, bias: bias, requantize: bounded, path: path),
                           linear.map { min($0, 30) }, "\(path)")
            let acc = Int8Kernels.conv2dAccumulators(x, g, inputZeroPoint: 2, weights: w, bias: bias, path: path)
            XCTAssertEqual(Int8Kernels.requantize(acc, channels: 5, planeSize: 36, bounded, path: path),
                           Int8Kernels.requantize(acc, channels: 5, planeSize: 36, plain, path: path).map { min($0, 30) })
            XCTAssertEqual(Int8Kernels.add(a, qa, x, qb, output: qy, relu: true, upperBound: 30, path: path),
                           Int8Kernels.add(a, qa, x, qb, output: qy, relu: true, path: path).map { min($0, 30) })
        }
    }
}
