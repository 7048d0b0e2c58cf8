import Foundation
import XCTest
@testable import QATData

/// `qat eval` and `qat verify` with `--config`: the test set comes from a run config's `data`
/// section (here an HDF5 file written by the test), exactly as `qat train` reads it.
final class EvalDataConfigTests: XCTestCase {
    /// The first `count` Fashion-MNIST images of a split written as an HDF5 dataset file in the
    /// [N, H, W, C] layout (so the layout must be found from the model's input shape).
    func writeHDF5Copy(of split: FashionMNIST.Split, count: Int, to path: String) throws {
        let source = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: split, limit: count)
        guard case .bytes(let pixels) = source.stored else { return XCTFail("IDX images are not bytes") }
        try DataFiles.hdf5(at: path, images: pixels, shape: [count, 28, 28, 1], labels: source.labels.map { Int64($0) })
    }

    /// Configs/retrain.json (QAT of LeNet-5) with the given `data` section, its per-epoch
    /// checkpoints in `folder`.
    func writeConfig(_ data: String, to path: String, folder: String) throws {
        let base = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("Configs/retrain.json")))
        var config = try XCTUnwrap(JSONSerialization.jsonObject(with: base) as? [String: Any])
        config["data"] = try JSONSerialization.jsonObject(with: Data(data.utf8))
        config["checkpoint"] = ["dir": folder + "/epochs"]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
    }

    func testEvalOnAnHDF5TestSetMatchesTheSameImagesFromIDX() throws {
        let folder = try makeTemporaryFolder(self)
        try writeHDF5Copy(of: .test, count: 200, to: folder + "/test.h5")
        let config = folder + "/run.json"
        // Fashion-MNIST's normalisation, which HDF5 data does not get by default.
        try writeConfig(#"{"format": "hdf5", "train": "\#(folder)/train.h5", "test": "\#(folder)/test.h5", "mean": 0.2860, "std": 0.3530, "test_limit": 150}"#,
                        to: config, folder: folder)
        let checkpoint = "Checkpoints/lenet5-float.h5"
        let (idxStatus, fromIDX) = try qat(["eval", "--checkpoint", checkpoint, "--test-limit", "150"])
        XCTAssertEqual(idxStatus, 0, fromIDX)
        XCTAssertTrue(fromIDX.contains("(150 images)"), fromIDX)
        let (status, fromHDF5) = try qat(["eval", "--checkpoint", checkpoint, "--config", config])
        XCTAssertEqual(status, 0, fromHDF5)
        // stderr (merged in) adds a note that the test file, written like h5py does, has no qat digest.
        XCTAssertEqual(fromHDF5.split(separator: "\n").first, fromIDX.split(separator: "\n").first,
                       "the same 150 images (data.test_limit) give the same accuracy and loss")
        XCTAssertTrue(fromHDF5.contains("test.h5 has no qat digest"), fromHDF5)
        let (limitStatus, limited) = try qat(["eval", "--checkpoint", checkpoint, "--config", config, "--test-limit", "20"])
        XCTAssertEqual(limitStatus, 0, limited)
        XCTAssertTrue(limited.contains("(20 images)"), "--test-limit overrides data.test_limit: \(limited)")

        let (both, bothOutput) = try qat(["eval", "--checkpoint", checkpoint, "--config", config, "--data", folder])
        XCTAssertEqual(both, 64, bothOutput)
        XCTAssertTrue(bothOutput.contains("give at most one of --data and --config"), bothOutput)

        try writeConfig(#"{"format": "hdf5", "train": "\#(folder)/train.h5"}"#, to: config, folder: folder)
        let (missing, missingOutput) = try qat(["eval", "--checkpoint", checkpoint, "--config", config])
        XCTAssertEqual(missing, 1, missingOutput)
        XCTAssertEqual(missingOutput.split(separator: "\n").count, 1, missingOutput)
        XCTAssertTrue(missingOutput.contains(config) && missingOutput.contains("data.test"), missingOutput)
    }

    /// One config trains, evaluates and verifies: QAT on an HDF5 training set, deploy, then
    /// `eval --deploy` and `verify` on the HDF5 test set.
    func testTrainDeployEvalAndVerifyShareTheConfigsHDF5Data() throws {
        let folder = try makeTemporaryFolder(self)
        try writeHDF5Copy(of: .train, count: 128, to: folder + "/train.h5")
        try writeHDF5Copy(of: .test, count: 64, to: folder + "/test.h5")
        let config = folder + "/run.json"
        try writeConfig(#"{"format": "hdf5", "train": "\#(folder)/train.h5", "test": "\#(folder)/test.h5", "mean": 0.2860, "std": 0.3530}"#,
                        to: config, folder: folder)
        let qatCheckpoint = folder + "/qat.h5", deployFile = folder + "/int8.h5"
        let (trainStatus, log) = try qat(["train", "--config", config, "--epochs", "1", "--output", qatCheckpoint])
        XCTAssertEqual(trainStatus, 0, log)
        let (deployStatus, deployed) = try qat(["deploy", "--checkpoint", qatCheckpoint, "--output", deployFile])
        XCTAssertEqual(deployStatus, 0, deployed)

        let (evalStatus, evaluated) = try qat(["eval", "--deploy", deployFile, "--config", config])
        XCTAssertEqual(evalStatus, 0, evaluated)
        XCTAssertTrue(evaluated.contains("INT8 test accuracy") && evaluated.contains("(64 images"), evaluated)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", qatCheckpoint, "--deploy", deployFile, "--config", config])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("fake quant (\(qatCheckpoint)) vs INT8"), verified)
    }
}
