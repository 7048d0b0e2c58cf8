import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// Vitis AI's `keep_add_layer_accuracy` (issue 12): every add runs in float, between its
/// producers' dequantized outputs and the next quantized reader's quantizer, in fake quant and
/// on the INT8 engine (a float node), and `qat deploy` says so.
final class KeepAddFloatTests: XCTestCase {
    let resnetSpecFile = repositoryPath("Configs/models/resnet-tiny.json")

    /// Configs/vitis/plain-maxmin.json with keep_add_layer_accuracy set to `keep`.
    func vitisConfig(keepAdds: Bool) throws -> String {
        let text = try String(contentsOfFile: repositoryPath("Configs/vitis/plain-maxmin.json"), encoding: .utf8)
        XCTAssertTrue(text.contains(#""keep_add_layer_accuracy": false"#))
        return text.replacingOccurrences(of: #""keep_add_layer_accuracy": false"#, with: #""keep_add_layer_accuracy": \#(keepAdds)"#)
    }

    func testThePlanKeepsEveryAddFloat() throws {
        let spec = try ModelSpec.load(file: resnetSpecFile)
        func plan(keepAdds: Bool) throws -> QuantizationPlan {
            try RetrainConfig.parse(JSONObject.parse(Data(try vitisConfig(keepAdds: keepAdds).utf8), file: "vitis.json")).resolve(for: spec)
        }
        let kept = try plan(keepAdds: true)
        let add = try XCTUnwrap(kept.layer(named: "block1_add"))
        XCTAssertEqual(add.rule, "keep_add_layer_accuracy (float)")
        XCTAssertNil(add.quantizer)
        XCTAssertNil(add.tensorQuantizer, "no shared input grid: the add's inputs are not quantized for it")
        XCTAssertTrue(kept.warnings.isEmpty, "\(kept.warnings)")
        XCTAssertTrue(kept.table().contains("keep_add_layer_accuracy (float)"), kept.table())
        // Only the add's rule differs from the default (false): every quantizer is the same.
        let plain = try plan(keepAdds: false)
        XCTAssertEqual(plain.layer(named: "block1_add")?.rule, "not quantizable (add)")
        XCTAssertEqual(kept.layers.map(\.quantizer), plain.layers.map(\.quantizer))
        // The shipped config with the key set loads as the manual writes it (LeNet-5 has no add: a warning).
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let onLeNet = try RetrainConfig.parse(JSONObject.parse(Data(try vitisConfig(keepAdds: true).utf8), file: "vitis.json")).resolve(for: lenet)
        XCTAssertEqual(onLeNet.warnings, ["keep_add_layer_accuracy: model lenet5 has no add layer; the key has no effect"])
    }

    /// resnet-tiny: calibrate with the Vitis config → deploy (the add a float node, said so) → verify PASS.
    func testResNetTinyKeepsItsAddFloatThroughDeployAndVerify() throws {
        let folder = try makeTemporaryFolder(self)
        let float = folder + "/float.h5", ptq = folder + "/ptq.h5", int8 = folder + "/int8.h5", config = folder + "/vitis.json"
        let (trainStatus, trainLog) = try qat(["train", "--config", "Configs/float.json", "--model", resnetSpecFile, "--epochs", "1",
                                               "--train-limit", "640", "--test-limit", "64", "--checkpoint-dir", folder + "/run",
                                               "--output", float])
        XCTAssertEqual(trainStatus, 0, trainLog)
        try vitisConfig(keepAdds: true).write(toFile: config, atomically: true, encoding: .utf8)
        let (status, log) = try qat(["calibrate", "--config", config, "--model", resnetSpecFile, "--checkpoint", float, "--output", ptq,
                                     "--train-limit", "256", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)

        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", int8])
        XCTAssertEqual(deployStatus, 0, deployLog)
        XCTAssertTrue(deployLog.contains("float add: both inputs dequantized and summed in float32"), deployLog)
        let deployed = try DeployFile.read(from: int8)
        let add = try XCTUnwrap(deployed.nodes.first { $0.name == "block1_add" })
        XCTAssertNil(add.sharedInputGrid)
        XCTAssertNil(add.output, "the sum is float")
        // Its producers hand it floats: block1_conv2 (BN folded) dequantizes instead of requantizing.
        XCTAssertNil(deployed.nodes.first { $0.name == "block1_conv2" }?.output)
        XCTAssertEqual(deployed.nodes.first { $0.name == "quantize:block1_add" }?.produces, "block1_relu2",
                       "the sum is quantized once, for conv2")

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", int8, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }
}
