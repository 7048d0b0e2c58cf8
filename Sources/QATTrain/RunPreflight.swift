import Foundation
import QATCore
import QATData
import QATIO
import QATModel

// What `qat train` checks once the config, the model and the data are loaded and before any
// work (calibration, resume, training): the data fits the model, batch_num fits the data,
// the output folders are writable, and the run fits in memory.

extension TrainingRun {
    /// All checks that need nothing but the loaded data; the CLI calls this before calibrating.
    public func preflight(train: Dataset, test: Dataset) throws {
        try checkData(train: train, test: test)
        if isQAT { try checkCalibrationBatches(trainCount: train.count) }
        try checkPowerOfTwoScalesStay()
        try checkWeightScaleMethodsArePostTraining()
        try checkShards(trainCount: train.count)
        try prepareOutputFolders()
        try MemoryBudget(spec: spec, graph: model.graph, batchSize: max(settings.batchSize, settings.evalBatchSize),
                         datasetValues: train.valuesInMemory + test.valuesInMemory).check()
    }

    /// Non-empty sets whose images have the model's input shape and whose labels are classes
    /// of the model, [0, classes). Errors name the data file.
    func checkData(train: Dataset, test: Dataset?) throws {
        try train.checkFits(model, name: "training", folder: settings.dataPath)
        try test?.checkFits(model, name: "test", folder: settings.dataPath)
    }

    /// Power-of-two input scales come from frozen clip bounds (docs/ALGORITHMS.md §1.1): ULQ
    /// would train them off the grid, so `qat train` refuses the combination instead of drifting.
    func checkPowerOfTwoScalesStay() throws {
        guard let layer = plan?.quantizedLayers.first(where: {
            $0.quantizer!.activationScaleType == .powerOfTwo && $0.quantizer!.learnClip
        }) else { return }
        throw InputError(file: configFile, keyPath: "layer \(layer.name)",
                         message: "scale_type poweroftwo cannot be trained: QAT learns the clip bounds, which leaves the "
                            + "power-of-two grid; run post-training quantization (qat calibrate), or give the layer learn_clip false")
    }

    /// Percentile, entropy and mse on weights search every weight row (a sort, a KL search, 100
    /// grids) where ARQ takes a max: repeated at every training step that would cost more than
    /// the step, so they are post-training settings (docs/CONFIG.md). diffs (4 grids) trains.
    func checkWeightScaleMethodsArePostTraining() throws {
        guard let layer = plan?.quantizedLayers.first(where: { [.percentile, .entropy, .mse].contains($0.quantizer!.weightScaleMethod) })
        else { return }
        throw InputError(file: configFile, keyPath: "layer \(layer.name)",
                         message: "weight method \(layer.quantizer!.weightScaleMethod.rawValue) is for post-training quantization "
                            + "(qat calibrate): QAT recomputes the weight scales at every step (use method maxmin or diffs for weights)")
    }

    /// Calibration reads batch_num batches of batch_size training images: their product (checked
    /// for overflow) may not exceed the training set.
    func checkCalibrationBatches(trainCount: Int) throws {
        let (needed, overflow) = batchNum.multipliedReportingOverflow(by: settings.batchSize)
        guard overflow || needed > trainCount else { return }
        throw InputError(file: configFile, keyPath: "batch_num",
                         message: "\(batchNum) batches of \(settings.batchSize) images is more than the \(trainCount) training images")
    }

    /// Data parallel: every rank needs at least one sample of every batch, the last one included.
    func checkShards(trainCount: Int) throws {
        let ranks = trainer.communicator.size
        let last = trainCount % settings.batchSize == 0 ? settings.batchSize : trainCount % settings.batchSize
        guard ranks > 1, min(settings.batchSize, last) < ranks else { return }
        throw InputError(file: configFile, keyPath: "train.batch_size",
                         message: "\(ranks) ranks need at least \(ranks) images in every batch, but batch_size \(settings.batchSize) over "
                         + "\(trainCount) training images leaves a last batch of \(last): change batch_size or the train limit")
    }

    /// Creates the checkpoint, output and metrics folders, proves them writable, and removes the
    /// temporaries interrupted writes left there (`TempFileCleanup`).
    func prepareOutputFolders() throws {
        guard trainer.communicator.isRoot else { return }   // rank 0 alone writes
        var folders: [(folder: String, setting: String)] = []
        if let directory = settings.checkpointDirectory { folders.append((directory, "checkpoint.dir")) }
        if let output = settings.output { folders.append((OutputFolder.folder(of: output), "checkpoint.output")) }
        for (folder, setting) in folders {
            try OutputFolder.requireWritable(folder, setting: setting)
            for name in TempFileCleanup.removeStale(in: folder) { log("removed \(name), left by an interrupted write") }
        }
    }
}

extension Dataset {
    /// A non-empty set whose images have the model's input shape and whose labels are classes of
    /// the model, [0, classes). Errors name the data file (`folder` for data made in memory).
    public func checkFits(_ model: Model, name: String, folder: String) throws {
        try checkFits(inputShape: model.spec.inputShape, classes: model.graph.numberOfClasses, modelName: model.spec.name,
                      name: name, folder: folder)
    }

    /// The same check for a model known by its input shape and class count (the INT8 engine).
    public func checkFits(inputShape: [Int], classes: Int, modelName: String, name: String, folder: String) throws {
        let file = imageFile.isEmpty ? folder : imageFile
        guard count > 0 else { throw InputError(file: file, keyPath: imagePath, message: "the \(name) set is empty") }
        guard sampleShape == inputShape else {
            throw InputError(file: file, keyPath: imagePath,
                             message: "\(name) images have shape \(sampleShape), the model \(modelName) expects \(inputShape)")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw InputError(file: labelFile.isEmpty ? file : labelFile, keyPath: labelPath,
                             message: "label \(labels[bad]) at index \(bad) is outside [0, \(classes)), the model's classes")
        }
    }
}

/// A rough upper estimate of the memory a training run needs, compared with the machine's
/// physical memory before anything is allocated (docs/CONFIG.md "Ranges"). Counted in float32
/// values: parameters ×4 (value, gradient, two optimizer moments), activations ×3 per sample
/// (output, gradient, what the backward pass keeps), each convolution's im2col buffer per
/// sample, and the dataset. Every product is checked for overflow.
public struct MemoryBudget {
    public var spec: ModelSpec
    public var graph: ModelGraph
    public var batchSize: Int
    public var datasetValues: Int

    public init(spec: ModelSpec, graph: ModelGraph, batchSize: Int, datasetValues: Int) {
        self.spec = spec
        self.graph = graph
        self.batchSize = batchSize
        self.datasetValues = datasetValues
    }

    /// Bytes needed, or nil when the count overflows Int (certainly too much).
    public var bytes: Int? {
        var parameters = 0, perSample = spec.inputShape.reduce(1, *), columns = 0
        for (index, layer) in spec.layers.enumerated() {
            let output = graph.outputShapes[index]
            perSample += output.reduce(1, *)
            switch layer.kind {
            case .conv2d(let c):
                let window = c.kernel.height * c.kernel.width
                parameters += c.outputChannels * (c.inputChannels / c.groups * window + 1)
                columns += c.inputChannels * window * output[1] * output[2]
            case .linear(let f): parameters += f.outputFeatures * (f.inputFeatures + 1)
            case .batchnorm2d(let b): parameters += 4 * b.features
            default: break
            }
        }
        var total = 0
        for (a, b) in [(parameters, 4), (perSample, 3 * batchSize), (columns, batchSize), (datasetValues, 1)] {
            let (product, overflowMultiply) = a.multipliedReportingOverflow(by: b)
            let (sum, overflowAdd) = total.addingReportingOverflow(product)
            if overflowMultiply || overflowAdd { return nil }
            total = sum
        }
        let (bytes, overflow) = total.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        return overflow ? nil : bytes
    }

    /// Refuses a run whose estimate exceeds `available` bytes (default: physical memory).
    public func check(available: UInt64 = ProcessInfo.processInfo.physicalMemory) throws {
        let gib = { (n: Double) in String(format: "%.1f GiB", n / Double(1 << 30)) }
        guard let bytes else {
            throw RunError("the model \(spec.name) at batch size \(batchSize) needs more memory than can be counted: lower the batch size or the model's sizes")
        }
        guard UInt64(bytes) > available else { return }
        throw RunError("the model \(spec.name) at batch size \(batchSize) needs about \(gib(Double(bytes))) of memory, "
                       + "this machine has \(gib(Double(available))): lower train.batch_size or the model's sizes")
    }
}
