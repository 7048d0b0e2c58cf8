import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// Narrow range (issue 12, Vitis AI `narrow_range: true`): codes −127…127, in fake quant
/// (activations, ARQ weights) and on the INT8 engine (quantize, requantize, add), hand-computed,
/// and a LeNet-5 calibrate → deploy → verify.
final class NarrowRangeTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let paths = Int8Kernels.Path.allCases.filter(Int8Kernels.isSupported)

    func testGridHandComputed() {
        XCTAssertEqual(QuantizationGrid.codeBounds(bits: 8, narrowRange: true).qmin, -127)
        XCTAssertEqual(QuantizationGrid.codeBounds(bits: 16, narrowRange: true).qmin, -32767)
        // clip (12.7, −12.7): n = 254, s = 25.4/254 = 0.1, o = round(−127 + 127) = 0, L = −12.7.
        let grid = QuantizationGrid(bits: 8, clipMax: 12.7, clipMin: -12.7, narrowRange: true)
        XCTAssertEqual(grid.levels, 254)
        XCTAssertEqual(grid.scale, 0.1, accuracy: 1e-7)
        XCTAssertEqual(grid.offset, 0)
        XCTAssertEqual([grid.quantize(-100), grid.quantize(-12.7), grid.quantize(100)], [-127, -127, 127])
        // The full-range grid of the same clip pair reaches −128.
        XCTAssertEqual(QuantizationGrid(bits: 8, clipMax: 12.7, clipMin: -12.7).quantize(-100), -128)
        // fixed_min: o = −127, [0, 254·s].
        let unsigned = QuantizationGrid(bits: 8, clipMax: 25.4, clipMin: 0, narrowRange: true)
        XCTAssertEqual(unsigned.offset, -127)
        XCTAssertEqual(unsigned.quantize(-1), -127)
        XCTAssertEqual(unsigned.dequantize(127), unsigned.upper)
    }

    func testFakeQuantizersStayInTheNarrowRange() {
        // ARQ: D = 127 on both sides, so −max|w| maps to −127, never −128.
        let w = Tensor(shape: [2, 2], storage: [-1.0, 0.5, 0.3, -0.6])
        XCTAssertEqual(arqScales(w, rows: 2, narrowRange: true), [1.0 / 127, 0.6 / 127])
        XCTAssertEqual(arqScales(w, rows: 2), [1.0 / 128, 0.6 / 128], "full range: D = 128 for the larger negative side")
        let state = WeightQuantizerState(weightShape: [2, 2], channelWise: true, narrowRange: true)
        let q = weightFakeQuantize(Variable(w), state: state, tape: nil).value.storage
        XCTAssertEqual(q[0], -1.0, accuracy: 1e-7)
        XCTAssertEqual(q[3], -0.6, accuracy: 1e-7)
        // ULQ: the lowest value is L = −127·s.
        let activation = ActivationQuantizerState(fixedMin: false, narrowRange: true)
        activation.setClipRange(max: 12.7, min: -12.7)
        let y = ulqFakeQuantize(Variable(Tensor(shape: [3], storage: [-50, 0.04, 50])), state: activation, tape: nil).value.storage
        XCTAssertEqual(activation.offset, 0)
        XCTAssertEqual(y[0], -127 * activation.scale)
        XCTAssertEqual(y[2], 127 * activation.scale)
    }

    func testKernelsNeverWriteMinus128() {
        var generator = SeededGenerator(seed: 8)
        let values = Tensor.uniform([500], bound: 40, using: &generator).storage
        let grid = QuantizationGrid(bits: 8, scale: 0.125, offset: 3, narrowRange: true)
        let acc = (0..<400).map { _ in Int32.random(in: -20_000...20_000, using: &generator) }
        let a = (0..<300).map { _ in Int8.random(in: -127...127, using: &generator) }
        let b = (0..<300).map { _ in Int8.random(in: -127...127, using: &generator) }
        let qa = QuantizationGrid(bits: 8, scale: 0.5, offset: 0, narrowRange: true)
        for path in paths {
            let codes = Int8Kernels.quantize(values, grid, path: path)
            XCTAssertEqual(codes.map(Int.init), values.map { grid.quantize($0) }, "\(path)")
            XCTAssertEqual(codes.min(), -127, "\(path)")
            for byShift in [true, false] {
                let r = Int8Kernels.Requantization(multipliers: [0.0625, 0.5], zeroPoint: 0, relu: false, lowestCode: -127, byShift: byShift)
                let out = Int8Kernels.requantize(acc, channels: 2, planeSize: 200, r, path: path)
                XCTAssertEqual(out.min(), -127, "\(path) shift \(byShift)")
                let full = Int8Kernels.requantize(acc, channels: 2, planeSize: 200,
                                                  .init(multipliers: [0.0625, 0.5], zeroPoint: 0, relu: false, byShift: byShift), path: path)
                XCTAssertEqual(out, full.map { max($0, -127) }, "the narrow range clamps one code higher, nothing else")
            }
            let sum = Int8Kernels.add(a, qa, b, qa, output: qa, relu: false, path: path)
            XCTAssertEqual(sum.min(), -127, "\(path)")
        }
    }

    func testVitisNarrowRangeReachesThePlanAndTheRecord() throws {
        let plan = try RetrainConfig.load(file: repositoryPath("Configs/vitis/plain-narrow-range.json")).resolve(for: lenet)
        for layer in plan.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.activationNarrowRange, true)
            XCTAssertEqual(layer.quantizer?.weightNarrowRange, true)
        }
        XCTAssertTrue(plan.table().contains("narrow_range"))
        let record = plan.explicitConfig().jsonText()
        XCTAssertTrue(record.contains("\"narrow_range\": true"), record)
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(record.utf8), file: "record")).resolve(for: lenet)
        XCTAssertEqual(reread.quantizedLayers.map(\.quantizer), plan.quantizedLayers.map(\.quantizer))
        let plain = try RetrainConfig.load(file: repositoryPath("Configs/retrain.json")).resolve(for: lenet)
        XCTAssertFalse(plain.explicitConfig().jsonText().contains("narrow_range"))
    }

    func testLeNetWithNarrowRangeCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/narrow.h5", deployed = folder + "/narrow-int8.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/plain-narrow-range.json",
                                     "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                     "--batch-num", "2", "--test-limit", "500"])
        XCTAssertEqual(status, 0, log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let file = try DeployFile.read(from: deployed)
        let integer = file.nodes.filter(\.isInteger)
        XCTAssertEqual(integer.count, 5)
        for node in integer {
            XCTAssertEqual(node.inputQuantizer?.narrowRange, true, node.name)
            XCTAssertGreaterThanOrEqual(node.weightCodes.min() ?? 0, -127, node.name)
            if let output = node.output { XCTAssertTrue(output.narrowRange, node.name) }
        }
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)

        let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", folder + "/narrow.onnx"])
        XCTAssertEqual(exportStatus, 1, exported)
        XCTAssertEqual(exported.split(separator: "\n").count, 1, exported)
        XCTAssertTrue(exported.contains("layer conv1") && exported.contains("narrow range"), exported)
    }
}
