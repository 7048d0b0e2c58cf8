import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain

/// The config's `data` section: formats, files, normalisation, layout, augmentation; old keys
/// unchanged; every mistake one line naming the key.
final class DataConfigTests: XCTestCase {
    func parse(_ data: String) throws -> RunSettings {
        try RunSettings.parse(JSONObject.parse(Data("{\"data\": \(data)}".utf8), file: "c.json"))
    }

    func testOldKeysAndDefaultsAreUnchanged() throws {
        let s = try parse(#"{"path": "/data/fm", "train_limit": 5, "test_limit": 7}"#)
        XCTAssertEqual(s.data.format, .idx)
        XCTAssertEqual(s.dataPath, "/data/fm")
        XCTAssertEqual(s.trainLimit, 5)
        XCTAssertEqual(s.testLimit, 7)
        XCTAssertEqual(s.data.normalization, FashionMNIST.normalization)
        XCTAssertTrue(s.data.augmentation.isIdentity)
        // The record of an IDX run without the new keys is what it always was.
        XCTAssertEqual(s.recordJSON["data"]?.compactText, #"{"path":"/data/fm","train_limit":5}"#)
    }

    func testHDF5AndNPYSections() throws {
        let h = try parse(#"""
            {"format": "hdf5", "train": "tr.h5", "test": "te.h5", "mean": [0.49, 0.48, 0.45], "std": 0.25,
             "layout": "nhwc", "in_memory": false, "augment": {"random_crop_padding": 4, "horizontal_flip": true}}
            """#)
        XCTAssertEqual(h.data.format, .hdf5)
        XCTAssertEqual(h.data.trainFile, "tr.h5")
        XCTAssertEqual(h.data.testFile, "te.h5")
        XCTAssertEqual(h.data.normalization, Normalization(mean: [0.49, 0.48, 0.45], standardDeviation: [0.25]))
        XCTAssertEqual(h.data.layout, .nhwc)
        XCTAssertEqual(h.data.inMemory, false)
        XCTAssertEqual(h.data.augmentation, Augmentation(cropPadding: 4, horizontalFlip: true))
        XCTAssertEqual(h.recordJSON["data"]?.compactText,
                       #"{"format":"hdf5","train":"tr.h5","mean":[0.49,0.48,0.45],"std":[0.25],"layout":"nhwc","augment":{"random_crop_padding":4,"horizontal_flip":true}}"#)

        let n = try parse(#"{"format": "npy", "train_images": "a.npy", "train_labels": "b.npy", "test_images": "c.npy", "test_labels": "d.npy"}"#)
        XCTAssertEqual([n.data.trainImages, n.data.trainLabels, n.data.testImages, n.data.testLabels], ["a.npy", "b.npy", "c.npy", "d.npy"])
        // No mean/std: pixels scaled to [0, 1] only.
        XCTAssertEqual(n.data.normalization, .identity)
    }

    func testMistakesNameTheKey() {
        let cases: [(String, [String])] = [
            (#"{"format": "csv"}"#, ["data.format", "unknown format \"csv\"", "idx, hdf5, npy"]),
            (#"{"format": "hdf5", "train": "a.h5"}"#, ["data.test", "missing"]),
            (#"{"format": "hdf5", "train": "a.h5", "test": "b.h5", "path": "/x"}"#, ["data.path", "format idx"]),
            (#"{"train": "a.h5"}"#, ["data.train", "format hdf5", "has format idx"]),
            (#"{"in_memory": true}"#, ["data.in_memory", "format hdf5"]),
            (#"{"format": "npy", "train_images": "a", "train_labels": "b", "test_images": "c"}"#, ["data.test_labels", "missing"]),
            (#"{"std": 0}"#, ["data.std", "> 0, got 0"]),
            (#"{"std": [0.3, -1]}"#, ["data.std", "> 0, got -1"]),
            (#"{"mean": []}"#, ["data.mean", "empty"]),
            (#"{"mean": "0.5"}"#, ["data.mean", "expected a number"]),
            (#"{"mean": [0.5, true]}"#, ["data.mean[1]", "expected a number"]),
            (#"{"layout": "chw"}"#, ["data.layout", "nchw, nhwc"]),
            (#"{"augment": {"random_crop_padding": -1}}"#, ["data.augment.random_crop_padding", "0...1024"]),
            (#"{"augment": {"vertical_flip": true}}"#, ["data.augment.vertical_flip", "unknown key"]),
            (#"{"augment": {"horizontal_flip": 1}}"#, ["data.augment.horizontal_flip", "true or false"]),
            (#"{"shuffle": true}"#, ["data.shuffle", "unknown key"]),
        ]
        for (json, fragments) in cases { assertInputError(try parse(json), mentions: ["c.json"] + fragments) }
    }
}
