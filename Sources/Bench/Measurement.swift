// One measurement per (model, mode, threads), as bench/pytorch_peers.py measures its peers, so
// that bench/compare.py can run both sides as interleaved pairs, one process per measurement.
import Foundation
import QAT

/// The networks of the comparison: spec files, or ONNX files imported in-process (QATONNX).
enum BenchModel: String, CaseIterable {
    case lenet5, resnetTiny = "resnet-tiny", vggSmall = "vgg-small"
    case mobilenetV2Tiny = "mobilenetv2-tiny", resnet18Tiny = "resnet18-tiny"

    var file: String {
        switch self {
        case .lenet5: "Configs/models/lenet5.json"
        case .resnetTiny: "Configs/models/resnet-tiny.json"
        case .vggSmall: "bench/models/vgg-small.json"
        case .mobilenetV2Tiny: "examples/onnx-models/mobilenetv2-tiny.onnx"
        case .resnet18Tiny: "examples/onnx-models/resnet18-tiny.onnx"
        }
    }

    /// Images of one timed pass, the peers' defaults (pytorch_peers.py TRAIN_IMAGES, INFER_IMAGES):
    /// about 5 s of PyTorch float training.
    var trainingImages: Int {
        switch self {
        case .lenet5, .resnetTiny: 20_000
        case .vggSmall: 2_560
        case .mobilenetV2Tiny: 5_120
        case .resnet18Tiny: 10_240
        }
    }

    var inferenceImages: Int {
        switch self {
        case .lenet5, .resnetTiny, .resnet18Tiny: 10_000
        case .vggSmall: 2_560
        case .mobilenetV2Tiny: 5_120
        }
    }
}

enum BenchMode: String, CaseIterable {
    case trainFloat = "train-float", trainQAT = "train-qat", inferInt8 = "infer-int8", inferFloat = "infer-float"
    /// Reports of ConvReport.swift rather than img/s of a model.
    case fmaPeak = "fma-peak", convLayers = "conv-layers"

    var isTraining: Bool {
        switch self {
        case .trainFloat, .trainQAT: true
        case .inferInt8, .inferFloat, .fmaPeak, .convLayers: false
        }
    }

    var isReport: Bool {
        switch self {
        case .fmaPeak, .convLayers: true
        case .trainFloat, .trainQAT, .inferInt8, .inferFloat: false
        }
    }
}

struct MeasurementResult {
    var model: BenchModel
    var mode: BenchMode
    var threads: Int
    var batch: Int
    var images: Int
    var seconds: Double
    var note: String?

    var imagesPerSecond: Double { Double(images) / max(seconds, 1e-9) }

    /// The fields of pytorch_peers.py's lines, in the same order.
    func jsonLine() -> String {
        let environment = ProcessInfo.processInfo.environment
        var fields: [(String, String)] = [
            ("peer", quoted("qat")), ("model", quoted(model.rawValue)), ("mode", quoted(mode.rawValue)),
            ("threads", "\(threads)"), ("batch", "\(batch)"), ("images", "\(images)"),
            ("seconds", String(format: "%.4f", seconds)), ("img_s", String(format: "%.1f", imagesPerSecond)),
            ("peak_rss_mb", String(format: "%.1f", peakResidentMegabytes())),
            ("load_1min", String(format: "%.2f", loadAverage())),
            ("versions", "{\"openblas_core\": \(quoted(BLAS.coreName)), "
                + "\"OPENBLAS_CORETYPE\": \(quoted(environment["OPENBLAS_CORETYPE"] ?? "unset"))}"),
        ]
        if let note { fields.append(("note", quoted(note))) }
        return "{" + fields.map { "\(quoted($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
    }

    func textLine() -> String {
        String(format: "%@ %@ %d thread(s): %.0f img/s (%d images, batch %d, %.2f s), peak RSS %.1f MB",
               model.rawValue, mode.rawValue, threads, imagesPerSecond, images, batch, seconds, peakResidentMegabytes())
            + (note.map { "  (\($0))" } ?? "")
    }
}

private func quoted(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

func loadAverage() -> Double {
    var loads = [0.0, 0.0, 0.0]
    return getloadavg(&loads, 3) > 0 ? loads[0] : -1
}

/// Fashion-MNIST's training split as an HDF5 dataset file (HDF5Dataset's layout), for `--train-data`.
func writeTrainingCopy(to path: String) throws {
    let train = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train)
    guard case .bytes(let pixels) = train.stored else { throw InputError(file: path, message: "expected uint8 images") }
    let file = try HDF5File.create(at: path, withDigest: false)
    try file.write(pixels, shape: [train.count] + train.sampleShape, at: HDF5Dataset.imagesPath)
    try file.write(train.labels.map { UInt8($0) }, shape: [train.count], at: HDF5Dataset.labelsPath)
    print("wrote \(train.count) images to \(path)")
}

private func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Builds, trains and runs one model the way `qat train` and `qat deploy` do, in-process.
struct Measurer {
    static let defaultTrainingBatch = 64, inferenceBatch = 256, warmUpSteps = 5

    let model: BenchModel
    let threads: Int
    /// A timed pass also ends after this long (img/s counts what was done), as the peers' does.
    let maxSeconds: Double
    /// Images per training step (the global batch under mpirun).
    var trainingBatch = Measurer.defaultTrainingBatch
    /// An HDF5 copy of the training split to stream from (`--train-data`); nil: the IDX files in memory.
    var streamedTrainingFile: String?

    /// The training split: in memory from the IDX files, or streamed from the HDF5 copy.
    func trainingSet() throws -> Dataset {
        guard let file = streamedTrainingFile else { return try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train) }
        return try HDF5Dataset.load(file: file, limit: nil, inputShape: [1, 28, 28], layout: .nchw,
                                    normalization: FashionMNIST.normalization, inMemory: false)
    }

    /// The model with the spec's (or the ONNX file's) weights, quantized with the default
    /// config (`qat create-config`) and calibrated on one training batch if `quantized`.
    func makeTrainer(quantized: Bool, train: Dataset) throws -> Trainer {
        let source = try ModelSource.load(file: model.file)
        let network = try Model(spec: source.spec, seed: 1)
        var settings = RunSettings()   // SGD lr 0.05, momentum 0.9, weight decay 5e-4, as the peers
        settings.batchSize = trainingBatch
        // Under mpirun the ranks share every batch, as `qat train` does (bench/mpi-scaling.sh).
        let trainer = Trainer(model: network, settings: settings, communicator: .fromEnvironment())
        if quantized {
            let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: source.spec).utf8), file: "default"))
            network.applyQuantization(try config.resolve(for: source.spec))
        }
        if let weights = source.weights {
            try network.load(weights, file: model.file, mayBeMissing: { $0.contains("_quant.") })
        }
        if quantized {
            try network.calibrate(on: trainer.calibrationBatches(from: train, count: 1))
        }
        return trainer
    }

    /// One pass over the first `images` of epoch 0's shuffled order of the 60,000 training
    /// images, timed end to end with the data pipeline (uint8 → normalised batch), after 5
    /// warm-up steps (drawn from epoch 1's order).
    func training(quantized: Bool, images: Int, timing: StepTiming? = nil) throws -> MeasurementResult {
        Runtime.configure(threads: threads)
        let train = try trainingSet()
        let trainer = try makeTrainer(quantized: quantized, train: train)
        for batch in train.batches(size: trainingBatch, order: trainer.order(epoch: 1), limit: Self.warmUpSteps,
                                   shard: trainer.batchShard) {
            _ = try trainer.trainStep(batch)
        }
        var done = 0
        let start = now()
        for batch in train.batches(size: trainingBatch, order: trainer.order(epoch: 0), limit: images / trainingBatch,
                                   shard: trainer.batchShard) {
            _ = try trainer.trainStep(batch, timing: timing)
            done += batch.count
            // Ranks must stop on the same step, so several ranks always do the whole pass.
            if trainer.communicator.size == 1 && now() - start >= maxSeconds { break }
        }
        let seconds = now() - start
        let ranks = trainer.communicator.size
        let summed = trainer.summedParameters.reduce(0) { $0 + $1.value.count }
        return MeasurementResult(model: model, mode: quantized ? .trainQAT : .trainFloat, threads: threads,
                                 batch: trainingBatch, images: done, seconds: seconds,
                                 note: ranks > 1 ? "\(ranks) ranks; \(summed) gradient values (\(summed * 4) bytes) summed per step" : nil)
    }

    /// Batches of 256 of the first `images` test images, normalised beforehand (the pipeline is
    /// not timed, as for the peers), through the deployed INT8 engine or the float model in
    /// eval mode; 2 warm-up batches.
    /// With `profile`, the INT8 engine's timed batches book each node's time there (the batch
    /// runs whole, as on one thread), and `deployed` receives the engine's nodes.
    func inference(int8: Bool, images: Int, profile: StepTiming? = nil,
                   deployed: (([DeployNode]) -> Void)? = nil) throws -> MeasurementResult {
        Runtime.configure(threads: threads)
        let test = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .test)
        let batches = test.batches(size: Self.inferenceBatch, limit: images / Self.inferenceBatch).map(\.images)
        let run: (Tensor) -> Void
        var note: String?
        var startTiming = {}
        if int8 {
            let train = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train, limit: 1024)
            let qatModel = try makeTrainer(quantized: true, train: train).model
            _ = qatModel.forward(train.batch(Array(0..<64)[...]).images, training: false, tape: nil)   // sets the scales
            let engine = try Int8Model(Deployer.deploy(model: qatModel, source: model.file))
            run = { _ = engine.forward($0) }
            deployed?(engine.file.nodes)
            startTiming = { engine.timing = profile }
            note = "INT8 path \(Int8Kernels.activePath.rawValue), deployed in-process from the default QAT config"
        } else {
            let network = try makeTrainer(quantized: false, train: test.prefix(0)).model
            run = { _ = network.forward($0, training: false, tape: nil) }
        }
        for batch in batches.prefix(2) { run(batch) }
        startTiming()
        var done = 0
        let start = now()
        for batch in batches {
            if now() - start >= maxSeconds { break }
            run(batch)
            done += batch.shape[0]
        }
        return MeasurementResult(model: model, mode: int8 ? .inferInt8 : .inferFloat, threads: threads,
                                 batch: Self.inferenceBatch, images: done, seconds: now() - start, note: note)
    }

    /// The img/s modes (the reports of `isReport` modes run in ConvReport.swift).
    func measure(_ mode: BenchMode, images: Int?) throws -> MeasurementResult {
        switch mode {
        case .fmaPeak, .convLayers: preconditionFailure("\(mode.rawValue) is a report, not an img/s measurement")
        case .trainFloat: try training(quantized: false, images: images ?? model.trainingImages)
        case .trainQAT: try training(quantized: true, images: images ?? model.trainingImages)
        case .inferInt8: try inference(int8: true, images: images ?? model.inferenceImages)
        case .inferFloat: try inference(int8: false, images: images ?? model.inferenceImages)
        }
    }
}
