import Foundation
import QATIO

/// A dataset in one HDF5 file: `/images` (uint8 or float32, [N, C, H, W], [N, H, W, C] or
/// [N, H, W]) and `/labels` (any integer type, [N]), as h5py writes them. One file per split.
public enum HDF5Dataset {
    public static let imagesPath = "/images"
    public static let labelsPath = "/labels"
    /// Above this many bytes of images a file is streamed unless `in_memory` says otherwise.
    public static let streamingThreshold = 1 << 30

    public static func load(file: String, limit: Int?, inputShape: [Int]?, layout: ImageLayout?,
                            normalization: Normalization, inMemory: Bool?) throws -> Dataset {
        let h5 = try HDF5File.open(at: file)
        func fail(_ path: String, _ message: String) -> InputError { InputError(file: file, keyPath: path, message: message) }
        for path in [imagesPath, labelsPath] where h5.kind(at: path) != .dataset {
            throw fail(path, "missing: a dataset file holds \(imagesPath) (uint8 or float32) and \(labelsPath) (integers)")
        }
        let imageType = try h5.elementType(at: imagesPath), labelType = try h5.elementType(at: labelsPath)
        guard imageType == .uint8 || imageType == .float32 else {
            throw fail(imagesPath, "has dtype \(imageType); images must be uint8 or float32")
        }
        guard [.int8, .int16, .int32, .int64, .uint8, .uint16, .uint32, .uint64].contains(labelType) else {
            throw fail(labelsPath, "has dtype \(labelType); labels must be integers")
        }
        var raw = RawDataset(images: .bytes([]), imageShape: try h5.shape(at: imagesPath), labels: [], labelShape: try h5.shape(at: labelsPath),
                             imageFile: file, imagePath: imagesPath, labelFile: file, labelPath: labelsPath)
        let (_, sampleShape) = try raw.checkShapes(inputShape: inputShape, declared: layout)
        let count = min(limit ?? raw.imageShape[0], raw.imageShape[0])
        raw.labels = try h5.readRows(Int64.self, at: labelsPath, rows: Array(0..<count))
        raw.labelShape = [count]
        raw.imageShape[0] = count
        let sampleSize = sampleShape.reduce(1, *)
        let elementSize = imageType == .uint8 ? 1 : 4
        if inMemory ?? (count * sampleSize * elementSize <= streamingThreshold) {
            let rows = Array(0..<count)
            raw.images = imageType == .uint8 ? .bytes(try h5.readRows(UInt8.self, at: imagesPath, rows: rows))
                                             : .floats(try h5.readRows(Float.self, at: imagesPath, rows: rows))
        } else {
            let streamed = StreamedImages(file: h5, path: imagesPath, isFloat: imageType == .float32, sampleSize: sampleSize)
            if imageType == .float32 { try streamed.checkFinite(count: count) }
            raw.images = .streamed(streamed)
        }
        return try raw.dataset(count: count, inputShape: inputShape, layout: layout, normalization: normalization)
    }
}

/// Images read from an HDF5 file batch by batch: a batch's rows are one read of the union of
/// their hyperslabs, so only one batch of images is in memory at a time. The file stays open.
public final class StreamedImages: @unchecked Sendable {
    public let file: HDF5File
    public let path: String
    public let isFloat: Bool
    let sampleSize: Int
    /// The library may not be built thread-safe: one read at a time.
    private let lock = NSLock()

    init(file: HDF5File, path: String, isFloat: Bool, sampleSize: Int) {
        self.file = file
        self.path = path
        self.isFloat = isFloat
        self.sampleSize = sampleSize
    }

    /// The rows read for one batch, in ascending row order, and where each dataset index landed.
    enum Rows {
        case bytes([UInt8], rowOf: [Int: Int])
        case floats([Float], rowOf: [Int: Int])
    }

    func readRows(_ indices: ArraySlice<Int>) -> Rows {
        let rows = Array(Set(indices)).sorted()
        let rowOf = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1, $0) })
        lock.lock()
        defer { lock.unlock() }
        do {
            return isFloat ? .floats(try file.readRows(Float.self, at: path, rows: rows), rowOf: rowOf)
                           : .bytes(try file.readRows(UInt8.self, at: path, rows: rows), rowOf: rowOf)
        } catch {
            // The file was checked and is held open: only an I/O failure of the disk gets here.
            fatalError("\(file.path): \(path): reading images failed: \(error)")
        }
    }

    /// Float pixels must be finite: checked once, 4096 rows at a time, before training.
    func checkFinite(count: Int) throws {
        var start = 0
        while start < count {
            let end = min(start + 4096, count)
            let values = try file.readRows(Float.self, at: path, rows: Array(start..<end))
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw InputError(file: file.path, keyPath: path,
                                 message: "image \(start + bad / sampleSize) holds \(values[bad]) at value \(bad % sampleSize) (pixels must be finite)")
            }
            start = end
        }
    }
}
