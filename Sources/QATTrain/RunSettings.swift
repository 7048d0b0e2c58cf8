import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// The runtime's own settings, read from a config's reserved top-level sections
/// (`model`, `data`, `train`, `checkpoint`) and overridable from the command line.
/// Relative paths are taken from the current directory, like every other CLI argument.
public struct RunSettings: Equatable, Sendable {
    public enum OptimizerKind: String, CaseIterable, Sendable { case sgd, adam }
    /// Under mpirun: BatchNorm statistics over the whole global batch, or over each rank's shard.
    public enum BatchNormSyncMode: String, CaseIterable, Sendable {
        case global
        case perRank = "per-rank"
    }

    // model
    public var modelSpec = "Configs/models/lenet5.json"
    /// A float (or QAT) checkpoint whose parameters start the run.
    public var initCheckpoint: String?
    // data
    /// Format, files, normalisation and augmentation of the data (`DataSource`).
    public var data = DataSource()
    /// The IDX folder (format idx).
    public var dataPath: String {
        get { data.folder }
        set { data.folder = newValue }
    }
    /// Use only the first N training / test samples (quick runs and tests).
    public var trainLimit: Int?
    public var testLimit: Int?
    // train
    public var epochs = 10
    public var batchSize = 64
    public var evalBatchSize = 256
    public var optimizer = OptimizerKind.sgd
    public var learningRate: Float = 0.05
    public var momentum: Float = 0.9
    public var weightDecay: Float = 5e-4
    public var schedule = LearningRateSchedule.cosine(epochs: 10, floor: 0)
    public var seed: UInt64 = 1
    public var threads = 1
    /// Data-parallel runs only (docs/CONFIG.md `bn_sync`); one process ignores it.
    public var batchNormSync = BatchNormSyncMode.global
    // checkpoint
    /// Where the final checkpoint goes.
    public var output: String?
    /// Folder for per-epoch checkpoints (QAT runs).
    public var checkpointDirectory: String?
    /// Also save every N optimizer steps (0: only at epoch ends).
    public var saveEvery = 0

    public init() {}

    /// The sections this type reads (`calibration` belongs to the retrain config: RetrainConfig.swift).
    public static let sectionNames = ["model", "data", "train", "checkpoint"]

    /// Reads the reserved sections of `root`; keys outside them are left to the caller.
    public static func parse(_ root: JSONObject) throws -> RunSettings {
        var s = RunSettings()
        if let model = try root.object("model") {
            s.modelSpec = try path(model, "spec") ?? s.modelSpec
            s.initCheckpoint = try path(model, "init")
            try model.rejectUnknownKeys()
        }
        if let data = try root.object("data") {
            s.data = try parseDataSource(data)
            s.trainLimit = try positive(data, "train_limit")
            s.testLimit = try positive(data, "test_limit")
            try data.rejectUnknownKeys()
        }
        if let train = try root.object("train") {
            s.epochs = try bounded(train, "epochs", Limits.epochs) ?? s.epochs
            s.batchSize = try bounded(train, "batch_size", Limits.batchSize) ?? s.batchSize
            s.evalBatchSize = try bounded(train, "eval_batch_size", Limits.batchSize) ?? s.evalBatchSize
            if let name = try train.string("optimizer") {
                guard let kind = OptimizerKind(rawValue: name) else {
                    throw train.error("optimizer", "unknown optimizer \"\(truncatedForMessage(name))\" (allowed: sgd, adam)")
                }
                s.optimizer = kind
            }
            s.learningRate = try nonNegative(train, "learning_rate") ?? s.learningRate
            s.momentum = try nonNegative(train, "momentum") ?? s.momentum
            s.weightDecay = try nonNegative(train, "weight_decay") ?? s.weightDecay
            if let seed = try train.int("seed") {
                guard seed >= 0 else { throw train.error("seed", "must be ≥ 0, got \(seed)") }
                s.seed = UInt64(seed)
            }
            s.threads = try bounded(train, "threads", Limits.threads) ?? s.threads
            if let name = try train.string("bn_sync") {
                guard let mode = BatchNormSyncMode(rawValue: name) else {
                    throw train.error("bn_sync", "unknown mode \"\(truncatedForMessage(name))\" (allowed: global, per-rank)")
                }
                s.batchNormSync = mode
            }
            s.schedule = try parseSchedule(train, epochs: s.epochs)
            try train.rejectUnknownKeys()
        } else {
            s.schedule = .cosine(epochs: s.epochs, floor: 0)
        }
        if let checkpoint = try root.object("checkpoint") {
            s.output = try path(checkpoint, "output")
            s.checkpointDirectory = try path(checkpoint, "dir")
            s.saveEvery = try checkpoint.int("save_every") ?? 0
            guard s.saveEvery >= 0 else { throw checkpoint.error("save_every", "must be ≥ 0, got \(s.saveEvery)") }
            try checkpoint.rejectUnknownKeys()
        }
        return s
    }

    /// The `data` section's format, files, normalisation and augmentation (docs/CONFIG.md `data`).
    private static func parseDataSource(_ data: JSONObject) throws -> DataSource {
        var source = DataSource()
        if let name = try data.string("format") {
            guard let format = DataSource.Format(rawValue: name) else {
                throw data.error("format", "unknown format \"\(truncatedForMessage(name))\" (allowed: idx, hdf5, npy)")
            }
            source.format = format
        }
        let keysOfFormat: [(DataSource.Format, [String])] = [(.idx, ["path"]), (.hdf5, ["train", "test", "in_memory"]),
                                                            (.npy, ["train_images", "train_labels", "test_images", "test_labels"])]
        for (format, keys) in keysOfFormat where format != source.format {
            if let key = keys.first(where: data.contains) {
                throw data.error(key, "is a key of format \(format.rawValue), this data section has format \(source.format.rawValue)")
            }
        }
        func required(_ key: String) throws -> String {
            guard let value = try path(data, key) else { throw data.error(key, "missing: format \(source.format.rawValue) needs it") }
            return value
        }
        switch source.format {
        case .idx:
            source.folder = try path(data, "path") ?? source.folder
        case .hdf5:
            (source.trainFile, source.testFile) = (try required("train"), try required("test"))
            source.inMemory = try data.bool("in_memory")
        case .npy:
            (source.trainImages, source.trainLabels) = (try required("train_images"), try required("train_labels"))
            (source.testImages, source.testLabels) = (try required("test_images"), try required("test_labels"))
        }
        source.mean = try numbers(data, "mean", positive: false)
        source.standardDeviation = try numbers(data, "std", positive: true)
        if let name = try data.string("layout") {
            guard let layout = ImageLayout(rawValue: name) else {
                throw data.error("layout", "unknown layout \"\(truncatedForMessage(name))\" (allowed: nchw, nhwc)")
            }
            source.layout = layout
        }
        if let augment = try data.object("augment") {
            source.augmentation.cropPadding = try bounded(augment, "random_crop_padding", Limits.cropPadding) ?? 0
            source.augmentation.horizontalFlip = try augment.bool("horizontal_flip") ?? false
            try augment.rejectUnknownKeys()
        }
        return source
    }

    /// A number or a non-empty array of numbers (one per channel), finite, and > 0 if `positive`.
    private static func numbers(_ o: JSONObject, _ key: String, positive: Bool) throws -> [Float]? {
        guard let value = try o.value(key) else { return nil }
        let values = value is [Any] ? try o.doubleArray(key)! : [try o.double(key)!]
        guard !values.isEmpty else { throw o.error(key, "is empty: give one number, or one per channel") }
        for v in values where !v.isFinite || (positive && v <= 0) {
            throw o.error(key, positive ? "must be finite numbers > 0, got \(v)" : "must be finite numbers, got \(v)")
        }
        return values.map { Float($0) }
    }

    private static func parseSchedule(_ train: JSONObject, epochs: Int) throws -> LearningRateSchedule {
        let name = try train.string("schedule") ?? "cosine"
        switch name {
        case "constant": return .constant
        case "cosine": return .cosine(epochs: epochs, floor: Float(try train.double("lr_floor") ?? 0))
        case "step":
            let every = try bounded(train, "step_every", Limits.stepEvery) ?? max(1, epochs / 3)
            let factor = Float(try train.double("step_factor") ?? 0.1)
            return .step(every: every, factor: factor)
        default:
            throw train.error("schedule", "unknown schedule \"\(truncatedForMessage(name))\" (allowed: constant, step, cosine)")
        }
    }

    /// The documented range of each bounded integer setting (docs/CONFIG.md "Ranges"); the same
    /// ranges apply to the command-line flags that override them.
    public enum Limits {
        public static let epochs = 1...100_000
        public static let batchSize = 1...65_536
        public static let threads = 1...1_024
        public static let stepEvery = 1...100_000
        public static let cropPadding = 0...1_024
    }

    private static func bounded(_ o: JSONObject, _ key: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let v = try o.int(key) else { return nil }
        guard range.contains(v) else { throw o.error(key, "must be in \(range.lowerBound)...\(range.upperBound), got \(v)") }
        return v
    }

    /// A path-valued setting: when given, it must not be empty.
    private static func path(_ o: JSONObject, _ key: String) throws -> String? {
        guard let v = try o.string(key) else { return nil }
        guard !v.trimmingCharacters(in: .whitespaces).isEmpty else { throw o.error(key, "\"\(v)\" is not a path (empty)") }
        return v
    }

    private static func positive(_ o: JSONObject, _ key: String) throws -> Int? {
        guard let v = try o.int(key) else { return nil }
        guard v > 0 else { throw o.error(key, "must be a positive integer, got \(v)") }
        return v
    }

    private static func nonNegative(_ o: JSONObject, _ key: String) throws -> Float? {
        guard let v = try o.double(key) else { return nil }
        guard v >= 0, v.isFinite else { throw o.error(key, "must be a finite number ≥ 0, got \(v)") }
        return Float(v)
    }

    /// After `--epochs` changes the epoch count, a cosine schedule must span the new count.
    public mutating func setEpochs(_ count: Int) {
        epochs = count
        if case let .cosine(_, floor) = schedule { schedule = .cosine(epochs: count, floor: floor) }
    }
}
