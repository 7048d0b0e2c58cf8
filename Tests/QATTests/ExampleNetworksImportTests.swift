import Foundation
import XCTest
@testable import QATCore
@testable import QATModel
@testable import QATONNX
@testable import QATData

/// Import fidelity of the two example networks (examples/onnx-models, issue 10): the committed
/// PyTorch exports, run through our importer and float forward on the 16 stored inputs, give
/// PyTorch's stored logits. Both reference files were written by examples/onnx-models/export.py;
/// this test needs no Python.
final class ExampleNetworksImportTests: XCTestCase {
    let folder = repositoryPath("examples/onnx-models")

    /// The bound on |ours − PyTorch| over every logit.
    static let tolerance: Float = 1e-4

    func testMobileNetV2TinyLogitsEqualPyTorchs() throws {
        try checkLogits(model: "mobilenetv2-tiny", layers: 68)
    }

    func testResNet18TinyLogitsEqualPyTorchs() throws {
        try checkLogits(model: "resnet18-tiny", layers: 69)
    }

    /// Imports `<model>.onnx`, runs the float forward on `<model>.inputs.npy` and compares with
    /// `<model>.logits.npy`; the checkpoint the import writes must load and give the same logits.
    private func checkLogits(model name: String, layers: Int) throws {
        let imported = try ImportedModel.load(onnxFile: "\(folder)/\(name).onnx")
        XCTAssertEqual(imported.spec.layers.count, layers)
        XCTAssertEqual(imported.opset, 17)

        let inputs = try NPYArray.read(file: "\(folder)/\(name).inputs.npy")
        let expected = try NPYArray.read(file: "\(folder)/\(name).logits.npy")
        XCTAssertEqual(inputs.type, .float32)
        XCTAssertEqual(inputs.shape, [16, 1, 28, 28])
        XCTAssertEqual(expected.type, .float32)
        XCTAssertEqual(expected.shape, [16, 10])
        let x = Tensor(shape: inputs.shape, storage: inputs.values(Float.self, count: inputs.shape.reduce(1, *)))
        let reference = expected.values(Float.self, count: 160)

        let logits = imported.model.forward(x, training: false, tape: nil).value
        XCTAssertEqual(logits.shape, [16, 10])
        let difference = maxAbsoluteDifference(logits.storage, reference)
        print("\(name): max |ours − PyTorch| over 16×10 logits = \(difference)")
        XCTAssertLessThanOrEqual(difference, Self.tolerance, "\(name): our float logits differ from PyTorch's by \(difference)")

        // The same through the written checkpoint, the path every other command takes.
        let temporary = try makeTemporaryFolder(self)
        try imported.checkpoint.write(to: "\(temporary)/\(name)-float.h5")
        let (reloaded, _) = try Model.load(checkpoint: "\(temporary)/\(name)-float.h5")
        XCTAssertEqual(reloaded.forward(x, training: false, tape: nil).value, logits)
    }

    private func maxAbsoluteDifference(_ a: [Float], _ b: [Float]) -> Float {
        XCTAssertEqual(a.count, b.count)
        // A NaN anywhere counts as infinitely far, so it cannot pass the bound.
        return zip(a, b).reduce(0) { worst, pair in
            let d = abs(pair.0 - pair.1)
            return d.isNaN ? .infinity : max(worst, d)
        }
    }
}
