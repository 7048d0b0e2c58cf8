// The library API in one page: float training, QAT with the default plan, a checkpoint.
// Run: swift run -c release qat-library-example
import Foundation
import QAT

Runtime.configure(threads: 1)

// 1. Data and model.
let train = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .train, limit: 6000)
let test = try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: .test, limit: 2000)
let spec = try ModelSpec.load(file: "Configs/models/lenet5.json")
let model = try Model(spec: spec, seed: 1)

// 2. A short float training.
var settings = RunSettings()
settings.setEpochs(2)
let floatTrainer = Trainer(model: model, settings: settings)
for _ in 0..<settings.epochs {
    let summary = try floatTrainer.trainEpoch(on: train, test: test)
    print(String(format: "float epoch %d: test accuracy %.2f%%", summary.epoch, 100 * summary.test.accuracy))
}

// 3. QAT: the default retrain config (every conv and linear), resolved against the model,
//    fake quantizers attached, clip bounds calibrated with IFMR on one batch.
let configText = createDefaultConfig(for: spec)
let config = try RetrainConfig.parse(JSONObject.parse(Data(configText.utf8), file: "default config"))
let plan = try config.resolve(for: spec)
print(plan.table())
model.applyQuantization(plan)
var qatSettings = settings
qatSettings.learningRate = 0.01
qatSettings.setEpochs(1)
let qatTrainer = Trainer(model: model, settings: qatSettings)
try model.calibrate(on: qatTrainer.calibrationBatches(from: train, count: config.batchCount))
print(String(format: "after calibration: fake-quant accuracy %.2f%%", 100 * qatTrainer.evaluate(test).accuracy))
let summary = try qatTrainer.trainEpoch(on: train, test: test)
print(String(format: "after QAT: fake-quant accuracy %.2f%%", 100 * summary.test.accuracy))

// 4. A checkpoint with the learned clip bounds and quantizer state.
let output = FileManager.default.temporaryDirectory.appendingPathComponent("qat-library-example.h5").path
try model.checkpointFile(attributes: [CheckpointFile.quantizationAttribute: plan.explicitConfig().jsonText()],
                         extra: model.quantizerStateTensors()).write(to: output)
let (reloaded, _) = try Model.load(checkpoint: output)
print(String(format: "reloaded %@: fake-quant accuracy %.2f%%", output, 100 * Evaluator.evaluate(reloaded, on: test).accuracy))
