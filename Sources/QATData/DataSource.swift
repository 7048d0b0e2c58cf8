import Foundation
import QATIO

/// Where a run's training and test data come from, and how it is normalised and augmented:
/// the config's `data` section (docs/CONFIG.md, docs/DATASETS.md).
public struct DataSource: Equatable, Sendable {
    public enum Format: String, Equatable, Sendable, CaseIterable {
        /// A folder of IDX files (Fashion-MNIST, MNIST).
        case idx
        /// One HDF5 file per split with datasets `/images` and `/labels`.
        case hdf5
        /// One `.npy` file of images and one of labels per split.
        case npy
    }

    public enum Split: String, Sendable { case train, test }

    public var format = Format.idx
    /// The IDX folder (format idx).
    public var folder = FashionMNIST.defaultPath
    /// The HDF5 file of each split (format hdf5).
    public var trainFile: String?
    public var testFile: String?
    /// The images and labels `.npy` files of each split (format npy).
    public var trainImages: String?
    public var trainLabels: String?
    public var testImages: String?
    public var testLabels: String?
    /// Per-channel (or one for all) mean and standard deviation of the pixels scaled to [0, 1];
    /// nil: Fashion-MNIST's for idx, 0 and 1 (no normalisation) for the other formats.
    public var mean: [Float]?
    public var standardDeviation: [Float]?
    /// The stored order of a sample; nil: detected from the model's input shape.
    public var layout: ImageLayout?
    /// HDF5 only: hold the images in memory (true) or read each batch's rows from the file
    /// (false); nil: in memory up to `HDF5Dataset.streamingThreshold` bytes of images.
    public var inMemory: Bool?
    /// Applied to training batches only.
    public var augmentation = Augmentation()

    public init() {}

    public var normalization: Normalization {
        let defaults = format == .idx ? FashionMNIST.normalization : Normalization.identity
        return Normalization(mean: mean ?? defaults.mean, standardDeviation: standardDeviation ?? defaults.standardDeviation)
    }

    /// Loads one split. `inputShape` is the model's [C, H, W]: it decides an undeclared layout
    /// and is what channel counts and mean/std lengths are checked against. `configFile` names the
    /// config in errors about its keys.
    public func load(_ split: Split, limit: Int?, inputShape: [Int]?, configFile: String = "config") throws -> Dataset {
        if let channels = inputShape?.first, inputShape?.count == 3 {
            for (key, values) in [("mean", normalization.mean), ("std", normalization.standardDeviation)]
            where values.count != 1 && values.count != channels {
                throw InputError(file: configFile, keyPath: "data.\(key)",
                                 message: "has \(values.count) values, the model's input has \(channels) channel"
                                     + (channels == 1 ? " (give one value)" : "s (give 1 or \(channels) values)"))
            }
        }
        func missing(_ key: String) -> InputError {
            InputError(file: configFile, keyPath: "data." + key, message: "missing: format \(format.rawValue) needs it")
        }
        switch format {
        case .idx:
            return try FashionMNIST.load(folder: folder, split: split == .train ? .train : .test, limit: limit, normalization: normalization)
        case .hdf5:
            guard let file = split == .train ? trainFile : testFile else { throw missing(split.rawValue) }
            return try HDF5Dataset.load(file: file, limit: limit, inputShape: inputShape, layout: layout,
                                        normalization: normalization, inMemory: inMemory)
        case .npy:
            let prefix = split.rawValue
            guard let images = split == .train ? trainImages : testImages else { throw missing(prefix + "_images") }
            guard let labels = split == .train ? trainLabels : testLabels else { throw missing(prefix + "_labels") }
            return try NPYDataset.load(images: images, labels: labels, limit: limit, inputShape: inputShape, layout: layout,
                                       normalization: normalization)
        }
    }
}

/// Images and labels as read from a file, before they become a `Dataset`: the checks and the
/// layout rule every format shares.
struct RawDataset {
    var images: StoredImages
    /// [N, C, H, W], [N, H, W, C] or [N, H, W] (one channel), as stored.
    var imageShape: [Int]
    var labels: [Int64]
    var labelShape: [Int]
    /// Files and dataset paths inside them ("" for a file that is one array), for errors.
    var imageFile: String, imagePath: String
    var labelFile: String, labelPath: String

    /// Checks ranks, counts, labels and finiteness and decides the layout; `count` samples
    /// (the limit already applied) are kept from the labels.
    func dataset(count: Int, inputShape: [Int]?, layout declared: ImageLayout?, normalization: Normalization) throws -> Dataset {
        func imageError(_ message: String) -> InputError { InputError(file: imageFile, keyPath: imagePath, message: message) }
        func labelError(_ message: String) -> InputError { InputError(file: labelFile, keyPath: labelPath, message: message) }
        let (layout, sampleShape) = try checkShapes(inputShape: inputShape, declared: declared)
        if let bad = labels.firstIndex(where: { $0 < 0 }) {
            throw labelError("label \(labels[bad]) at index \(bad) is negative (labels are classes 0, 1, …)")
        }
        if let bad = labels.firstIndex(where: { $0 > Int64(Int32.max) }) {
            throw labelError("label \(labels[bad]) at index \(bad) is too large for a class index")
        }
        if case .floats(let values) = images, let bad = values.firstIndex(where: { !$0.isFinite }) {
            let size = sampleShape.reduce(1, *)
            throw imageError("image \(bad / max(size, 1)) holds \(values[bad]) at value \(bad % max(size, 1)) (pixels must be finite)")
        }
        return Dataset(stored: images, labels: labels[0..<count].map { Int32($0) }, sampleShape: sampleShape, layout: layout,
                       normalization: normalization, imageFile: imageFile, labelFile: labelFile,
                       imagePath: imagePath, labelPath: labelPath)
    }

    /// The layout rule: `declared` when given; otherwise the layout under which a stored sample
    /// has the model's [C, H, W] — an error when both do (C == H == W with different data
    /// orders) or neither does. Rank-3 images [N, H, W] are one channel. Returns [C, H, W].
    static func resolveLayout(_ shape: [Int], inputShape: [Int]?, declared: ImageLayout?,
                              error: (String) -> InputError) throws -> (ImageLayout, [Int]) {
        switch shape.count {
        case 3: return (.nchw, [1, shape[1], shape[2]])
        case 4: break
        default:
            throw error("has rank \(shape.count) (shape \(shape)), expected rank 4 [N, C, H, W] or [N, H, W, C], or rank 3 [N, H, W]")
        }
        let asNCHW = [shape[1], shape[2], shape[3]], asNHWC = [shape[3], shape[1], shape[2]]
        if let declared { return (declared, declared == .nchw ? asNCHW : asNHWC) }
        guard let inputShape, inputShape.count == 3 else { return (.nchw, asNCHW) }
        switch (asNCHW == inputShape, asNHWC == inputShape) {
        case (true, false): return (.nchw, asNCHW)
        case (false, true): return (.nhwc, asNHWC)
        case (true, true):
            throw error("shape \(shape) is [N, C, H, W] and [N, H, W, C] alike for the model's input \(inputShape): set data.layout")
        case (false, false):
            if shape[1] == inputShape[1] && shape[2] == inputShape[2] {
                throw error("has \(shape[3]) channels as [N, H, W, C] \(shape), the model expects \(inputShape[0])")
            }
            if shape[2] == inputShape[1] && shape[3] == inputShape[2] {
                throw error("has \(shape[1]) channels as [N, C, H, W] \(shape), the model expects \(inputShape[0])")
            }
            throw error("shape \(shape) fits the model's input \(inputShape) neither as [N, C, H, W] nor as [N, H, W, C]")
        }
    }

    /// Ranks and counts, then the layout (`resolveLayout`): the checks that need only the shapes,
    /// so a loader makes them before reading any values.
    func checkShapes(inputShape: [Int]?, declared: ImageLayout?) throws -> (ImageLayout, [Int]) {
        let imageError = { (message: String) in InputError(file: imageFile, keyPath: imagePath, message: message) }
        guard labelShape.count == 1 else {
            throw InputError(file: labelFile, keyPath: labelPath, message: "has rank \(labelShape.count) (shape \(labelShape)), expected rank 1 [N]")
        }
        let resolved = try Self.resolveLayout(imageShape, inputShape: inputShape, declared: declared, error: imageError)
        guard labelShape[0] == imageShape[0] else {
            throw InputError(file: labelFile, keyPath: labelPath,
                             message: "has \(labelShape[0]) labels for \(imageShape[0]) images in \(imageFile)\(imagePath.isEmpty ? "" : " " + imagePath)")
        }
        return resolved
    }
}
