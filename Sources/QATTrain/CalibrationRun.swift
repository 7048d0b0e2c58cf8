import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// What `qat calibrate` measured: the float model and the calibrated (fake-quant) model on the
/// same test images, and the layers it calibrated.
public struct CalibrationReport: Sendable {
    public var float: Evaluation
    public var quantized: Evaluation
    public var calibratedLayers: [String]
    /// Pairs cross-layer equalization equalized (empty without it).
    public var equalizedPairs: [CrossLayerEqualization.Pair] = []
    /// What DMQ did, layer by layer (empty without it).
    public var migrations: [DMQ.Migration] = []
    /// What bias correction did (nil without it).
    public var biasCorrection: BiasCorrection.Result?
}

/// Post-training quantization (`qat calibrate`): a `TrainingRun` that stops where training would
/// start. It loads the float weights, attaches the plan's quantizers, calibrates them exactly as
/// `qat train` does before its first step (same batches, same calibrators), and writes the
/// result as a QAT checkpoint at step 0. Weights stay float in the file: ARQ quantizes them in
/// every fake-quant forward and at deployment, as for any QAT checkpoint.
extension TrainingRun {
    /// The checks of `qat calibrate` that need only the config and the data: a quantization plan,
    /// data that fits, enough training images for batch_num batches, an output path, and memory.
    func calibrationPreflight(train: Dataset, test: Dataset) throws {
        guard isQAT else {
            throw InputError(file: configFile, message: "has no layer rules, so there is nothing to calibrate "
                             + "(a float training config?): give a retrain config with quantized layers, e.g. Configs/retrain.json")
        }
        try checkData(train: train, test: test)
        try checkCalibrationBatches(trainCount: train.count)
        guard settings.output != nil else {
            throw InputError(file: configFile, keyPath: "checkpoint.output", message: "missing: calibrate needs an output checkpoint (--output)")
        }
        try MemoryBudget(spec: spec, graph: model.graph, batchSize: max(settings.batchSize, settings.evalBatchSize),
                         datasetValues: train.valuesInMemory + test.valuesInMemory).check()
    }

    /// Calibrates from float weights and saves the PTQ checkpoint to `settings.output`
    /// (atomically: on any error the file is not written). `test` gives the float and PTQ accuracy.
    /// The plan's PTQ transforms run around calibration (docs/ALGORITHMS.md §2.5); the float
    /// accuracy is that of the model as loaded.
    public func calibrate(train: Dataset, test: Dataset) throws -> CalibrationReport {
        try calibrationPreflight(train: train, test: test)
        guard let start = try startingCheckpoint() else {
            throw InputError(file: configFile, keyPath: "model.init",
                             message: "missing: calibrate needs float weights (--checkpoint, model.init, or an ONNX --model)")
        }
        try Self.requireFloat(start.checkpoint, file: start.file)
        try loadStartingPoint(start)
        if let plan { try model.checkFoldsBeforeCalibration(plan) }
        // Only now, with the input known to be good, may the output folder be created.
        let output = settings.output!
        try OutputFolder.requireWritable(OutputFolder.folder(of: output), setting: "--output")
        // Everything is checked: from here on, progress.
        log("post-training quantization of \(spec.name) from \(start.file), \(train.count) training and \(test.count) test images, "
            + "\(settings.threads) thread(s)")
        let rewrites = plan?.rewrittenLayers.keys.sorted().map(\.rawValue) ?? []
        log("evaluating the float model\(rewrites.isEmpty ? "" : " (after \(rewrites.joined(separator: ", ")))") on \(test.count) test images")
        let float = model.withoutFakeQuantizers { trainer.evaluate(test) }
        let casts = model.fakeQuantizers.filter { $0.settings.floatCast != nil }.count
        log("calibrating \(model.fakeQuantizers.filter(\.quantizesInput).count) layer(s) on \(batchNum) batch(es) of \(settings.batchSize) training images"
            + (casts == 0 ? "" : " (\(casts) cast layer(s) need no calibration)"))
        let outcome = try calibrateQuantizers(train: train, transforms: plan?.ptqTransforms ?? [])
        log("evaluating the calibrated model (fake quant) on \(test.count) test images")
        // This forward also sets each quantizer's activation grid and weight scales, which the
        // checkpoint stores (they depend on the bounds and weights only, not on the images).
        let quantized = trainer.evaluate(test)
        try save(to: output)
        log("saved \(output)")
        return CalibrationReport(float: float, quantized: quantized, calibratedLayers: outcome.calibrated,
                                 equalizedPairs: outcome.equalizedPairs, migrations: outcome.migrations,
                                 biasCorrection: outcome.biasCorrection)
    }

    /// Calibration starts from float weights: a checkpoint with quantizer state (QAT or PTQ) has
    /// bounds already, which calibrate would silently keep.
    static func requireFloat(_ checkpoint: CheckpointFile, file: String) throws {
        let quantized = QuantizerStateKey.layers(in: checkpoint.extra.keys)
        guard quantized.isEmpty && checkpoint.attributes[CheckpointFile.quantizationAttribute] == nil else {
            let layers = quantized.isEmpty ? "" : " (quantized layers: \(quantized.sorted().joined(separator: ", ")))"
            throw InputError(file: file, message: "is a QAT checkpoint\(layers), calibrate needs a float checkpoint; "
                             + "to fine-tune this one use qat train --init")
        }
    }
}

extension Model {
    /// Runs `body` on the float model: the fake quantizers (and the adds' shared ones) are
    /// detached meanwhile and then put back unchanged.
    public func withoutFakeQuantizers<T>(_ body: () throws -> T) rethrows -> T {
        let weighted = layers.compactMap { $0 as? WeightedLayer }
        let quantizers = weighted.map(\.quantizer)
        for layer in weighted { layer.quantizer = nil }
        defer { for (layer, quantizer) in zip(weighted, quantizers) { layer.quantizer = quantizer } }
        return try withoutTensorQuantizers(body)
    }
}
