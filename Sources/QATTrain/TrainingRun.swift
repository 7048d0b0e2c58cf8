import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATONNX

/// Errors of a run as a whole (resume refused, non-finite activations), with what to do.
public struct RunError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One `qat train` job: builds the model, loads the initial checkpoint, attaches fake quantizers
/// and calibrates them (QAT), trains, and checkpoints. Float training is the same job without a plan.
public final class TrainingRun {
    public let configFile: String
    public let settings: RunSettings
    public let spec: ModelSpec
    public let plan: QuantizationPlan?
    public let record: RunRecord
    public let model: Model
    public let trainer: Trainer
    /// One row per finished epoch: epoch, step, train loss, train acc, test loss, test acc, lr.
    public private(set) var history: [[Float]] = []
    public var log: (String) -> Void = { print($0) }
    /// metrics.csv and metrics.svg, beside the checkpoints.
    public private(set) lazy var metrics: MetricsLog? = {
        guard trainer.communicator.isRoot else { return nil }   // one record per job, by rank 0
        let layers = model.fakeQuantizers.map(\.layerName)
        if let directory = settings.checkpointDirectory { return MetricsLog(folder: directory, layerNames: layers) }
        guard let output = settings.output else { return nil }
        // No run folder: name the record after the checkpoint, so runs sharing a folder keep theirs.
        let folder = (output as NSString).deletingLastPathComponent
        let stem = ((output as NSString).lastPathComponent as NSString).deletingPathExtension
        return MetricsLog(folder: folder.isEmpty ? "." : folder, name: stem + "-metrics", layerNames: layers)
    }()

    /// `config` may be nil for a pure AMCT file whose layer rules come with `--model`/`--init` flags.
    /// `communicator`: the ranks of a data-parallel run (`mpirun`), one process by default.
    public init(configFile: String, config: RetrainConfig?, settings: RunSettings, communicator: Communicator = .single) throws {
        self.configFile = configFile
        self.settings = settings
        let source = try ModelSource.load(file: settings.modelSpec)
        spec = config?.model(for: source.spec) ?? source.spec
        importedWeights = source.weights
        try ModelGraph(spec, file: settings.modelSpec).requireClassifier(file: settings.modelSpec)
        if let config, config.hasQuantizationRules {
            plan = try config.resolve(for: source.spec)
        } else {
            plan = nil
        }
        record = RunRecord(settings: settings, spec: spec, plan: plan)
        model = try Model(spec: spec, seed: settings.seed)
        trainer = Trainer(model: model, settings: settings, communicator: communicator)
        batchNum = config?.batchCount ?? 1
    }

    let batchNum: Int
    /// The weights of an ONNX `model.spec`: the starting point when there is no `model.init`.
    let importedWeights: CheckpointFile?
    /// The checkpoint `resume` restored, whose position `train` checks against the data.
    var resumedFrom: String?

    public var isQAT: Bool { plan != nil }

    /// One split of the configured data (`settings.data`), checked against the model's input.
    public func loadData(_ split: DataSource.Split, limit: Int?) throws -> Dataset {
        try settings.data.load(split, limit: limit, inputShape: spec.inputShape, configFile: configFile)
    }

    /// Starts from `settings.initCheckpoint` (if any), attaches quantizers, calibrates.
    public func prepareFreshStart(train: Dataset) throws {
        let start = try startingCheckpoint()
        try loadStartingPoint(start)
        if let start { log("initialised from \(start.file)") }
        // The PTQ transforms change float weights: only a start from float weights gets them.
        var transforms = plan?.ptqTransforms ?? []
        if let start, !QuantizerStateKey.layers(in: start.checkpoint.extra.keys).isEmpty, !transforms.isEmpty {
            log("not applied: \(transforms.sorted().map(\.rawValue).joined(separator: ", ")) (\(start.file) is already calibrated)")
            transforms = []
        }
        try calibrateQuantizers(train: train, transforms: transforms)
    }

    /// The checkpoint a fresh run starts from: `model.init`, else the weights of an ONNX
    /// `model.spec`; nil when the run starts from random weights.
    func startingCheckpoint() throws -> (file: String, checkpoint: CheckpointFile)? {
        try settings.initCheckpoint.map { ($0, try CheckpointFile.read(from: $0)) }
            ?? importedWeights.map { (settings.modelSpec, $0) }
    }

    /// Loads `start` (if any) into the model and attaches the plan's quantizers.
    func loadStartingPoint(_ start: (file: String, checkpoint: CheckpointFile)?) throws {
        if let (initFile, checkpoint) = start {
            if let plan { model.applyQuantization(plan) }
            // A float checkpoint has no quantizer parameters yet: calibration provides them. A QAT
            // checkpoint brings its learned bounds and state, and those layers are not recalibrated.
            try model.load(checkpoint, file: initFile, mayBeMissing: { $0.contains("_quant.") })
            try model.loadQuantizerState(checkpoint.extra, file: initFile, skippingMissingLayers: true)
        } else if let plan {
            model.applyQuantization(plan)
        }
    }

    /// What calibration did: the calibrated layers and, with the PTQ transforms, what they changed.
    struct CalibrationOutcome {
        var calibrated: [String] = []
        var equalizedPairs: [CrossLayerEqualization.Pair] = []
        var migrations: [DMQ.Migration] = []
        var biasCorrection: BiasCorrection.Result?
    }

    /// Calibrates every quantizer that has no bounds yet on the first `batch_num` training
    /// batches (`Trainer.calibrationBatches`), with cross-layer equalization and DMQ before it and bias
    /// correction after it when `transforms` say so (docs/ALGORITHMS.md §2.5). Float runs: nothing.
    @discardableResult
    func calibrateQuantizers(train: Dataset, transforms: Set<PTQTransform> = []) throws -> CalibrationOutcome {
        guard let plan else { return CalibrationOutcome() }
        try model.checkFoldsBeforeCalibration(plan)
        try checkData(train: train, test: nil)
        try checkCalibrationBatches(trainCount: train.count)
        var outcome = CalibrationOutcome()
        for (rewrite, layers) in plan.rewrittenLayers.sorted(by: { $0.key < $1.key }) {
            log("\(rewrite.rawValue): \(layers.count) layer(s) changed before quantizing: \(layers.joined(separator: ", "))")
        }
        if transforms.contains(.crossLayerEqualization) {
            outcome.equalizedPairs = CrossLayerEqualization.apply(to: model)
            log("cross-layer equalization: " + (outcome.equalizedPairs.isEmpty ? "no conv → [BN] → ReLU → conv pair in this model"
                : outcome.equalizedPairs.map { "\($0.first) → \($0.second)" }.joined(separator: ", ")))
        }
        // Every rank calibrates on the same whole batches (eval mode: nothing is exchanged), so the
        // bounds are the same bits on every rank and equal to one process's.
        let batches = trainer.calibrationBatches(from: train, count: batchNum)
        if transforms.contains(.dmq) {
            outcome.migrations = try DMQ.apply(to: model, plan: plan, batches: batches)
            for m in outcome.migrations {
                log(String(format: "DMQ on %@ (α %g, divided out of %@): scales %.3g…%.3g over %d channel(s)", m.layer, m.strength,
                           m.producer, m.scales.min()!, m.scales.max()!, m.scales.count))
            }
        }
        outcome.calibrated = try model.calibrate(on: batches)
        if !outcome.calibrated.isEmpty {
            log("calibrated \(plan.describeCalibration(of: outcome.calibrated)) on \(batches.count) batch(es)")
        }
        if transforms.contains(.biasCorrection) {
            log("bias correction on the \(batches.count) calibration batch(es)")
            let result = BiasCorrection.apply(to: model, batches: batches)
            for c in result.corrected { log(String(format: "  %@: largest shift %.3g", c.layer, c.largestShift)) }
            if !result.skipped.isEmpty { log("  no bias to correct (and no folded BatchNorm): " + result.skipped.joined(separator: ", ")) }
            outcome.biasCorrection = result
        }
        return outcome
    }

    /// Restores everything from a checkpoint of this run. Refuses a checkpoint whose math-relevant
    /// settings differ (naming the keys) unless `force`.
    public func resume(from file: String, force: Bool) throws {
        let checkpoint = try CheckpointFile.read(from: file)
        if !force {
            guard let stored = try RunRecord(checkpoint: checkpoint, file: file) else {
                throw RunError("\(file): refusing to resume: the checkpoint has no \(RunRecord.settingsAttribute) record "
                               + "(an older qat wrote it), so its settings cannot be compared; pass --force to resume anyway")
            }
            let differing = stored.differences(from: record)
            if !differing.isEmpty {
                throw RunError("\(file): refusing to resume: the config differs from the checkpoint's in \(differing.joined(separator: ", ")) "
                               + "(these change the result; pass --force to resume anyway)")
            }
        }
        // Everything is read and checked before anything of the run changes (RunChecks.swift).
        let position = try Self.readPosition(checkpoint, file: file, epochs: settings.epochs)
        let restoredHistory = try Self.readHistory(checkpoint, file: file, epoch: position.epoch)
        var optimizerState: [String: Tensor] = [:]
        for (key, tensor) in checkpoint.extra where key.hasPrefix(CheckpointFile.RunKey.optimizerGroup) {
            optimizerState[String(key.dropFirst(CheckpointFile.RunKey.optimizerGroup.count))] = tensor
        }
        if let plan { model.applyQuantization(plan) }
        try Self.checkOptimizerState(optimizerState, parameters: model.parameters, file: file)
        try model.load(checkpoint, file: file)
        try model.loadQuantizerState(checkpoint.extra, file: file)
        try trainer.optimizer.loadState(optimizerState)
        trainer.restore(epoch: position.epoch, step: position.step, progress: position.progress)
        history = restoredHistory
        resumedFrom = file
        metrics?.restore(upTo: trainer.step)
        log("resumed from \(file) at epoch \(trainer.epoch + 1), step \(trainer.step)")
    }

    /// Everything needed to resume exactly and to deploy.
    public func checkpointFile() -> CheckpointFile {
        var extra = model.quantizerStateTensors()
        for (name, tensor) in trainer.optimizer.state { extra[CheckpointFile.RunKey.optimizerGroup + name] = tensor }
        if !history.isEmpty {
            extra["metrics/history"] = Tensor(shape: [history.count, history[0].count], storage: history.flatMap { $0 })
        }
        let p = trainer.progress
        let counters: [String: Int64] = [
            CheckpointFile.RunKey.epoch: Int64(trainer.epoch), CheckpointFile.RunKey.step: Int64(trainer.step),
            // The data order of epoch e is a pure function of (seed, e): this is the whole RNG state.
            "seed": Int64(bitPattern: settings.seed),
            "progress_batch": Int64(p.batch), "progress_correct": Int64(p.correct), "progress_seen": Int64(p.seen),
            // The running loss sum is a Double; its bits keep a resumed epoch summary exact.
            "progress_loss_sum_bits": Int64(bitPattern: p.lossSum.bitPattern),
        ]
        var attributes = record.attributes
        attributes["kind"] = isQAT ? "qat" : "float"
        return model.checkpointFile(attributes: attributes,
                                    counters: counters, extra: extra)
    }

    /// Writes the checkpoint (rank 0 of a data-parallel run; the other ranks hold the same state).
    public func save(to path: String) throws {
        guard trainer.communicator.isRoot else { return }
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        try checkpointFile().write(to: path)
    }

    /// Trains the remaining epochs; returns the path of the final checkpoint, if one was written.
    @discardableResult
    public func train(on train: Dataset, test: Dataset, progress: ((EpochProgress, Int) -> Void)? = nil) throws -> String? {
        let directory = settings.checkpointDirectory
        try checkData(train: train, test: test)
        if let resumedFrom { try checkPosition(trainCount: train.count, file: resumedFrom) }
        try prepareOutputFolders()
        while trainer.epoch < settings.epochs {
            let summary: EpochSummary
            do {
                summary = try trainer.trainEpoch(on: train, test: test, progress: progress) { trainer in
                    if self.settings.saveEvery > 0, trainer.step % self.settings.saveEvery == 0, let directory {
                        try self.save(to: "\(directory)/step-\(trainer.step).h5")
                    }
                    if let metrics = self.metrics, trainer.step % metrics.interval == 0 {
                        let p = trainer.progress
                        try metrics.append(.init(epoch: trainer.epoch, step: trainer.step, kind: "step", loss: p.lossSum / Double(max(p.seen, 1)),
                                                 trainAccuracy: Double(p.correct) / Double(max(p.seen, 1)), learningRate: trainer.optimizer.learningRate,
                                                 clipBounds: self.clipBounds))
                    }
                }
            } catch let error as TrainingError {
                throw RunError("\(error)\(locateNonFinite(train: train))")
            }
            history.append([Float(summary.epoch), Float(trainer.step), Float(summary.train.loss), Float(summary.train.accuracy),
                            Float(summary.test.loss), Float(summary.test.accuracy), summary.learningRate])
            try metrics?.append(.init(epoch: summary.epoch, step: trainer.step, kind: "epoch", loss: summary.train.loss,
                                      trainAccuracy: summary.train.accuracy, testLoss: summary.test.loss,
                                      testAccuracy: summary.test.accuracy, learningRate: summary.learningRate, clipBounds: clipBounds))
            log(String(format: "epoch %d/%d  lr %.4f  loss %.4f  train acc %.2f%%  test loss %.4f  test acc %.2f%%  %.0f img/s  %.1f s",
                       summary.epoch, settings.epochs, summary.learningRate, summary.train.loss, 100 * summary.train.accuracy,
                       summary.test.loss, 100 * summary.test.accuracy, summary.imagesPerSecond, summary.seconds))
            if let directory { try save(to: "\(directory)/epoch-\(summary.epoch).h5") }
        }
        let final = settings.output ?? directory.map { "\($0)/final.h5" }
        if let final {
            try save(to: final)
            log("saved \(final)")
        }
        return final
    }

    /// The clip_min, clip_max the next forward will use, for every quantized layer in order
    /// (with fixed_min that is 0, whatever the optimizer just wrote into clip_min).
    private var clipBounds: [Float] {
        model.fakeQuantizers.flatMap { q in
            let a = q.activation
            return [a.fixedMin ? 0 : a.clipMin.value.storage[0], a.clipMax.value.storage[0]]
        }
    }

    /// After a non-finite loss: replays the failing batch and names the first layer whose output
    /// is not finite. The weights are those the failing step saw, since it stopped before updating.
    private func locateNonFinite(train: Dataset) -> String {
        var failing = train.batches(size: settings.batchSize, order: trainer.order(epoch: trainer.epoch), first: trainer.progress.batch,
                                    augmentation: settings.data.augmentation)
        guard let batch = failing.next() else { return "" }
        if !batch.images.isFinite {
            return "; the input batch itself is not finite: check the training data"
        }
        var culprit: String?
        _ = model.forward(batch.images, training: true, tape: nil) { index, output in
            if culprit == nil && !output.value.isFinite { culprit = self.model.layers[index].name }
        }
        return culprit.map { "; first non-finite activation: output of layer \($0)" } ?? ""
    }
}
extension RunError: UserFacingError {}
