import Foundation
import QATCore
import QATIO

/// Images and labels held in memory, images already normalised to float.
public struct Dataset: Sendable {
    /// [count, C, H, W] flattened.
    public var images: [Float]
    public var labels: [Int32]
    public var sampleShape: [Int]
    /// The files the images and labels came from (empty for data made in memory), for errors.
    public var imageFile = ""
    public var labelFile = ""

    public var count: Int { labels.count }
    public var sampleSize: Int { sampleShape.reduce(1, *) }

    /// The first `limit` samples (tests and quick runs).
    public func prefix(_ limit: Int) -> Dataset {
        let n = min(limit, count)
        return Dataset(images: Array(images[0..<(n * sampleSize)]), labels: Array(labels[0..<n]), sampleShape: sampleShape,
                       imageFile: imageFile, labelFile: labelFile)
    }

    /// Copies the samples at `indices` into one batch [B, C, H, W] with their labels.
    public func batch(_ indices: ArraySlice<Int>) -> (images: Tensor, labels: [Int32]) {
        let size = sampleSize
        var storage = [Float](repeating: 0, count: indices.count * size)
        var batchLabels = [Int32](repeating: 0, count: indices.count)
        images.withUnsafeBufferPointer { src in
            storage.withUnsafeMutableBufferPointer { dst in
                for (row, index) in indices.enumerated() {
                    (dst.baseAddress! + row * size).update(from: src.baseAddress! + index * size, count: size)
                    batchLabels[row] = labels[index]
                }
            }
        }
        return (Tensor(shape: [indices.count] + sampleShape, storage: storage), batchLabels)
    }
}

/// Fashion-MNIST (or MNIST) from a folder of IDX files, as Debian's `dataset-fashion-mnist` ships them.
public enum FashionMNIST {
    public static let defaultPath = "/usr/share/datasets/fashion-mnist"
    /// Mean and standard deviation of the Fashion-MNIST training pixels (scaled to [0, 1]).
    public static let mean: Float = 0.2860
    public static let standardDeviation: Float = 0.3530

    public enum Split: String, Sendable { case train, test }

    /// Loads one split; pixels become (p/255 − mean) / std. `limit` keeps only the first samples.
    public static func load(folder: String, split: Split, limit: Int? = nil) throws -> Dataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw InputError(file: folder, message: "dataset folder not found (install Debian's dataset-fashion-mnist or set data.path)")
        }
        let prefix = split == .train ? "train" : "t10k"
        let imageFile = try findFile(folder: folder, stem: "\(prefix)-images-idx3-ubyte")
        let labelFile = try findFile(folder: folder, stem: "\(prefix)-labels-idx1-ubyte")
        let (imageDims, pixels) = try IDX.readUInt8(file: imageFile)
        let (labelDims, labelBytes) = try IDX.readUInt8(file: labelFile)
        guard imageDims.count == 3 else {
            throw InputError(file: imageFile, message: "expected images of rank 3 [count, rows, cols], got \(imageDims)")
        }
        guard labelDims.count == 1, labelDims[0] == imageDims[0] else {
            throw InputError(file: labelFile, message: "has \(labelDims) labels for \(imageDims[0]) images in \(imageFile)")
        }
        if let bad = labelBytes.firstIndex(where: { $0 > 9 }) {
            throw InputError(file: labelFile, message: "label \(labelBytes[bad]) at index \(bad) is outside 0...9")
        }
        let n = min(limit ?? imageDims[0], imageDims[0])
        let size = imageDims[1] * imageDims[2]
        let scale = 1 / (255 * standardDeviation), shift = mean / standardDeviation
        var images = [Float](repeating: 0, count: n * size)
        for i in 0..<(n * size) { images[i] = Float(pixels[i]) * scale - shift }
        return Dataset(images: images, labels: labelBytes[0..<n].map { Int32($0) },
                       sampleShape: [1, imageDims[1], imageDims[2]], imageFile: imageFile, labelFile: labelFile)
    }

    private static func findFile(folder: String, stem: String) throws -> String {
        for candidate in ["\(stem).gz", stem] {
            let path = (folder as NSString).appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw InputError(file: folder, message: "missing \(stem).gz (or \(stem)) in the dataset folder")
    }
}
