import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain

/// Dataset files beyond IDX (HDF5, .npy), uint8 images normalised per batch, and the IDX loader
/// keeping its old numbers now that its images stay uint8.
final class DataFormatTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    /// The batches equal, bit for bit, what the loader computed when it stored floats:
    /// p · 1/(255·0.3530) − 0.2860/0.3530, with the arithmetic done in Float.
    func testFashionMNISTBatchesKeepTheBitsOfTheFloatLoader() throws {
        let data = try fashionMNIST(.train, count: 300)
        guard case .bytes(let pixels) = data.stored else { return XCTFail("Fashion-MNIST should stay uint8") }
        XCTAssertEqual(pixels.count, 300 * 784)
        let scale: Float = 1 / (255 * 0.3530), shift: Float = 0.2860 / 0.3530
        let expected = pixels.map { Float($0) * scale - shift }
        XCTAssertEqual(data.normalizedImages.map(\.bitPattern), expected.map(\.bitPattern))
        let batch = data.batch([7, 3])
        XCTAssertEqual(batch.images.shape, [2, 1, 28, 28])
        XCTAssertEqual(Array(batch.images.storage[0..<784]).map(\.bitPattern), Array(expected[(7 * 784)..<(8 * 784)]).map(\.bitPattern))
        XCTAssertEqual(batch.labels, [data.labels[7], data.labels[3]])
    }

    /// Two 1×2 images of two channels stored NHWC as uint8; mean [0.5, 0.25], std [0.5, 0.25]:
    /// channel 0 maps 0 → −1, 255 → 1, 51 (0.2) → −0.6; channel 1 maps 0 → −1, 255 → 3.
    func testHDF5UInt8NHWCIsTransposedAndNormalisedPerChannel() throws {
        let path = folder + "/train.h5"
        // Image 0: (x0: c0 0, c1 255), (x1: c0 51, c1 0); image 1 all 255.
        let image0: [UInt8] = [0, 255, 51, 0]
        try DataFiles.hdf5(at: path, images: image0 + [UInt8](repeating: 255, count: 4), shape: [2, 1, 2, 2], labels: [Int16(1), 0])
        let norm = Normalization(mean: [0.5, 0.25], standardDeviation: [0.5, 0.25])
        let data = try HDF5Dataset.load(file: path, limit: nil, inputShape: [2, 1, 2], layout: nil, normalization: norm, inMemory: nil)
        XCTAssertEqual(data.layout, .nhwc)
        XCTAssertEqual(data.sampleShape, [2, 1, 2])
        XCTAssertEqual(data.labels, [1, 0])
        let images = data.batch([0, 1]).images
        XCTAssertEqual(images.shape, [2, 2, 1, 2])
        let expected: [Float] = [-1, -0.6, 3, -1, 1, 1, 3, 3]
        XCTAssertEqual(images.storage.count, expected.count)
        for (a, b) in zip(images.storage, expected) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// A float32 file is taken as pixels already in [0, 1]: (x − mean) / std, no division by 255.
    func testNPYFloatImagesAreNormalisedWithoutScaling() throws {
        let images = folder + "/x.npy", labels = folder + "/y.npy"
        try DataFiles.write(DataFiles.npy(descr: "<f4", shape: [1, 1, 1, 3], payload: DataFiles.bytes([Float(0), 0.5, 1])), to: images)
        try DataFiles.write(DataFiles.npy(descr: "<i8", shape: [1], payload: DataFiles.bytes([Int64(4)]), version: 2), to: labels)
        let data = try NPYDataset.load(images: images, labels: labels, limit: nil, inputShape: [1, 1, 3], layout: nil,
                                       normalization: Normalization(mean: [0.5], standardDeviation: [0.5]))
        XCTAssertEqual(data.batch([0]).images.storage, [-1, 0, 1])
        XCTAssertEqual(data.labels, [4])
    }

    /// [N, H, W] (Keras' MNIST) is one channel; uint8 and int32 labels; `limit` keeps the first.
    func testNPYRankThreeImagesAndLimit() throws {
        let images = folder + "/x.npy", labels = folder + "/y.npy"
        try DataFiles.write(DataFiles.npy(descr: "|u1", shape: [3, 1, 2], payload: [0, 255, 255, 0, 1, 2]), to: images)
        try DataFiles.write(DataFiles.npy(descr: "<i4", shape: [3], payload: DataFiles.bytes([Int32(2), 0, 1])), to: labels)
        let data = try NPYDataset.load(images: images, labels: labels, limit: 2, inputShape: [1, 1, 2], layout: nil,
                                       normalization: .identity)
        XCTAssertEqual(data.count, 2)
        XCTAssertEqual(data.labels, [2, 0])
        XCTAssertEqual(data.normalizedImages, [0, 1, 1, 0])
    }

    /// Streamed images (rows read per batch from the file) give the same batches as in memory,
    /// in a shuffled order, augmented, with a limit.
    func testStreamedHDF5BatchesEqualInMemoryOnes() throws {
        let path = folder + "/big.h5"
        let count = 50, size = 3 * 5 * 5
        let pixels: [UInt8] = (0..<(count * size)).map { (i: Int) -> UInt8 in UInt8((i * 37 + i / 7) % 256) }
        let labels: [Int64] = (0..<count).map { Int64($0 % 10) }
        try DataFiles.hdf5(at: path, images: pixels, shape: [count, 5, 5, 3], labels: labels)
        let norm = Normalization(mean: [0.4, 0.5, 0.6], standardDeviation: [0.2, 0.25, 0.3])
        let load = { (inMemory: Bool) in
            try HDF5Dataset.load(file: path, limit: 45, inputShape: [3, 5, 5], layout: .nhwc, normalization: norm, inMemory: inMemory)
        }
        let memory = try load(true), streamed = try load(false)
        guard case .streamed = streamed.stored else { return XCTFail("in_memory false should stream") }
        let augmentation = Augmentation(cropPadding: 2, horizontalFlip: true)
        let a = Array(memory.batches(size: 8, order: .shuffled(seed: 3, epoch: 1), augmentation: augmentation))
        let b = Array(streamed.batches(size: 8, order: .shuffled(seed: 3, epoch: 1), augmentation: augmentation))
        XCTAssertEqual(a.count, 6)
        XCTAssertEqual(a.map(\.images.storage), b.map(\.images.storage))
        XCTAssertEqual(a.map(\.labels), b.map(\.labels))
        XCTAssertEqual(streamed.count, 45)
    }

    /// Fashion-MNIST written to HDF5 (NHWC) and to .npy (NCHW) by the test gives, under the
    /// config's mean/std, the same batches bit for bit as the IDX folder.
    func testFashionMNISTThroughHDF5AndNPYEqualsIDX() throws {
        let idx = try fashionMNIST(.train, count: 200)
        guard case .bytes(let pixels) = idx.stored else { return XCTFail("Fashion-MNIST should stay uint8") }
        var source = DataSource()
        source.mean = [0.2860]
        source.standardDeviation = [0.3530]
        source.format = .hdf5
        source.trainFile = folder + "/fm.h5"
        try DataFiles.hdf5(at: source.trainFile!, images: pixels, shape: [200, 28, 28, 1], labels: idx.labels.map { Int64($0) })
        let viaHDF5 = try source.load(.train, limit: nil, inputShape: [1, 28, 28])
        source.format = .npy
        (source.trainImages, source.trainLabels) = (folder + "/x.npy", folder + "/y.npy")
        try DataFiles.write(DataFiles.npy(descr: "|u1", shape: [200, 1, 28, 28], payload: pixels), to: source.trainImages!)
        try DataFiles.write(DataFiles.npy(descr: "|u1", shape: [200], payload: idx.labels.map { UInt8($0) }), to: source.trainLabels!)
        let viaNPY = try source.load(.train, limit: nil, inputShape: [1, 28, 28])
        XCTAssertEqual(viaHDF5.layout, .nhwc)
        let order = BatchOrder.shuffled(seed: 5, epoch: 2), flip = Augmentation(cropPadding: 2, horizontalFlip: true)
        let reference = Array(idx.batches(size: 64, order: order, augmentation: flip))
        for other in [viaHDF5, viaNPY] {
            let batches = Array(other.batches(size: 64, order: order, augmentation: flip))
            XCTAssertEqual(batches.map { $0.images.storage.map(\.bitPattern) }, reference.map { $0.images.storage.map(\.bitPattern) })
            XCTAssertEqual(batches.map(\.labels), reference.map(\.labels))
        }
    }

    /// Layout: declared, or the one under which a sample has the model's input shape.
    func testLayoutIsDetectedFromTheModelInputOrDeclared() throws {
        let error = { (m: String) in InputError(file: "f", message: m) }
        XCTAssertEqual(try RawDataset.resolveLayout([9, 28, 28, 1], inputShape: [1, 28, 28], declared: nil, error: error).0, .nhwc)
        XCTAssertEqual(try RawDataset.resolveLayout([9, 3, 32, 32], inputShape: [3, 32, 32], declared: nil, error: error).0, .nchw)
        XCTAssertEqual(try RawDataset.resolveLayout([9, 3, 3, 3], inputShape: [3, 3, 3], declared: .nhwc, error: error).0, .nhwc)
        assertInputError(try RawDataset.resolveLayout([9, 3, 3, 3], inputShape: [3, 3, 3], declared: nil, error: error),
                         mentions: ["set data.layout"])
        assertInputError(try RawDataset.resolveLayout([9, 32, 32, 3], inputShape: [1, 32, 32], declared: nil, error: error),
                         mentions: ["has 3 channels", "expects 1"])
        XCTAssertEqual(try RawDataset.resolveLayout([9, 32, 32], inputShape: [1, 32, 32], declared: nil, error: error).1, [1, 32, 32])
        assertInputError(try RawDataset.resolveLayout([9, 32], inputShape: nil, declared: nil, error: error), mentions: ["rank 2"])
    }
}
