import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain

/// Every problem a dataset file can have is one line naming the file, the dataset inside it
/// (HDF5) and the problem. Each case writes a small real file.
final class DataErrorTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    func loadHDF5(_ path: String, inputShape: [Int] = [1, 2, 2]) throws -> Dataset {
        try HDF5Dataset.load(file: path, limit: nil, inputShape: inputShape, layout: nil, normalization: .identity, inMemory: nil)
    }

    func hdf5<Image: HDF5Element, Label: HDF5Element>(_ name: String, images: [Image], shape: [Int], labels: [Label],
                                                     labelShape: [Int]? = nil) throws -> String {
        let path = folder + "/" + name + ".h5"
        try DataFiles.hdf5(at: path, images: images, shape: shape, labels: labels, labelShape: labelShape)
        return path
    }

    func testHDF5WrongRank() throws {
        let path = try hdf5("rank", images: [UInt8](repeating: 0, count: 8), shape: [2, 4], labels: [Int64(0), 1])
        assertInputError(try loadHDF5(path), mentions: [path, "/images", "rank 2"])
        let labels = try hdf5("labelrank", images: [UInt8](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Int64(0), 1], labelShape: [2, 1])
        assertInputError(try loadHDF5(labels), mentions: [labels, "/labels", "rank 2", "expected rank 1"])
    }

    func testHDF5CountMismatch() throws {
        let path = try hdf5("count", images: [UInt8](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Int64(0), 1, 2])
        assertInputError(try loadHDF5(path), mentions: [path, "/labels", "3 labels for 2 images"])
    }

    func testHDF5UnsupportedDtypes() throws {
        let images = try hdf5("int16", images: [Int16](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Int64(0), 1])
        assertInputError(try loadHDF5(images), mentions: [images, "/images", "dtype int16", "uint8 or float32"])
        let labels = try hdf5("floatlabels", images: [UInt8](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Float(0), 1])
        assertInputError(try loadHDF5(labels), mentions: [labels, "/labels", "dtype float32", "integers"])
    }

    func testHDF5MissingDataset() throws {
        let path = folder + "/missing.h5"
        let file = try HDF5File.create(at: path, withDigest: false)
        try file.write([UInt8](repeating: 0, count: 4), shape: [1, 1, 2, 2], at: "/images")
        try file.close()
        assertInputError(try loadHDF5(path), mentions: [path, "/labels", "missing"])
    }

    func testNegativeAndOutOfRangeLabels() throws {
        let negative = try hdf5("negative", images: [UInt8](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Int8(0), -3])
        assertInputError(try loadHDF5(negative), mentions: [negative, "/labels", "label -3 at index 1 is negative"])
        // Label 10 is no class of LeNet-5 (10 classes): the run's data check names the dataset.
        let lenet = try Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json")))
        let path = try hdf5("range", images: [UInt8](repeating: 0, count: 2 * 784), shape: [2, 28, 28, 1], labels: [UInt8(3), 10])
        let data = try loadHDF5(path, inputShape: [1, 28, 28])
        assertInputError(try data.checkFits(lenet, name: "training", folder: ""), mentions: [path, "/labels", "label 10 at index 1", "[0, 10)"])
    }

    func testNaNAndInfinitePixelsInFloatFiles() throws {
        let path = try hdf5("nan", images: [0, 0.5, .nan, 1, 0, 0, 0, 0] as [Float], shape: [2, 1, 2, 2], labels: [Int32(0), 1])
        assertInputError(try loadHDF5(path), mentions: [path, "/images", "image 0 holds nan at value 2"])
        // Streamed files are checked before training too.
        let streamed = try hdf5("inf", images: [0, 0, 0, 0, 0, 0, 0, .infinity] as [Float], shape: [2, 1, 2, 2], labels: [Int32(0), 1])
        assertInputError(try HDF5Dataset.load(file: streamed, limit: nil, inputShape: nil, layout: nil, normalization: .identity, inMemory: false),
                         mentions: [streamed, "/images", "image 1 holds inf at value 3"])
        let images = folder + "/x.npy", labels = folder + "/y.npy"
        try DataFiles.write(DataFiles.npy(descr: "<f4", shape: [1, 1, 1, 2], payload: DataFiles.bytes([Float(0), -.infinity])), to: images)
        try DataFiles.write(DataFiles.npy(descr: "|u1", shape: [1], payload: [0]), to: labels)
        assertInputError(try NPYDataset.load(images: images, labels: labels, limit: nil, inputShape: nil, layout: nil, normalization: .identity),
                         mentions: [images, "image 0 holds -inf at value 1"])
    }

    func testChannelCountNotMatchingTheModel() throws {
        let path = try hdf5("channels", images: [UInt8](repeating: 0, count: 2 * 3 * 784), shape: [2, 3, 28, 28], labels: [Int64(0), 1])
        assertInputError(try loadHDF5(path, inputShape: [1, 28, 28]), mentions: [path, "/images", "has 3 channels", "expects 1"])
    }

    func testNPYFormatErrors() throws {
        let file = folder + "/bad.npy"
        func assertRefused(_ data: Data, _ fragments: [String], line: UInt = #line) throws {
            try DataFiles.write(data, to: file)
            assertInputError(try NPYArray.read(file: file), mentions: [file] + fragments, line: line)
        }
        try assertRefused(Data("not numpy at all".utf8), ["bad magic"])
        try assertRefused(DataFiles.npy(descr: "<f4", shape: [2], payload: [UInt8](repeating: 0, count: 8), version: 3), ["version 3.0"])
        try assertRefused(DataFiles.npy(descr: "<f8", shape: [1], payload: [UInt8](repeating: 0, count: 8)), ["dtype '<f8'"])
        try assertRefused(DataFiles.npy(descr: ">f4", shape: [1], payload: [UInt8](repeating: 0, count: 4)), ["dtype '>f4'", "little-endian"])
        try assertRefused(DataFiles.npy(descr: "<f4", shape: [3], payload: [UInt8](repeating: 0, count: 8)), ["needs 12 bytes", "holds 8"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [],
                                        header: "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }"), ["fortran_order True"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [0, 0, 0, 0],
                                        header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}"), ["key 'extra'"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [0, 0, 0, 0],
                                        header: "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}"), ["repeats the key 'descr'"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [0, 0, 0, 0],
                                        header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1)}"), ["not a tuple"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [0, 0, 0, 0],
                                        header: "{'descr': '<f4', 'shape': (1,)}"), ["lacks one of"])
        try assertRefused(DataFiles.npy(descr: "", shape: [], payload: [0, 0, 0, 0],
                                        header: "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}"), ["non-negative integers"])
    }

    func testNPYPairErrors() throws {
        let images = folder + "/x.npy", labels = folder + "/y.npy"
        try DataFiles.write(DataFiles.npy(descr: "|u1", shape: [2, 1, 2, 2], payload: [UInt8](repeating: 0, count: 8)), to: images)
        try DataFiles.write(DataFiles.npy(descr: "<i8", shape: [3], payload: DataFiles.bytes([Int64(0), 1, 2])), to: labels)
        let load = { try NPYDataset.load(images: images, labels: labels, limit: nil, inputShape: [1, 2, 2], layout: nil, normalization: .identity) }
        assertInputError(try load(), mentions: [labels, "3 labels for 2 images"])
        try DataFiles.write(DataFiles.npy(descr: "<f4", shape: [2], payload: [UInt8](repeating: 0, count: 8)), to: labels)
        assertInputError(try load(), mentions: [labels, "<f4 is not supported for labels"])
        try DataFiles.write(DataFiles.npy(descr: "<i4", shape: [2], payload: DataFiles.bytes([Int32(0), -1])), to: labels)
        assertInputError(try load(), mentions: [labels, "label -1 at index 1 is negative"])
    }

    /// mean/std with a length that is neither 1 nor the model's channel count.
    func testMeanAndStdLengthMustMatchTheChannels() throws {
        var source = DataSource()
        source.format = .hdf5
        source.trainFile = try hdf5("ok", images: [UInt8](repeating: 0, count: 8), shape: [2, 1, 2, 2], labels: [Int64(0), 1])
        source.mean = [0.1, 0.2]
        assertInputError(try source.load(.train, limit: nil, inputShape: [1, 2, 2], configFile: "c.json"),
                         mentions: ["c.json", "data.mean", "has 2 values", "has 1 channel (give one value)"])
        source.mean = [0.1]
        source.standardDeviation = [0.1, 0.2, 0.3]
        assertInputError(try source.load(.train, limit: nil, inputShape: [1, 2, 2], configFile: "c.json"), mentions: ["data.std", "has 3 values"])
        source.standardDeviation = nil
        XCTAssertEqual(try source.load(.train, limit: nil, inputShape: [1, 2, 2], configFile: "c.json").count, 2)
    }
}
