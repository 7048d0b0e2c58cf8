// `qat-bench`: with no options, the LeNet-5 report of `make bench` (LeNetReport.swift). With
// options, single measurements of the comparison networks (Measurement.swift), one JSON line
// each with --json, for bench/compare.py, which runs one measurement per process:
//
//   qat-bench --model mobilenetv2-tiny --mode train-qat --threads 2 --json
//   qat-bench --model resnet18-tiny --mode train-float --profile     (per-layer time of a step)
import Foundation
import QAT

let usage = """
    usage: qat-bench                                   the LeNet-5 report of `make bench`
           qat-bench [--model NAME]... [--mode MODE]... [--threads N]... [--images N]
                     [--batch N] [--max-seconds S] [--json] [--profile] [--no-pointwise]
                     [--train-data FILE.h5]
           qat-bench --write-train-data FILE.h5
      --model        \(BenchModel.allCases.map(\.rawValue).joined(separator: ", ")) (repeatable; default all)
      --mode         \(BenchMode.allCases.map(\.rawValue).joined(separator: ", ")) (repeatable;
                     default train-float, train-qat, infer-int8). fma-peak: the FMA units' measured
                     GFLOP/s (AVX-512, AVX2); conv-layers: each conv layer's forward, input- and
                     weight-gradient GFLOP/s at batch 64 as % of that peak (default models
                     vgg-small, resnet18-tiny, mobilenetv2-tiny)
      --threads      thread count (repeatable; default 1 and 2)
      --images       images of the timed pass: training images (batch 64) or test images
                     (batch 256); default per model, as bench/pytorch_peers.py
      --batch        training images per step (default 64; the global batch under mpirun)
      --max-seconds  end a timed pass after this long, counting the images done (default 6)
      --json         one JSON line per measurement (pytorch_peers.py's fields)
      --profile      also print the per-layer forward/backward time of the training steps, and
                     the per-node time of the INT8 forward (infer-int8; the batch runs whole)
      --no-pointwise 1×1 convs on the paths they took before Conv2DPointwise.swift (before/after)
      --train-data   train on this HDF5 copy of the training images, streamed batch by batch
                     (`in_memory: false`), instead of the IDX files held in memory: the peak RSS
                     of a run whose memory does not grow with the dataset
      --write-train-data  write Fashion-MNIST's training split as that HDF5 file (/images uint8
                     [N, 1, 28, 28], /labels) and exit; a process of its own, so the copy's
                     memory is not in any measurement
    Under mpirun (mpirun -np 2 qat-bench --model lenet5 --mode train-qat --threads 1) the ranks
    train data-parallel, each batch of 64 shared, rank 0 prints, and --max-seconds is not applied.
    Run from the repository root. Peak RSS is the process's: one measurement per process for
    a figure of its own.
    """

struct Options {
    var models: [BenchModel] = []
    var modes: [BenchMode] = []
    var threads: [Int] = []
    var images: Int?
    var batch = Measurer.defaultTrainingBatch
    var maxSeconds = 6.0
    var json = false
    var profile = false
    var trainData: String?

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let next = rest.popFirst() else { throw InputError(file: "qat-bench", message: "\(flag) needs a value\n\(usage)") }
            return next
        }
        func positive(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let number = Int(text), number > 0 else { throw InputError(file: "qat-bench", message: "\(flag) \(text): expected a positive integer") }
            return number
        }
        while let flag = rest.popFirst() {
            switch flag {
            case "--model":
                let name = try value(flag)
                guard let model = BenchModel(rawValue: name) else {
                    throw InputError(file: "qat-bench", message: "--model \(name): expected one of \(BenchModel.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                options.models.append(model)
            case "--mode":
                let name = try value(flag)
                guard let mode = BenchMode(rawValue: name) else {
                    throw InputError(file: "qat-bench", message: "--mode \(name): expected one of \(BenchMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                options.modes.append(mode)
            case "--threads": options.threads.append(try positive(flag))
            case "--images": options.images = try positive(flag)
            case "--batch": options.batch = try positive(flag)
            case "--max-seconds":
                let text = try value(flag)
                guard let seconds = Double(text), seconds > 0 else { throw InputError(file: "qat-bench", message: "--max-seconds \(text): expected a positive number") }
                options.maxSeconds = seconds
            case "--json": options.json = true
            case "--profile": options.profile = true
            case "--no-pointwise": ConvKernels.pointwiseEnabled = false
            case "--train-data": options.trainData = try value(flag)
            case "--write-train-data":
                try writeTrainingCopy(to: try value(flag))
                exit(0)
            case "--help", "-h":
                print(usage)
                exit(0)
            default:
                throw InputError(file: "qat-bench", message: "unknown option \(flag)\n\(usage)")
            }
        }
        return options
    }
}

func runMeasurements(_ options: Options) throws {
    let communicator = Communicator.fromEnvironment()
    let print: (String) -> Void = communicator.isRoot ? { Swift.print($0) } : { _ in }
    let threads = options.threads.isEmpty ? [1, 2] : options.threads
    if options.modes.contains(.fmaPeak) { runFMAPeak(threads: threads, json: options.json) }
    if options.modes.contains(.convLayers) {
        try runConvLayers(models: options.models.isEmpty ? [.vggSmall, .resnet18Tiny, .mobilenetV2Tiny] : options.models,
                          threads: threads, json: options.json)
    }
    let modes = options.modes.filter { !$0.isReport }
    if modes.isEmpty && !options.modes.isEmpty { return }
    for model in options.models.isEmpty ? BenchModel.allCases : options.models {
        for mode in modes.isEmpty ? [.trainFloat, .trainQAT, .inferInt8] : modes {
            for threads in threads {
                var measurer = Measurer(model: model, threads: threads, maxSeconds: options.maxSeconds)
                measurer.trainingBatch = options.batch
                measurer.streamedTrainingFile = options.trainData
                let timing = options.profile && mode.isTraining ? StepTiming() : nil
                let nodeTiming = options.profile && mode == .inferInt8 ? StepTiming() : nil
                var nodes: [DeployNode] = []
                let result = mode.isTraining
                    ? try measurer.training(quantized: mode == .trainQAT, images: options.images ?? model.trainingImages, timing: timing)
                    : nodeTiming != nil
                    ? try measurer.inference(int8: true, images: options.images ?? model.inferenceImages, profile: nodeTiming,
                                             deployed: { nodes = $0 })
                    : try measurer.measure(mode, images: options.images)
                print(options.json ? result.jsonLine() : result.textLine())
                if let nodeTiming {
                    let batches = max(result.images / Measurer.inferenceBatch, 1)
                    print("per-node time of one INT8 forward (batch \(Measurer.inferenceBatch), the batch whole on one thread, mean of \(batches) batches):")
                    print(nodeTiming.table(steps: batches))
                    print("\nthe same by node kind:")
                    print(int8NodeKindTable(nodeTiming, nodes: nodes, batches: batches))
                }
                if let timing {
                    let steps = result.images / measurer.trainingBatch
                    print("per-layer time of one \(mode.rawValue) step (batch \(measurer.trainingBatch), \(threads) thread(s), mean of \(steps) steps):")
                    print(timing.table(steps: steps))
                    print("\nthe same by op class:")
                    print(opClassTable(timing, spec: try ModelSource.load(file: model.file).spec, steps: steps))
                }
                fflush(stdout)
            }
        }
    }
    // Only after success: a rank that throws exits without it, and mpirun then stops the others.
    communicator.finish()
}

let arguments = Array(CommandLine.arguments.dropFirst())
do {
    if arguments.isEmpty {
        try LeNetReport().run()
    } else {
        try runMeasurements(Options.parse(arguments))
    }
} catch {
    // An InputError names its file (or "qat-bench" for a flag) itself.
    FileHandle.standardError.write(Data(((error is InputError ? "" : "qat-bench: ") + "\(error)\n").utf8))
    exit(1)
}
