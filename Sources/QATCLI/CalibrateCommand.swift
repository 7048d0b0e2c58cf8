import ArgumentParser
import Foundation
import QAT

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Post-training quantization: calibrate a float checkpoint's quantizers without training.",
        discussion: """
            Runs the calibration `qat train` runs before its first step (IFMR, or each layer's act_algo) \
            on the config's batch_num training batches, and writes a QAT checkpoint at step 0 that \
            deploy, export, eval, compare, sensitivity and verify take, and that `qat train --init` \
            fine-tunes without recalibrating. Prints float and PTQ (fake-quant) test accuracy side by side. \
            The config is an AMCT PTQ config.json or a retrain config (docs/CONFIG.md "Config formats"); \
            flags override it.

            Examples:
              qat calibrate --config Configs/amct/ptq-plain.json \\
                --checkpoint Checkpoints/lenet5-float.h5 --output ptq.h5
              qat calibrate --config Configs/retrain.json \\
                --checkpoint Checkpoints/lenet5-float.h5 --output ptq.h5
              qat calibrate --config my-amct.json --model net.onnx --output ptq.h5 \\
                --batch-num 4
              qat calibrate --config Configs/amct/ptq-plain.json --checkpoint float.h5 \\
                --output ptq.h5 --cle --bias-correction
              qat train --config Configs/retrain.json --init ptq.h5 --epochs 1
            """)

    @Option(help: "The run's JSON config (AMCT PTQ config.json, or a retrain config with layer rules).") var config: String
    @Option(help: "Float checkpoint to calibrate (overrides model.init).") var checkpoint: String?
    @Option(help: "Model spec or ONNX file (overrides model.spec; an ONNX file's weights are used unless --checkpoint is given).")
    var model: String?
    @Option(help: "Where to write the PTQ checkpoint.") var output: String
    @Option(help: "Folder of Fashion-MNIST IDX files (overrides data.path).") var data: String?
    @Option(name: .customLong("batch-num"), help: "Calibration batches (overrides batch_num).") var batchNum: Int?
    @Option(name: .customLong("batch-size"), help: "Images per calibration batch (overrides train.batch_size).") var batchSize: Int?
    @Option(help: "Seed of the shuffle that picks the calibration batches.") var seed: UInt64?
    @Option(help: "Threads for BLAS and our own loops.") var threads: Int?
    @Option(name: .customLong("train-limit"), help: "Use only the first N training images.") var trainLimit: Int?
    @Option(name: .customLong("test-limit"), help: "Use only the first N test images.") var testLimit: Int?
    @Flag(name: .customLong("cle"), help: "Cross-layer equalization of conv → [BN] → ReLU → conv pairs before calibrating (Vitis AI's include_cle).")
    var crossLayerEqualization = false
    @Flag(name: .customLong("bias-correction"), help: "Correct each quantized layer's bias so its mean output matches the float model's on the calibration batches (Vitis AI's include_bias_corr).")
    var biasCorrection = false

    func validate() throws {
        for (name, value) in [("batch-num", batchNum), ("batch-size", batchSize), ("threads", threads),
                              ("train-limit", trainLimit), ("test-limit", testLimit)] {
            if let value, value <= 0 { throw ValidationError("--\(name) must be positive, got \(value)") }
        }
        for (name, value, range) in [("batch-num", batchNum, RetrainConfig.batchCountRange),
                                     ("batch-size", batchSize, RunSettings.Limits.batchSize),
                                     ("threads", threads, RunSettings.Limits.threads)] {
            if let value, !range.contains(value) {
                throw ValidationError("--\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
            }
        }
    }

    func run() throws {
        try reportingUserErrors {
            var (retrainConfig, root) = try RetrainConfig.read(file: config)
            if let batchNum { retrainConfig.batchCount = batchNum }
            if crossLayerEqualization { retrainConfig.ptqTransforms.insert(.crossLayerEqualization) }
            if biasCorrection { retrainConfig.ptqTransforms.insert(.biasCorrection) }
            var settings = try RunSettings.parse(root)
            if let model { settings.modelSpec = model }
            if let checkpoint { settings.initCheckpoint = checkpoint }
            if let data {
                guard settings.data.format == .idx else {
                    throw InputError(file: config, keyPath: "data.format",
                                     message: "is \(settings.data.format.rawValue), --data gives an IDX folder: edit the config's data section instead")
                }
                settings.dataPath = data
            }
            if let batchSize { settings.batchSize = batchSize }
            if let seed { settings.seed = seed }
            if let threads { settings.threads = threads }
            if let trainLimit { settings.trainLimit = trainLimit }
            if let testLimit { settings.testLimit = testLimit }
            settings.output = output
            settings.checkpointDirectory = nil   // calibrate writes --output only
            Runtime.configure(threads: settings.threads)
            let job = try TrainingRun(configFile: config, config: retrainConfig, settings: settings)
            // The format line comes with the first progress line, so a refused run prints one line.
            var formatLine: String? = ConfigReader.calibrate.line(for: retrainConfig, file: config)
            ConfigReader.printNotes(of: retrainConfig)
            job.log = { line in
                if let pending = formatLine { print(pending); formatLine = nil }
                print(line)
            }
            let train = try job.loadData(.train, limit: settings.trainLimit)
            let test = try job.loadData(.test, limit: settings.testLimit)
            let report = try job.calibrate(train: train, test: test)
            print("             test acc   loss")
            print(String(format: "float        %6.2f%%    %.4f", 100 * report.float.accuracy, report.float.loss))
            print(String(format: "PTQ (fake)   %6.2f%%    %.4f   (%+.2f points, %d layer(s) calibrated, %d test images)",
                         100 * report.quantized.accuracy, report.quantized.loss,
                         100 * (report.quantized.accuracy - report.float.accuracy), report.calibratedLayers.count, test.count))
        }
    }
}
