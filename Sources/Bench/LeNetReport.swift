// The default output of `qat-bench` (no options): throughput of LeNet-5 on Fashion-MNIST in a
// release build, on real data. Prints img/s at 1 and 2 threads beside the PyTorch figures we
// must beat, the QAT/float step ratio, peak RSS, and per-layer profiles of a float and a QAT
// training step.
//
// The machines are noisy, so float and QAT runs alternate over several rounds and each figure
// is the median of its rounds: a ratio then compares runs made under the same conditions.
import Foundation
import QAT

struct Reference { let name: String; let oneThread: Double; let twoThreads: Double }
let pytorchFloatTraining = Reference(name: "PyTorch 2.15 eager", oneThread: 11_700, twoThreads: 16_200)
let pytorchQATTraining = Reference(name: "PyTorch 2.15 eager QAT", oneThread: 4_500, twoThreads: 6_600)
let onnxFloatInference = Reference(name: "ONNX Runtime fp32", oneThread: 74_000, twoThreads: 101_000)
let fbgemmInt8Inference = Reference(name: "PyTorch fbgemm INT8", oneThread: 65_000, twoThreads: 72_000)

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

struct LeNetReport {
    let rounds = Int(ProcessInfo.processInfo.environment["QAT_BENCH_ROUNDS"] ?? "") ?? 3
    let spec: ModelSpec
    let data: Dataset

    init() throws {
        spec = try ModelSpec.load(file: "Configs/models/lenet5.json")
        data = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train, limit: 8192)
    }

    /// A LeNet-5 trainer, in float or with the default QAT plan (calibrated on one batch).
    func makeTrainer(quantized: Bool) throws -> Trainer {
        let model = try Model(spec: spec, seed: 1)
        var settings = RunSettings()
        settings.batchSize = 64
        settings.learningRate = 0.01
        let trainer = Trainer(model: model, settings: settings)
        if quantized {
            let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "default"))
            model.applyQuantization(try config.resolve(for: spec))
            try model.calibrate(on: trainer.calibrationBatches(from: data, count: 1))
        }
        return trainer
    }

    /// Images per second of `steps` training steps at batch 64, after a warm-up.
    func trainingThroughput(quantized: Bool, threads: Int, steps: Int, timing: StepTiming? = nil) throws -> Double {
        Runtime.configure(threads: threads)
        let trainer = try makeTrainer(quantized: quantized)
        func run(_ count: Int, timing: StepTiming?) throws {
            for batch in data.cyclingBatches(size: 64, order: trainer.order(epoch: 0), count: count) {
                _ = try trainer.trainStep(images: batch.images, labels: batch.labels, timing: timing)
            }
        }
        try run(20, timing: nil)
        let start = Date()
        try run(steps, timing: timing)
        return Double(steps * 64) / Date().timeIntervalSince(start)
    }

    func inferenceThroughput(threads: Int, batches: Int) throws -> Double {
        Runtime.configure(threads: threads)
        let model = try Model(spec: spec, seed: 1)
        let batchList = data.batches(size: 256, limit: 4).map(\.images)
        for b in batchList { _ = model.forward(b, training: false, tape: nil) }
        let start = Date()
        for i in 0..<batches { _ = model.forward(batchList[i % batchList.count], training: false, tape: nil) }
        return Double(batches * 256) / Date().timeIntervalSince(start)
    }

    /// INT8 inference of a LeNet-5 deployed from a briefly calibrated QAT model (speed does not
    /// depend on how well it is trained), on one kernel path.
    func int8Throughput(_ engine: Int8Model, path: Int8Kernels.Path, threads: Int, batches: Int) -> Double {
        Runtime.configure(threads: threads)
        Int8Kernels.activePath = path
        let batchList = data.batches(size: 256, limit: 4).map(\.images)
        for b in batchList { _ = engine.forward(b) }
        let start = Date()
        for i in 0..<batches { _ = engine.forward(batchList[i % batchList.count]) }
        return Double(batches * 256) / Date().timeIntervalSince(start)
    }

    func report(_ label: String, _ ours: [Double], _ reference: Reference) {
        for (i, threads) in [1, 2].enumerated() {
            let theirs = threads == 1 ? reference.oneThread : reference.twoThreads
            print(label.padded(to: 30) + String(format: " %d thread%@ %8.0f img/s   ", threads, threads == 1 ? " " : "s", ours[i])
                  + reference.name.padded(to: 24) + String(format: " %7.0f   ratio %.2f×", theirs, ours[i] / theirs))
        }
    }

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        print("qat-bench  LeNet-5 / Fashion-MNIST  OpenBLAS core \(BLAS.coreName)  "
              + "OPENBLAS_CORETYPE=\(environment["OPENBLAS_CORETYPE"] ?? "unset")  cores \(ProcessInfo.processInfo.activeProcessorCount)  "
              + "median of \(rounds) rounds")
        var floatTraining: [[Double]] = [[], []], qatTraining: [[Double]] = [[], []], inference: [[Double]] = [[], []]
        for _ in 0..<rounds {
            for (i, threads) in [1, 2].enumerated() {
                floatTraining[i].append(try trainingThroughput(quantized: false, threads: threads, steps: 300))
                qatTraining[i].append(try trainingThroughput(quantized: true, threads: threads, steps: 300))
                inference[i].append(try inferenceThroughput(threads: threads, batches: 150))
            }
        }
        let floatMedians = floatTraining.map(median), qatMedians = qatTraining.map(median)
        report("float training, batch 64", floatMedians, pytorchFloatTraining)
        report("QAT training, batch 64", qatMedians, pytorchQATTraining)
        for (i, threads) in [1, 2].enumerated() {
            // Per round, so both sides of each ratio ran back to back.
            let ratios = zip(floatTraining[i], qatTraining[i]).map { $0 / $1 }
            print(String(format: "QAT step / float step, %d thread%@: %.2f× (target ≤ 1.2×; PyTorch 2.4–2.6×)",
                         threads, threads == 1 ? " " : "s", median(ratios)))
        }
        report("float inference, batch 256", inference.map(median), onnxFloatInference)

        let qatModel = try makeTrainer(quantized: true).model
        _ = qatModel.forward(data.batch(Array(0..<64)[...]).images, training: false, tape: nil)   // sets the scales
        let engine = try Int8Model(Deployer.deploy(model: qatModel, source: "bench"))
        let paths = Int8Kernels.Path.allCases.filter(Int8Kernels.isSupported)
        var int8: [Int8Kernels.Path: [[Double]]] = [:]
        for _ in 0..<rounds {
            for path in paths {
                for (i, threads) in [1, 2].enumerated() {
                    int8[path, default: [[], []]][i].append(int8Throughput(engine, path: path, threads: threads, batches: path == .portable ? 10 : 150))
                }
            }
        }
        let floatInference = inference.map(median)
        for path in paths {
            let medians = int8[path]!.map(median)
            report("INT8 inference (\(path.rawValue)), b 256", medians, fbgemmInt8Inference)
            print(String(format: "  INT8 (%@) / our float inference: %.2f× at 1 thread, %.2f× at 2 threads",
                         path.rawValue, medians[0] / floatInference[0], medians[1] / floatInference[1]))
        }
        Int8Kernels.activePath = Int8Kernels.bestSupportedPath
        print(String(format: "peak RSS %.1f MB (target ≤ 150 MB; PyTorch ≈ 1 GB)", peakResidentMegabytes()))

        for quantized in [false, true] {
            let timing = StepTiming()
            _ = try trainingThroughput(quantized: quantized, threads: 1, steps: 100, timing: timing)
            print("\nprofile of one \(quantized ? "QAT" : "float") training step (batch 64, 1 thread, mean of 100 steps):")
            print(timing.table(steps: 100))
        }
    }
}

func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024   // Linux reports kilobytes
}
