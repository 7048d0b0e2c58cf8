import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy

/// `qat verify`'s report: the text table, and the "alone" figures (each integer layer of the
/// engine fed the fake-quant input codes).
final class VerifyReportTests: XCTestCase {
    /// Long layer names (as ONNX import makes them) widen the first column instead of pushing the
    /// other columns out of line; short names keep the old 16-character column. FAIL marks a layer
    /// that misses the contract alone; end-to-end differences alone do not.
    func testColumnsStayAlignedWithLongLayerNames() {
        let long = "blocks_blocks_3_block_block_6_reduce_Conv"
        var report = DeployVerification(layers: [
            .init(name: "stem", count: 100, equal: 100, maxDifference: 0, equalAlone: 100, maxDifferenceAlone: 0),
            .init(name: long, count: 100, equal: 99, maxDifference: 2, equalAlone: 100, maxDifferenceAlone: 0),
            .init(name: "head", count: 100, equal: 100, maxDifference: 0, equalAlone: 99, maxDifferenceAlone: 1)])
        report.samples = 1
        report.equalPredictions = 1
        let lines = report.table().split(separator: "\n").map(String.init)
        let column = long.count + 2
        XCTAssertEqual(lines[0].range(of: "input codes")?.lowerBound.utf16Offset(in: lines[0]), column)
        XCTAssertEqual(lines[1], "stem".padded(to: column) + "100".padded(to: 14) + "100.0000%".padded(to: 12) + "0".padded(to: 10)
                       + "100.0000%".padded(to: 14) + "0")
        XCTAssertEqual(lines[2], long + "  " + "100".padded(to: 14) + "99.0000%".padded(to: 12) + "2".padded(to: 10)
                       + "100.0000%".padded(to: 14) + "0")
        XCTAssertEqual(lines[3], "head".padded(to: column) + "100".padded(to: 14) + "100.0000%".padded(to: 12) + "0".padded(to: 10)
                       + "99.0000%".padded(to: 14) + "1   FAIL")
        XCTAssertFalse(report.passed)
        report.layers.removeLast()
        XCTAssertTrue(report.passed, report.table())
        report.equalPredictions = 0
        XCTAssertFalse(report.passed)

        let short = DeployVerification(layers: [.init(name: "conv1", count: 1, equal: 1, maxDifference: 0)]).table()
        XCTAssertTrue(short.hasPrefix("layer           input codes   end to end  max diff  alone: equal  max diff\nconv1           1 "), short)
    }

    /// A LeNet-5 quantized after calibration (no training), deployed in memory.
    private func calibratedLeNet() throws -> (Model, Int8Model) {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let model = try Model(spec: spec, seed: 3)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json"))
        model.applyQuantization(try config.resolve(for: spec))
        try model.calibrate(on: [fashionMNIST(.test, count: 64).batch(Array(0..<64)[...]).images])
        return (model, try Int8Model(Deployer.deploy(model: model, source: "m.h5")))
    }

    /// Substituted input codes are what the layer runs on; the observer still sees the engine's own.
    func testSubstitutedCodesReplaceTheLayersInput() throws {
        let (_, engine) = try calibratedLeNet()
        let data = try fashionMNIST(.test, count: 16)
        let a = data.batch(Array(0..<8)[...]).images, b = data.batch(Array(8..<16)[...]).images
        let codesA = try XCTUnwrap(engine.inputCodes(a)["conv1"]), codesB = try XCTUnwrap(engine.inputCodes(b)["conv1"])
        XCTAssertNotEqual(codesA, codesB)
        var observed: [Int8] = []
        // conv1 is the only reader of the image: running it on B's codes is running on B.
        let logits = engine.forward(a, observeInputCodes: { if $0 == "conv1" { observed = $1 } },
                                    substituteInputCodes: { $0 == "conv1" ? codesB : nil })
        XCTAssertEqual(logits, engine.forward(b))
        XCTAssertEqual(observed, codesA)
        XCTAssertEqual(engine.forward(a, substituteInputCodes: { _ in nil }), engine.forward(a))
    }

    /// The first layer's input is the same either way; every layer alone is within the contract.
    func testAloneFiguresOfTheFirstLayerEqualThePropagatedOnes() throws {
        let (model, engine) = try calibratedLeNet()
        let report = DeployVerification.run(model: model, engine: engine, data: try fashionMNIST(.test, count: 500))
        let first = try XCTUnwrap(report.layers.first)
        XCTAssertEqual(first.name, "conv1")
        XCTAssertEqual(first.equalAlone, first.equal)
        XCTAssertEqual(first.maxDifferenceAlone, first.maxDifference)
        for layer in report.layers {
            XCTAssertGreaterThan(layer.count, 0)
            XCTAssertGreaterThanOrEqual(layer.equalFractionAlone, 0.999, "\(layer.name)\n\(report.table())")
            XCTAssertLessThanOrEqual(layer.maxDifferenceAlone, 1, "\(layer.name)\n\(report.table())")
        }
    }
}
