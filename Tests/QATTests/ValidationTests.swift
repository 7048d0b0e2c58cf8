import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// Bounded settings, data that must fit the model, and runs that fail early and clean
/// (docs/CONFIG.md "Ranges").
final class ValidationTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    func parse(_ json: String) throws -> JSONObject { try JSONObject.parse(Data(json.utf8), file: "c.json") }

    func lenetSettings() -> RunSettings {
        var s = RunSettings()
        s.modelSpec = repositoryPath("Configs/models/lenet5.json")
        s.batchSize = 64
        s.setEpochs(1)
        s.checkpointDirectory = folder + "/run"
        return s
    }

    func qatJob(_ s: RunSettings, batchNum: Int = 1) throws -> TrainingRun {
        let lenet = try ModelSpec.load(file: s.modelSpec)
        var config = try RetrainConfig.parse(parse(createDefaultConfig(for: lenet)))
        config.batchCount = batchNum
        let run = try TrainingRun(configFile: "c.json", config: config, settings: s)
        run.log = { _ in }
        return run
    }

    // MARK: Bounded settings

    func testRunSettingsHaveRanges() throws {
        assertInputError(try RunSettings.parse(parse(#"{"train": {"batch_size": 65537}}"#)), mentions: ["train.batch_size", "1...65536", "65537"])
        assertInputError(try RunSettings.parse(parse(#"{"train": {"eval_batch_size": 0}}"#)), mentions: ["train.eval_batch_size"])
        assertInputError(try RunSettings.parse(parse(#"{"train": {"epochs": 100001}}"#)), mentions: ["train.epochs", "100000"])
        assertInputError(try RunSettings.parse(parse(#"{"train": {"threads": 5000}}"#)), mentions: ["train.threads", "1...1024"])
        XCTAssertEqual(try RunSettings.parse(parse(#"{"train": {"batch_size": 65536}}"#)).batchSize, 65536)
    }

    func testBatchNumIsBoundedAtParseAndAgainstTheData() throws {
        assertInputError(try RetrainConfig.parse(parse(#"{"batch_num": 100000000000000}"#)), mentions: ["batch_num", "≤ 65536", "100000000000000"])
        var s = lenetSettings()
        s.batchSize = 64
        let run = try qatJob(s, batchNum: 4)
        let train = try fashionMNIST(.train, count: 255), test = try fashionMNIST(.test, count: 10)
        // 4 × 64 = 256 > 255 images.
        assertInputError(try run.preflight(train: train, test: test), mentions: ["c.json", "batch_num", "4 batches of 64", "255"])
        XCTAssertNoThrow(try run.preflight(train: try fashionMNIST(.train, count: 256), test: test))
    }

    func testIFMRSearchIsBounded() throws {
        func calibration(_ body: String) throws -> Any {
            let config = try RetrainConfig.parse(parse(#"{"calibration": {\#(body)}, "conv1": {}}"#))
            return try config.resolve(for: ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json")))
        }
        assertInputError(try calibration(#""search_range": [0.7, 2147483648]"#), mentions: ["calibration.search_range", "≤ 100"])
        assertInputError(try calibration(#""search_range": [0.7, 100], "search_step": 0.0001"#), mentions: ["search_step", "100000 search steps"])
        XCTAssertNoThrow(try calibration(#""search_range": [0.7, 100], "search_step": 0.001"#))
    }

    func writeSpec(outChannels: String, kernel: Int = 5) throws -> String {
        let file = folder + "/spec.json"
        try #"""
            {"name": "big", "input": [1, 28, 28], "layers": [
              {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": \#(outChannels), "kernel_size": \#(kernel)},
              {"name": "flat", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 10, "out_features": 10}]}
            """#.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func testModelSpecSizesAreBounded() throws {
        assertInputError(try ModelSpec.load(file: writeSpec(outChannels: "1000000000000")), mentions: ["layers[0].out_channels", "1...65536"])
        assertInputError(try ModelSpec.load(file: writeSpec(outChannels: "4", kernel: 2000)), mentions: ["kernel_size", "1...1024"])
        // Within the per-key limits, but 65536 × 24 × 24 activations and a 37M × 10 linear exceed 2³¹ values.
        let wide = folder + "/wide.json"
        try #"""
            {"input": [1, 28, 28], "layers": [
              {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 65536, "kernel_size": 5},
              {"name": "pool", "type": "maxpool2d", "kernel_size": 2},
              {"name": "conv2", "type": "conv2d", "in_channels": 65536, "out_channels": 65536, "kernel_size": 1},
              {"name": "flat", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 9437184, "out_features": 10}]}
            """#.write(toFile: wide, atomically: true, encoding: .utf8)
        assertInputError(try ModelSpec.load(file: wide), mentions: [wide, "conv2", "exceeds the limit of 2147483648 values"])
    }

    func testBatchNormSettingsAndDebugFlagsAreBounded() throws {
        let file = folder + "/bn.json"
        func spec(eps: String, momentum: String) throws -> ModelSpec {
            try #"""
                {"input": [1, 4, 4], "layers": [
                  {"name": "bn", "type": "batchnorm2d", "num_features": 1, "eps": \#(eps), "momentum": \#(momentum)},
                  {"name": "flat", "type": "flatten"}, {"name": "fc", "type": "linear", "in_features": 16, "out_features": 2}]}
                """#.write(toFile: file, atomically: true, encoding: .utf8)
            return try ModelSpec.load(file: file)
        }
        assertInputError(try spec(eps: "-1", momentum: "0.1"), mentions: ["layers[0].eps", "> 0"])
        assertInputError(try spec(eps: "1e-5", momentum: "2"), mentions: ["layers[0].momentum", "[0, 1]"])
        XCTAssertNoThrow(try spec(eps: "1e-5", momentum: "0.1"))
        for command in ["compare", "sensitivity"] {
            let (status, output) = try qat([command, "--checkpoint", "Checkpoints/lenet5-float.h5", "--batch-size", "65537"])
            XCTAssertEqual(status, 64, output)
            XCTAssertTrue(output.contains("--batch-size must be in 1...65536, got 65537"), output)
        }
    }

    func testMemoryBudgetRefusesWhatCannotFit() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let budget = MemoryBudget(spec: spec, graph: try ModelGraph(spec), batchSize: 65536, datasetValues: 60000 * 784)
        let bytes = try XCTUnwrap(budget.bytes)
        XCTAssertGreaterThan(bytes, 60000 * 784 * 4, "at least the dataset")
        XCTAssertNoThrow(try budget.check(available: UInt64(bytes)))
        XCTAssertThrowsError(try budget.check(available: UInt64(bytes - 1))) { error in
            XCTAssertTrue("\(error)".contains("needs about") && "\(error)".contains("batch size 65536"), "\(error)")
        }
    }

    // MARK: Data against the model

    /// Writes an uncompressed IDX split (`count` images of `side`×`side`, labels `label`).
    func writeIDX(split: String, count: Int, side: Int, label: UInt8 = 3) throws -> String {
        let data = folder + "/data"
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        func be(_ n: Int) -> [UInt8] { [UInt8(n >> 24 & 255), UInt8(n >> 16 & 255), UInt8(n >> 8 & 255), UInt8(n & 255)] }
        let images = [0, 0, 8, 3] + be(count) + be(side) + be(side) + [UInt8](repeating: 128, count: count * side * side)
        let labels = [0, 0, 8, 1] + be(count) + [UInt8](repeating: label, count: count)
        try Data(images).write(to: URL(fileURLWithPath: data + "/\(split)-images-idx3-ubyte"))
        try Data(labels).write(to: URL(fileURLWithPath: data + "/\(split)-labels-idx1-ubyte"))
        return data
    }

    func testImagesOfAnotherShapeAreRefusedNamingTheFileAndBothShapes() throws {
        let data = try writeIDX(split: "train", count: 8, side: 14)
        _ = try writeIDX(split: "t10k", count: 4, side: 14)
        let train = try FashionMNIST.load(folder: data, split: .train), test = try FashionMNIST.load(folder: data, split: .test)
        let run = try qatJob(lenetSettings())
        assertInputError(try run.preflight(train: train, test: test),
                         mentions: [data + "/train-images-idx3-ubyte", "[1, 14, 14]", "[1, 28, 28]"])
        XCTAssertThrowsError(try run.prepareFreshStart(train: train), "calibration refuses it too")
    }

    func testEvalRefusesImagesOfAnotherShape() throws {
        let data = try writeIDX(split: "t10k", count: 4, side: 14)
        let (status, output) = try qat(["eval", "--checkpoint", "Checkpoints/lenet5-float.h5", "--data", data])
        XCTAssertEqual(status, 1, output)
        XCTAssertEqual(output.split(separator: "\n").count, 1, output)
        XCTAssertTrue(output.contains(data + "/t10k-images-idx3-ubyte") && output.contains("[1, 14, 14]") && output.contains("[1, 28, 28]"), output)
    }

    func testEvalOfADeployFileRefusesImagesOfAnotherShape() throws {
        let checkpoint = folder + "/qat.h5", deployed = folder + "/int8.h5"
        let train = try qat(["train", "--config", "Configs/retrain.json", "--epochs", "1", "--train-limit", "64",
                             "--test-limit", "32", "--output", checkpoint])
        XCTAssertEqual(train.0, 0, train.1)
        XCTAssertEqual(try qat(["deploy", "--checkpoint", checkpoint, "--output", deployed]).0, 0)
        let data = try writeIDX(split: "t10k", count: 4, side: 14)
        let (status, output) = try qat(["eval", "--deploy", deployed, "--data", data])
        XCTAssertEqual(status, 1, output)
        XCTAssertEqual(output.split(separator: "\n").count, 1, output)
        XCTAssertTrue(output.contains(data + "/t10k-images-idx3-ubyte") && output.contains("[1, 14, 14]") && output.contains("[1, 28, 28]"), output)
    }

    func testEmptySetsAndLabelsOutsideTheClassesAreRefused() throws {
        let run = try qatJob(lenetSettings())
        let test = try fashionMNIST(.test, count: 10)
        let empty = Dataset(images: [], labels: [], sampleShape: [1, 28, 28], imageFile: "empty-images")
        assertInputError(try run.preflight(train: empty, test: test), mentions: ["empty-images", "training set is empty"])
        assertInputError(try run.preflight(train: test, test: test.prefix(0)), mentions: ["test set is empty"])
        var badLabel = test
        badLabel.labels[4] = 10
        assertInputError(try run.preflight(train: badLabel, test: test), mentions: [test.labelFile, "label 10 at index 4", "[0, 10)"])
    }

    func testAbsurdClipBoundsAreRefusedAtParse() throws {
        func layer(_ max: String, _ min: String) throws -> RetrainConfig {
            try RetrainConfig.parse(parse(#"{"conv1": {"retrain_data_config": {"clip_max": \#(max), "clip_min": \#(min)}}}"#))
        }
        assertInputError(try layer("1e-45", "-1e-45"), mentions: ["conv1.retrain_data_config.clip_max", "float32 grid resolution"])
        // Below 1 the limit is a grid step of 2⁻²³ ≈ 1.19e-7, a range of 255 × 2⁻²³ ≈ 3.04e-5:
        // ±1e-5 (step 7.8e-8) is refused, ±3e-5 (step 2.35e-7) accepted.
        assertInputError(try layer("1e-5", "-1e-5"), mentions: ["clip_max", "[-1e-05, 1e-05]"])
        XCTAssertNoThrow(try layer("3e-5", "-3e-5"))
        XCTAssertNoThrow(try layer("1e-3", "-1e-3"))
        XCTAssertNoThrow(try layer("6", "-6"))
    }

    /// Runs the debug `qat` binary from the repository root; (status, stdout + stderr).
    func testHugeSpecFailsInEveryCommandWithOneLine() throws {
        let spec = try writeSpec(outChannels: "1000000000000")
        let config = folder + "/c.json"
        try #"{"model": {"spec": "\#(spec)"}, "conv1": {}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        for arguments in [["plan", "--config", config], ["check", "model", "--config", config], ["train", "--config", config]] {
            let (status, output) = try qat(arguments)
            XCTAssertEqual(status, 1, "\(arguments): \(output)")
            XCTAssertEqual(output.split(separator: "\n").count, 1, "\(arguments): one line: \(output)")
            XCTAssertTrue(output.contains("layers[0].out_channels") && output.contains(spec), output)
        }
    }

    func testEmptyInitPathNamesTheKeyInTheCLI() throws {
        let config = folder + "/c.json"
        try #"{"model": {"init": ""}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (status, output) = try qat(["train", "--config", config])
        XCTAssertEqual(status, 1, output)
        XCTAssertTrue(output.contains("model.init") && output.contains("\"\" is not a path"), output)
    }

    // MARK: Fail early and clean

    func testPathSettingsNameTheirKey() throws {
        assertInputError(try RunSettings.parse(parse(#"{"model": {"init": ""}}"#)), mentions: ["model.init", "\"\" is not a path"])
        assertInputError(try RunSettings.parse(parse(#"{"checkpoint": {"dir": " "}}"#)), mentions: ["checkpoint.dir"])
        assertInputError(try RunSettings.parse(parse(#"{"data": {"path": ""}}"#)), mentions: ["data.path"])
    }

    func testADirectoryAsACheckpointIsOneLine() throws {
        XCTAssertThrowsError(try CheckpointFile.read(from: folder)) { error in
            XCTAssertEqual("\(error)", "\(folder): is a folder, not an HDF5 file")
        }
    }

    func testUnwritableOutputFolderFailsBeforeAnyWork() throws {
        let blocker = folder + "/blocker"
        XCTAssertTrue(FileManager.default.createFile(atPath: blocker, contents: Data("x".utf8)))
        var s = lenetSettings()
        s.checkpointDirectory = blocker
        let run = try qatJob(s)
        assertInputError(try run.preflight(train: try fashionMNIST(.train, count: 64), test: try fashionMNIST(.test, count: 10)),
                         mentions: [blocker, "checkpoint.dir", "is a file, not a folder"])
        s.checkpointDirectory = nil
        s.output = blocker + "/final.h5"
        assertInputError(try qatJob(s).preflight(train: try fashionMNIST(.train, count: 64), test: try fashionMNIST(.test, count: 10)),
                         mentions: [blocker, "checkpoint.output"])
    }

    func testStaleTemporariesAreRemovedByTheNextRun() throws {
        let run = folder + "/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        // PID 2147483646 is above any Linux pid_max, so no process has it.
        let stale = ".step-4.h5.tmp-2147483646", live = ".step-5.h5.tmp-\(getpid())"
        let unrelated = ["step-4.h5", ".hidden", ".x.tmp-abc", ".tmp-12"]
        for name in [stale, live] + unrelated { XCTAssertTrue(FileManager.default.createFile(atPath: run + "/" + name, contents: Data())) }
        XCTAssertEqual(TempFileCleanup.temporaryOwner(stale), 2147483646)
        XCTAssertNil(TempFileCleanup.temporaryOwner(".tmp-12"))
        let job = try qatJob(lenetSettings())
        var logged: [String] = []
        job.log = { logged.append($0) }
        try job.preflight(train: try fashionMNIST(.train, count: 64), test: try fashionMNIST(.test, count: 10))
        let left = try FileManager.default.contentsOfDirectory(atPath: run).sorted()
        XCTAssertEqual(left, ([live] + unrelated).sorted())
        XCTAssertEqual(logged, ["removed \(stale), left by an interrupted write"])
    }
}
