import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// The settings of a run that change its math, as its checkpoints record them in root string
/// attributes (docs/CHECKPOINT.md), each JSON under config key names, readable with h5py alone:
/// - `run_settings`: the data and train settings (`RunSettings.recordJSON`);
/// - `quantization` (QAT runs): the resolved plan as an explicit AMCT-form retrain config, written
///   by `RetrainConfig.jsonText` and read back by `CheckpointFile.quantizationConfig`;
/// - `config_hash`: a fingerprint of the two.
/// With `model_spec` (which the checkpoint stores anyway) they are compared key by key on resume:
/// `train.learning_rate`, `conv1.retrain_data_config.dst_type`, `model_spec`. Output paths, the
/// save cadence and the evaluation batch size are not recorded: they change no number.
public struct RunRecord: Equatable, Sendable {
    public static let settingsAttribute = "run_settings"
    public static let hashAttribute = "config_hash"

    /// Every recorded setting: key path → its value as compact JSON.
    public var entries: [String: String]
    /// The attributes a checkpoint stores: `run_settings`, `config_hash` and, for QAT, `quantization`.
    public var attributes: [String: String]

    public init(settings: RunSettings, spec: ModelSpec, plan: QuantizationPlan?) {
        let settingsText = settings.recordJSON.text
        var attributes = [Self.settingsAttribute: settingsText]
        let quantization = plan?.explicitConfig()
        if let plan, let quantization {
            attributes[CheckpointFile.quantizationAttribute] = quantization.jsonText(layerOrder: plan.layers.map(\.name))
        }
        // The text was just written, so it parses.
        let settingsJSON = try! JSONValue(parsing: Data(settingsText.utf8), file: Self.settingsAttribute)
        self.init(attributes: attributes, settings: settingsJSON, quantization: quantization, modelSpec: spec.jsonString())
    }

    /// The record of a checkpoint, or nil when it has none (one written before qat recorded
    /// `run_settings`, whose `config` attribute held Swift printouts).
    public init?(checkpoint: CheckpointFile, file: String) throws {
        guard let settingsText = checkpoint.attributes[Self.settingsAttribute] else { return nil }
        var attributes = [Self.settingsAttribute: settingsText]
        attributes[CheckpointFile.quantizationAttribute] = checkpoint.attributes[CheckpointFile.quantizationAttribute]
        let settingsJSON = try JSONValue(parsing: Data(settingsText.utf8), file: "\(file) (\(Self.settingsAttribute))")
        self.init(attributes: attributes, settings: settingsJSON, quantization: try checkpoint.quantizationConfig(file: file),
                  modelSpec: checkpoint.modelSpecJSON)
    }

    private init(attributes: [String: String], settings: JSONValue, quantization: RetrainConfig?, modelSpec: String) {
        var entries = settings.leaves
        if let quantization {
            entries.merge(quantization.json().leaves) { settingsValue, _ in settingsValue }
        }
        entries["model_spec"] = modelSpec
        self.entries = entries
        self.attributes = attributes
        self.attributes[Self.hashAttribute] = Self.fingerprint(attributes)
    }

    /// FNV-1a 64 over `run_settings` and then `quantization` (if any): a short fingerprint users
    /// can compare at a glance.
    private static func fingerprint(_ attributes: [String: String]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let text = (attributes[settingsAttribute] ?? "") + (attributes[CheckpointFile.quantizationAttribute] ?? "")
        for byte in text.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(format: "%016llx", h)
    }

    public var hash: String { attributes[Self.hashAttribute]! }

    /// Key paths whose values differ (or exist on one side only), sorted.
    public func differences(from other: RunRecord) -> [String] {
        Set(entries.keys).union(other.entries.keys).filter { entries[$0] != other.entries[$0] }.sorted()
    }
}

extension RunSettings {
    /// The settings that change a run's numbers, under their config keys:
    /// `{"data": {"path", "train_limit"}, "train": {"epochs", "batch_size", "optimizer",
    /// "learning_rate", "momentum", "weight_decay", "schedule", …, "seed", "threads"}}`.
    /// The schedule adds its own keys: `lr_floor` and `cosine_epochs` (the epochs the cosine spans,
    /// `epochs` unless a library caller set it apart), or `step_every` and `step_factor`.
    /// Data beyond IDX adds `format` and its training files (instead of `path`), and any set
    /// `mean`, `std`, `layout` and `augment`.
    public var recordJSON: JSONValue {
        var data: [JSONValue.Member] = []
        // Keys beyond path and train_limit appear only when set, so records of IDX runs keep their bytes.
        let files: [(String, String?)]
        switch self.data.format {
        case .idx: files = [("path", dataPath)]
        case .hdf5: files = [("train", self.data.trainFile)]
        case .npy: files = [("train_images", self.data.trainImages), ("train_labels", self.data.trainLabels)]
        }
        if self.data.format != .idx { data.append(.init("format", JSONValue(self.data.format.rawValue))) }
        for case let (key, file?) in files { data.append(.init(key, JSONValue(file))) }
        if let trainLimit { data.append(.init("train_limit", JSONValue(trainLimit))) }
        if let mean = self.data.mean { data.append(.init("mean", .array(mean.map { JSONValue($0) }))) }
        if let std = self.data.standardDeviation { data.append(.init("std", .array(std.map { JSONValue($0) }))) }
        if let layout = self.data.layout { data.append(.init("layout", JSONValue(layout.rawValue))) }
        let augmentation = self.data.augmentation
        if !augmentation.isIdentity {
            data.append(.init("augment", .object([.init("random_crop_padding", JSONValue(augmentation.cropPadding)),
                                                  .init("horizontal_flip", JSONValue(augmentation.horizontalFlip))])))
        }
        var train: [JSONValue.Member] = [
            .init("epochs", JSONValue(epochs)), .init("batch_size", JSONValue(batchSize)),
            .init("optimizer", JSONValue(optimizer.rawValue)), .init("learning_rate", JSONValue(learningRate)),
            .init("momentum", JSONValue(momentum)), .init("weight_decay", JSONValue(weightDecay)),
        ]
        switch schedule {
        case .constant:
            train.append(.init("schedule", JSONValue("constant")))
        case let .step(every, factor):
            train += [.init("schedule", JSONValue("step")), .init("step_every", JSONValue(every)),
                      .init("step_factor", JSONValue(factor))]
        case let .cosine(scheduleEpochs, floor):
            train += [.init("schedule", JSONValue("cosine")), .init("lr_floor", JSONValue(floor)),
                      .init("cosine_epochs", JSONValue(scheduleEpochs))]
        }
        train.append(.init("seed", .number(String(seed))))  // a UInt64, every digit kept
        // OpenBLAS splits sums differently per thread count, so the thread count changes the bits.
        train.append(.init("threads", JSONValue(threads)))
        return .object([.init("data", .object(data)), .init("train", .object(train))])
    }
}
