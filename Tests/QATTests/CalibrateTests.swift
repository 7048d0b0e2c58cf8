import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// `qat calibrate` (post-training quantization, issue 12 item 1): LeNet-5 calibrated on a few
/// batches deploys and verifies, its bounds are those `qat train` starts from, `qat train`
/// continues from it without recalibrating, and bad input writes nothing.
final class CalibrateTests: XCTestCase {
    let floatCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")

    /// Each quantized layer's (clip_min, clip_max) as a checkpoint file stores them.
    func clipBounds(_ file: String) throws -> [String: [Float]] {
        let checkpoint = try CheckpointFile.read(from: file)
        var bounds: [String: [Float]] = [:]
        for parameter in checkpoint.parameters where parameter.name.contains("act_quant.clip_") {
            bounds[parameter.name] = parameter.tensor.storage
        }
        return bounds
    }

    func testCalibratedLeNetDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/retrain.json", "--checkpoint", floatCheckpoint,
                                     "--output", ptq, "--batch-num", "3", "--train-limit", "1024", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("calibrated conv1, conv2, fc1, fc2, fc3 with IFMR on 3 batch(es)"), log)
        XCTAssertTrue(log.contains("float ") && log.contains("PTQ (fake)"), log)
        XCTAssertEqual(try clipBounds(ptq).count, 10, "clip_min and clip_max of five layers")

        // The printed PTQ accuracy is what `qat eval` measures on the checkpoint.
        let (evalStatus, evaluated) = try qat(["eval", "--checkpoint", ptq, "--test-limit", "300"])
        XCTAssertEqual(evalStatus, 0, evaluated)
        let afterLabel = try XCTUnwrap(evaluated.range(of: "test accuracy ")).upperBound
        let accuracy = evaluated[afterLabel...].prefix { $0 != "%" }
        let ptqLine = try XCTUnwrap(log.split(separator: "\n").first { $0.hasPrefix("PTQ (fake)") })
        XCTAssertTrue(ptqLine.contains(" \(accuracy)%"), "\(ptqLine)\n\(evaluated)")

        let deployed = folder + "/ptq-int8.h5"
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }

    /// The bounds calibrate writes are the ones `qat train --lr 0` starts from (and, at lr 0, ends
    /// with) on the same batches.
    func testBoundsEqualThoseQATTrainingStartsFrom() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5", trained = folder + "/lr0.h5"
        let common = ["--config", "Configs/retrain.json", "--train-limit", "512", "--test-limit", "64"]
        let (status, log) = try qat(["calibrate", "--checkpoint", floatCheckpoint, "--output", ptq, "--batch-num", "2"] + common)
        XCTAssertEqual(status, 0, log)
        let config = folder + "/retrain-2.json"
        let text = try String(contentsOfFile: repositoryPath("Configs/retrain.json"), encoding: .utf8)
            .replacingOccurrences(of: "\"batch_num\": 1", with: "\"batch_num\": 2")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        var trainArguments = ["train", "--init", floatCheckpoint, "--output", trained, "--lr", "0", "--epochs", "1",
                              "--checkpoint-dir", folder + "/run"] + common
        trainArguments[trainArguments.firstIndex(of: "Configs/retrain.json")!] = config
        let (trainStatus, trainLog) = try qat(trainArguments)
        XCTAssertEqual(trainStatus, 0, trainLog)
        XCTAssertTrue(trainLog.contains("on 2 batch(es)"), trainLog)
        let calibrated = try clipBounds(ptq)
        XCTAssertEqual(calibrated.count, 10)
        XCTAssertEqual(calibrated, try clipBounds(trained))
        XCTAssertGreaterThan(calibrated["conv1.act_quant.clip_max"]![0], 0)
    }

    /// In process: calibrate's model equals a training run's after `prepareFreshStart`, and a
    /// training run started from the PTQ checkpoint keeps its bounds and calibrates nothing.
    func testTrainingFromThePTQCheckpointDoesNotRecalibrate() throws {
        let folder = try makeTemporaryFolder(self)
        let config = try RetrainConfig.parse(JSONObject.load(file: repositoryPath("Configs/retrain.json")))
        var settings = RunSettings()
        settings.modelSpec = repositoryPath("Configs/models/lenet5.json")
        settings.initCheckpoint = floatCheckpoint
        let train = try fashionMNIST(.train, count: 256), test = try fashionMNIST(.test, count: 100)

        var ptqSettings = settings
        ptqSettings.output = folder + "/ptq.h5"
        let ptq = try TrainingRun(configFile: "retrain.json", config: config, settings: ptqSettings)
        ptq.log = { _ in }
        let report = try ptq.calibrate(train: train, test: test)
        XCTAssertEqual(report.calibratedLayers, ["conv1", "conv2", "fc1", "fc2", "fc3"])
        XCTAssertEqual(report.float.count, 100)

        let fresh = try TrainingRun(configFile: "retrain.json", config: config, settings: settings)
        fresh.log = { _ in }
        try fresh.prepareFreshStart(train: train)
        let bounds = { (model: Model) in model.fakeQuantizers.flatMap { [$0.activation.clipMin.value.storage[0], $0.activation.clipMax.value.storage[0]] } }
        XCTAssertEqual(bounds(ptq.model), bounds(fresh.model))
        // Float accuracy is that of the float model, with no quantizer attached.
        let (floatModel, _) = try Model.load(checkpoint: floatCheckpoint)
        XCTAssertEqual(report.float.correct, Evaluator.evaluate(floatModel, on: test).correct)
        XCTAssertEqual(report.float.loss, Evaluator.evaluate(floatModel, on: test).loss)
        XCTAssertEqual(report.quantized.loss, fresh.trainer.evaluate(test).loss)

        var fromPTQ = settings
        fromPTQ.initCheckpoint = ptqSettings.output
        let continued = try TrainingRun(configFile: "retrain.json", config: config, settings: fromPTQ)
        var log: [String] = []
        continued.log = { log.append($0) }
        try continued.prepareFreshStart(train: try fashionMNIST(.train, count: 512))
        XCTAssertEqual(log, ["initialised from \(folder)/ptq.h5"], "nothing is recalibrated")
        XCTAssertEqual(bounds(continued.model), bounds(ptq.model))
    }

    /// An ONNX model's own weights are the float starting point when no --checkpoint is given.
    func testCalibratesAnImportedONNXModel() throws {
        let folder = try makeTemporaryFolder(self)
        let onnx = "Tests/Fixtures/onnx/lenet.onnx", config = folder + "/retrain.json", ptq = folder + "/ptq.h5"
        let (createStatus, created) = try qat(["create-config", "--model", onnx, "--output", config])
        XCTAssertEqual(createStatus, 0, created)
        let (status, log) = try qat(["calibrate", "--config", config, "--model", onnx, "--output", ptq,
                                     "--train-limit", "256", "--test-limit", "100", "--batch-num", "2"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("post-training quantization of lenet from \(onnx)") && log.contains("on 2 batch(es)"), log)
        let deployed = folder + "/ptq-int8.h5"
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "100"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)

        // The LeNet-5 config does not fit this model: one line naming the layer.
        let (mismatch, text) = try qat(["calibrate", "--config", "Configs/retrain.json", "--model", onnx, "--output", folder + "/m.h5"])
        XCTAssertEqual(mismatch, 1, text)
        XCTAssertEqual(text.split(separator: "\n").count, 1, text)
        XCTAssertTrue(text.contains("conv1"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/m.h5"))
    }

    func testHelpListsCalibrate() throws {
        let (status, output) = try qat(["--help"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("calibrate"), output)
    }

    func testBadInputGivesOneLineAndWritesNothing() throws {
        let folder = try makeTemporaryFolder(self)
        let output = folder + "/ptq.h5"
        let good = folder + "/good.h5"
        try Data("a good file".utf8).write(to: URL(fileURLWithPath: good))
        let base = ["calibrate", "--config", "Configs/retrain.json", "--train-limit", "256", "--test-limit", "50"]
        func assertRefused(_ arguments: [String], mentions fragments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let (status, text) = try qat(base + arguments)
            XCTAssertEqual(status, 1, text, file: file, line: line)
            let lines = text.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, text, file: file, line: line)
            for fragment in fragments { XCTAssertTrue(text.contains(fragment), "\(fragment) in \(text)", file: file, line: line) }
        }
        try assertRefused(["--checkpoint", folder + "/missing.h5", "--output", output], mentions: ["missing.h5"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        try assertRefused(["--checkpoint", folder + "/missing.h5", "--output", good], mentions: ["missing.h5"])
        XCTAssertEqual(try String(contentsOfFile: good, encoding: .utf8), "a good file", "a good file is never replaced on error")

        // A QAT checkpoint: its bounds exist already.
        let (status, log) = try qat(base + ["--checkpoint", floatCheckpoint, "--output", output])
        XCTAssertEqual(status, 0, log)
        try assertRefused(["--checkpoint", output, "--output", good], mentions: [output, "is a QAT checkpoint", "qat train --init"])
        XCTAssertEqual(try String(contentsOfFile: good, encoding: .utf8), "a good file")

        // A float training config has no quantizers to calibrate.
        let (floatStatus, floatText) = try qat(["calibrate", "--config", "Configs/float.json", "--checkpoint", floatCheckpoint,
                                                "--output", folder + "/f.h5", "--train-limit", "256", "--test-limit", "50"])
        XCTAssertEqual(floatStatus, 1, floatText)
        XCTAssertTrue(floatText.contains("Configs/float.json") && floatText.contains("nothing to calibrate"), floatText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/f.h5"))

        // Unwritable output: a folder that is a file.
        try assertRefused(["--checkpoint", floatCheckpoint, "--output", good + "/ptq.h5"], mentions: ["--output", "is a file"])
        // More calibration images than the training set.
        try assertRefused(["--checkpoint", floatCheckpoint, "--output", folder + "/b.h5", "--batch-num", "5"],
                          mentions: ["batch_num", "256 training images"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/b.h5"))
    }
}
