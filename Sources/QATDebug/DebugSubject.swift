import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// What `qat compare` and `qat sensitivity` study: a checkpoint, and optionally the retrain
/// config that quantizes it (a float checkpoint) and whose runtime sections give the dataset,
/// seed and batch size that calibration draws with (docs/DEBUGGING.md).
public struct DebugSubject {
    public let checkpoint: String
    /// The model spec stored in the checkpoint.
    public let spec: ModelSpec
    /// A QAT checkpoint brings its own quantizers and trained clip bounds; a config's layer rules
    /// are then not used.
    public let isQAT: Bool
    /// The retrain config's file and contents, when one was given.
    public let configFile: String?
    public let config: RetrainConfig?
    /// The config's runtime sections (defaults without one), with the overrides applied.
    public let settings: RunSettings

    /// Reads the checkpoint's spec and the config; `dataPath` and `trainLimit` override the
    /// config's data section.
    public init(checkpoint: String, configFile: String?, dataPath: String? = nil, trainLimit: Int? = nil) throws {
        self.checkpoint = checkpoint
        let stored = try CheckpointFile.read(from: checkpoint)
        spec = try ModelSpec.parse(JSONObject.parse(Data(stored.modelSpecJSON.utf8), file: "\(checkpoint) (model_spec)"))
        isQAT = stored.attributes["quantization"] != nil
        self.configFile = configFile
        var settings = RunSettings()
        if let configFile {
            let (read, root) = try RetrainConfig.read(file: configFile)
            config = read
            settings = try RunSettings.parse(root)
        } else {
            config = nil
        }
        if let dataPath { settings.dataPath = dataPath }
        if let trainLimit { settings.trainLimit = trainLimit }
        self.settings = settings
    }

    /// The config's plan for the checkpoint's model; nil without a config or layer rules.
    public func plan() throws -> QuantizationPlan? {
        guard let config, config.hasQuantizationRules else { return nil }
        return try config.resolve(for: spec)
    }

    /// The first `batch_num` training batches in the order `qat train` draws them (its epoch-0
    /// shuffle with the settings' seed and batch size), from the training split limited to
    /// `settings.trainLimit`: the batches a QAT run of the same config calibrates on.
    public func calibrationBatches() throws -> [Tensor] {
        let train = try settings.data.load(.train, limit: settings.trainLimit, inputShape: spec.inputShape, configFile: configFile ?? "config")
        return Trainer.calibrationBatches(from: train, count: config?.batchCount ?? 1, settings: settings)
    }

    /// The first `limit` test images.
    public func testImages(limit: Int) throws -> Dataset {
        try settings.data.load(.test, limit: limit, inputShape: spec.inputShape, configFile: configFile ?? "config")
    }

    /// The line saying that a QAT checkpoint's own quantizers are used instead of the config's
    /// layer rules; nil when that is not the case.
    func ignoredConfigNote(what: String) -> String? {
        guard isQAT, let configFile, config?.hasQuantizationRules == true else { return nil }
        return "note: \(checkpoint) is a QAT checkpoint: its own quantizers and trained clip bounds are \(what); "
            + "the layer rules of \(configFile) are not"
    }
}
