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

/// Bad data and bad specs give errors that name the file and the problem.
final class InputErrorTests: XCTestCase {
    func testMissingDatasetFolder() {
        assertInputError(try FashionMNIST.load(folder: "/nonexistent/fmnist", split: .train),
                         mentions: ["/nonexistent/fmnist", "not found"])
    }

    func testMissingFileInDatasetFolder() throws {
        let folder = try makeTemporaryFolder(self)
        assertInputError(try FashionMNIST.load(folder: folder, split: .test),
                         mentions: [folder, "t10k-images-idx3-ubyte"])
    }

    func testMalformedIDXFiles() throws {
        let folder = try makeTemporaryFolder(self)
        let file = folder + "/bad-magic"
        _ = FileManager.default.createFile(atPath: file, contents: Data([1, 2, 3, 4, 5, 6, 7, 8]))
        assertInputError(try IDX.readUInt8(file: file), mentions: [file, "magic"])
        // A header that promises more images than the file holds.
        let short = folder + "/short"
        _ = FileManager.default.createFile(atPath: short, contents: Data([0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]))
        assertInputError(try IDX.readUInt8(file: short), mentions: [short, "promises"])
        // A damaged rank byte (0x18 = 24 sizes of 256): the product of the sizes overflows Int.
        let huge = folder + "/huge"
        let header: [UInt8] = [0, 0, 8, 0x18] + (0..<24).flatMap { _ in [UInt8(0), 0, 1, 0] }
        _ = FileManager.default.createFile(atPath: huge, contents: Data(header + [1, 2, 3]))
        assertInputError(try IDX.readUInt8(file: huge), mentions: [huge, "impossible shape"])
    }

    func testTruncatedGzipIsAnError() throws {
        let folder = try makeTemporaryFolder(self)
        let original = try Data(contentsOf: URL(fileURLWithPath: FashionMNIST.defaultPath + "/t10k-labels-idx1-ubyte.gz"))
        let file = folder + "/t10k-labels-idx1-ubyte.gz"
        _ = FileManager.default.createFile(atPath: file, contents: original.prefix(original.count / 2))
        XCTAssertThrowsError(try IDX.readUInt8(file: file)) { error in
            XCTAssertTrue("\(error)".contains(file), "\(error)")
        }
    }

    func writeSpec(_ json: String) throws -> String {
        let file = try makeTemporaryFolder(self) + "/spec.json"
        try json.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func testUnknownLayerType() throws {
        let file = try writeSpec(#"{"input": [1, 4, 4], "layers": [{"name": "a", "type": "conv3d"}]}"#)
        assertInputError(try ModelSpec.load(file: file), mentions: [file, "layers[0].type", "unknown layer type \"conv3d\""])
    }

    func testMismatchedShapes() throws {
        let file = try writeSpec(#"""
            {"input": [1, 28, 28], "layers": [
              {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
              {"name": "conv2", "type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3},
              {"name": "flat", "type": "flatten"}, {"name": "fc", "type": "linear", "in_features": 5, "out_features": 2}]}
            """#)
        assertInputError(try ModelSpec.load(file: file), mentions: [file, "conv2", "in_channels is 3", "4 channels"])
    }

    func testUnknownInputsName() throws {
        let file = try writeSpec(#"""
            {"input": [1, 4, 4], "layers": [{"name": "r", "type": "relu"},
              {"name": "sum", "type": "add", "inputs": ["r", "skip"]}]}
            """#)
        assertInputError(try ModelSpec.load(file: file), mentions: [file, "layers[1].inputs", "unknown input \"skip\""])
    }

    func testUnknownKeyAndWrongType() throws {
        let typo = try writeSpec(#"{"input": [1, 4, 4], "layers": [{"name": "f", "type": "flatten", "kernel": 3}]}"#)
        assertInputError(try ModelSpec.load(file: typo), mentions: [typo, "layers[0].kernel", "unknown key"])
        let wrongType = try writeSpec(#"{"input": "1x4x4", "layers": []}"#)
        assertInputError(try ModelSpec.load(file: wrongType), mentions: [wrongType, "input", "array"])
    }

    func testShippedSpecsBuild() throws {
        for name in ["lenet5", "resnet-tiny"] {
            let spec = try ModelSpec.load(file: repositoryPath("Configs/models/\(name).json"))
            let model = try Model(spec: spec)
            let logits = model.forward(Tensor(shape: [2, 1, 28, 28]), training: false, tape: nil)
            XCTAssertEqual(logits.shape, [2, 10])
            // The spec survives its JSON rendering (checkpoints store it that way).
            let reparsed = try ModelSpec.parse(JSONObject.parse(Data(spec.jsonString().utf8), file: "rendered"))
            XCTAssertEqual(reparsed, spec)
        }
    }

    func testResidualModelTrainsThroughAddAndBatchNorm() throws {
        let model = try Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json")), seed: 3)
        let data = try fashionMNIST(.train, count: 32)
        let batch = data.batch(Array(0..<32)[...])
        let tape = Tape()
        let (loss, _) = softmaxCrossEntropy(model.forward(batch.images, training: true, tape: tape), labels: batch.labels, tape: tape)
        tape.backward(from: loss)
        for p in model.parameters {
            XCTAssertGreaterThan(p.variable.grad?.maxAbs() ?? 0, 0, "\(p.name) got no gradient")
        }
    }
}
