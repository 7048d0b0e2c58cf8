import Foundation
import XCTest

/// `qat import` and `--model model.onnx` end to end, with the debug binary.
final class ONNXCLITests: XCTestCase {
    let lenet = "Tests/Fixtures/onnx/lenet.onnx"

    func testImportWritesASpecAndAFloatCheckpoint() throws {
        let folder = try makeTemporaryFolder(self)
        let (status, output) = try qat(["import", lenet, "--output-dir", folder + "/imported"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("(opset 15): 13 layers (3 conv2d, 1 batchnorm2d"), output)
        XCTAssertTrue(output.contains("input [1, 28, 28]"), output)
        let spec = folder + "/imported/lenet.json", checkpoint = folder + "/imported/lenet-float.h5"
        let config = folder + "/imported/lenet-retrain.json"
        XCTAssertTrue(output.contains("next: qat create-config --model \(spec) --output \(config)\n"
                                      + "      qat train --config \(config) --model \(spec) --init \(checkpoint)"), output)
        // The printed next steps run (QAT on a few Fashion-MNIST images).
        let (createStatus, created) = try qat(["create-config", "--model", spec, "--output", config])
        XCTAssertEqual(createStatus, 0, created)
        let (trainStatus, log) = try qat(["train", "--config", config, "--model", spec, "--init", checkpoint, "--epochs", "1",
                                          "--train-limit", "128", "--test-limit", "128", "--output", folder + "/qat.h5"])
        XCTAssertEqual(trainStatus, 0, log)
        XCTAssertTrue(log.contains("QAT training of lenet") && log.contains("calibrated"), log)
        let (inspectStatus, summary) = try qat(["inspect", checkpoint])
        XCTAssertEqual(inspectStatus, 0, summary)
        XCTAssertTrue(summary.contains("features_bn1_BatchNormalization.running_var"), summary)
        let configText = try String(contentsOfFile: config, encoding: .utf8)
        XCTAssertTrue(configText.contains("\"features_conv1_Conv\""), configText)
    }

    func testONNXFileIsAcceptedWhereASpecIs() throws {
        let folder = try makeTemporaryFolder(self)
        let (createStatus, config) = try qat(["create-config", "--model", lenet])
        XCTAssertEqual(createStatus, 0, config)
        XCTAssertTrue(config.contains("\"classifier_fc2_MatMul\""), config)
        let configFile = folder + "/retrain.json"
        try config.write(toFile: configFile, atomically: true, encoding: .utf8)
        let (planStatus, plan) = try qat(["plan", "--config", configFile, "--model", lenet])
        XCTAssertEqual(planStatus, 0, plan)
        XCTAssertTrue(plan.contains("features_conv2_Conv"), plan)
        let (checkStatus, check) = try qat(["check", "model", "--config", configFile, "--model", lenet])
        XCTAssertEqual(checkStatus, 0, check)
        XCTAssertTrue(check.contains("Model check of lenet") && check.contains("shared output  features_relu6_Clip"), check)
        // Float training starts from the ONNX file's weights.
        let (trainStatus, log) = try qat(["train", "--config", "Configs/float.json", "--model", lenet, "--epochs", "1",
                                          "--train-limit", "128", "--test-limit", "128", "--output", folder + "/float.h5"])
        XCTAssertEqual(trainStatus, 0, log)
        XCTAssertTrue(log.contains("initialised from \(lenet)"), log)
    }

    func testBadONNXFilesExit1WithOneLineNamingTheNode() throws {
        let folder = try makeTemporaryFolder(self)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: repositoryPath(lenet)))
        let truncated = folder + "/truncated.onnx"
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: truncated))
        let cases: [(String, String)] = [
            (truncated, "truncated or damaged"),
            ("Tests/Fixtures/onnx/bad-unsupported-op.onnx", "node \"head/softmax\" (Softmax)"),
            ("Tests/Fixtures/onnx/bad-missing-initializer.onnx", "conv_missing"),
            ("Tests/Fixtures/onnx/bad-cycle.onnx", "add_a"),
            ("Tests/Fixtures/onnx/bad-shape-mismatch.onnx", "residual_add"),
            ("Tests/Fixtures/onnx/bad-conv3d.onnx", "node \"conv3d\" (Conv)"),
            ("Tests/Fixtures/onnx/bad-zero-stride.onnx", "attribute strides must be 1 or more"),
        ]
        for (file, fragment) in cases {
            let (status, output) = try qat(["import", file, "--output-dir", folder + "/out"])
            XCTAssertEqual(status, 1, output)
            let lines = output.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, output)
            XCTAssertTrue(output.hasPrefix("Error: \(file)") && output.contains(fragment), output)
            XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/out"), "nothing is written for \(file)")
        }
        let (status, output) = try qat(["create-config", "--model", "Tests/Fixtures/onnx/bad-unsupported-op.onnx"])
        XCTAssertEqual(status, 1, output)
        XCTAssertTrue(output.contains("Softmax"), output)

        // A name with a control character (found by scripts/fuzz.py: the ONNX checker's message
        // quoted it raw, and U+001C splits lines for Python and terminals) stays on one line, escaped.
        var damaged = try Data(contentsOf: URL(fileURLWithPath: repositoryPath("Tests/Fixtures/onnx/bad-missing-initializer.onnx")))
        let name = Data("conv_missing".utf8)
        while let range = damaged.range(of: name) { damaged.replaceSubrange(range, with: Data("conv\u{1C}missing".utf8)) }
        let controlName = folder + "/control-name.onnx"
        try damaged.write(to: URL(fileURLWithPath: controlName))
        let (controlStatus, controlOutput) = try qat(["import", controlName, "--output-dir", folder + "/out"])
        XCTAssertEqual(controlStatus, 1, controlOutput)
        XCTAssertFalse(controlOutput.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, controlOutput)
        XCTAssertEqual(controlOutput.split(separator: "\n").count, 1, controlOutput)
        XCTAssertTrue(controlOutput.contains("conv\\u001Cmissing"), controlOutput)
    }
}
