// `make bench`: throughput of LeNet-5 on Fashion-MNIST in a release build, on real data.
// Prints img/s at 1 and 2 threads beside the PyTorch figures we must beat, peak RSS, and a
// per-layer profile of one training step.
import Foundation
import QAT

struct Reference { let name: String; let oneThread: Double; let twoThreads: Double }
let pytorchFloatTraining = Reference(name: "PyTorch 2.15 eager", oneThread: 11_700, twoThreads: 16_200)
let onnxFloatInference = Reference(name: "ONNX Runtime", oneThread: 74_000, twoThreads: 101_000)

func setThreads(_ count: Int) { Runtime.configure(threads: count) }

func peakResidentMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024   // Linux reports kilobytes
}

func makeModel() -> Model {
    try! Model(spec: ModelSpec.load(file: "Configs/models/lenet5.json"), seed: 1)
}

/// Images per second of `steps` training steps at batch 64, after a warm-up.
func trainingThroughput(_ data: Dataset, threads: Int, steps: Int, timing: StepTiming? = nil) throws -> Double {
    setThreads(threads)
    var settings = RunSettings()
    settings.batchSize = 64
    let trainer = Trainer(model: makeModel(), settings: settings)
    let order = trainer.order(epoch: 0, count: data.count)
    func run(_ count: Int, timing: StepTiming?) throws {
        for s in 0..<count {
            let start = (s * 64) % (data.count - 64)
            let batch = data.batch(order[start..<(start + 64)])
            _ = try trainer.trainStep(images: batch.images, labels: batch.labels, timing: timing)
        }
    }
    try run(20, timing: nil)
    let start = Date()
    try run(steps, timing: timing)
    return Double(steps * 64) / Date().timeIntervalSince(start)
}

func inferenceThroughput(_ data: Dataset, threads: Int, batches: Int) -> Double {
    setThreads(threads)
    let model = makeModel()
    let batchList = (0..<4).map { b in data.batch(Array((b * 256)..<((b + 1) * 256))[...]).images }
    for b in batchList { _ = model.forward(b, training: false, tape: nil) }
    let start = Date()
    for i in 0..<batches { _ = model.forward(batchList[i % batchList.count], training: false, tape: nil) }
    return Double(batches * 256) / Date().timeIntervalSince(start)
}

func report(_ label: String, _ ours: [Double], _ reference: Reference) {
    for (i, threads) in [1, 2].enumerated() {
        let theirs = threads == 1 ? reference.oneThread : reference.twoThreads
        print(String(format: "%-34@ %d thread%@  %8.0f img/s   %@ %6.0f   ratio %.2f×",
                     label as NSString, threads, threads == 1 ? " " : "s", ours[i],
                     reference.name as NSString, theirs, ours[i] / theirs))
    }
}

let data = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train, limit: 8192)
let environment = ProcessInfo.processInfo.environment
print("qat-bench  LeNet-5 / Fashion-MNIST  OpenBLAS core \(BLAS.coreName)  "
      + "OPENBLAS_CORETYPE=\(environment["OPENBLAS_CORETYPE"] ?? "unset")  cores \(ProcessInfo.processInfo.activeProcessorCount)")
let training = try [1, 2].map { try trainingThroughput(data, threads: $0, steps: 400) }
report("float training, batch 64", training, pytorchFloatTraining)
let inference = [1, 2].map { inferenceThroughput(data, threads: $0, batches: 200) }
report("float inference, batch 256", inference, onnxFloatInference)
print(String(format: "peak RSS %.1f MB (target ≤ 150 MB; PyTorch ≈ 1 GB)", peakResidentMegabytes()))

let timing = StepTiming()
_ = try trainingThroughput(data, threads: 1, steps: 100, timing: timing)
print("\nprofile of one float training step (batch 64, 1 thread, mean of 100 steps):")
print(timing.table(steps: 100))
