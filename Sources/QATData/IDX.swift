import Foundation
import QATCore
import QATIO

/// Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed):
/// a big-endian header `0 0 type rank`, `rank` UInt32 sizes, then the raw values.
public enum IDX {
    /// Reads an unsigned-byte IDX file; returns its dimensions and bytes.
    public static func readUInt8(file: String) throws -> (dimensions: [Int], values: [UInt8]) {
        var bytes = try Gzip.readFile(file)
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw InputError(file: file, message: "not an IDX file (bad magic number)")
        }
        guard bytes[2] == 0x08 else {
            throw InputError(file: file, message: "IDX element type 0x\(String(bytes[2], radix: 16)) is not unsigned byte (0x08)")
        }
        let rank = Int(bytes[3])
        guard rank >= 1, bytes.count >= 4 + 4 * rank else {
            throw InputError(file: file, message: "IDX header is truncated")
        }
        var dimensions: [Int] = []
        for d in 0..<rank {
            let o = 4 + 4 * d
            dimensions.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        // The sizes come from the file: their product may overflow, which is damage, not a crash.
        var expected = 1
        for size in dimensions {
            let (product, overflow) = expected.multipliedReportingOverflow(by: size)
            guard !overflow else {
                throw InputError(file: file, message: "IDX header promises an impossible shape \(dimensions) (more values than memory can hold)")
            }
            expected = product
        }
        let payload = bytes.count - (4 + 4 * rank)
        guard payload == expected else {
            throw InputError(file: file, message: "IDX header promises \(expected) values for shape \(dimensions), file holds \(payload)")
        }
        // Drop the header in place: a copy would double the peak memory of a large file.
        bytes.removeSubrange(0..<(4 + 4 * rank))
        return (dimensions, bytes)
    }
}

/// Fashion-MNIST (or MNIST) from a folder of IDX files, as Debian's `dataset-fashion-mnist` ships them.
public enum FashionMNIST {
    public static let defaultPath = "/usr/share/datasets/fashion-mnist"
    /// Mean and standard deviation of the Fashion-MNIST training pixels (scaled to [0, 1]).
    public static let mean: Float = 0.2860
    public static let standardDeviation: Float = 0.3530
    public static let normalization = Normalization(mean: [mean], standardDeviation: [standardDeviation])

    public enum Split: String, Sendable { case train, test }

    /// Loads one split as uint8 pixels, normalised per batch as (p/255 − mean) / std.
    /// `limit` keeps only the first samples.
    public static func load(folder: String, split: Split, limit: Int? = nil,
                            normalization: Normalization = FashionMNIST.normalization) throws -> Dataset {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw InputError(file: folder, message: "dataset folder not found (install Debian's dataset-fashion-mnist or set data.path)")
        }
        let prefix = split == .train ? "train" : "t10k"
        let imageFile = try findFile(folder: folder, stem: "\(prefix)-images-idx3-ubyte")
        let labelFile = try findFile(folder: folder, stem: "\(prefix)-labels-idx1-ubyte")
        var (imageDims, pixels) = try IDX.readUInt8(file: imageFile)
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
        pixels.removeSubrange((n * imageDims[1] * imageDims[2])...)
        return Dataset(stored: .bytes(pixels), labels: labelBytes[0..<n].map { Int32($0) },
                       sampleShape: [1, imageDims[1], imageDims[2]], normalization: normalization,
                       imageFile: imageFile, labelFile: labelFile)
    }

    private static func findFile(folder: String, stem: String) throws -> String {
        for candidate in ["\(stem).gz", stem] {
            let path = (folder as NSString).appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw InputError(file: folder, message: "missing \(stem).gz (or \(stem)) in the dataset folder")
    }
}
