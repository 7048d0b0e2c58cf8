import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// AMCT's `enable_auto_nuq` (issue 12, proto-text simple config): NUQ for the uniform layers
/// whose weight bytes exceed their input plus output activation bytes per image, never for a
/// layer override_layer_configs names or a weight-only one.
final class AutoNUQTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func plan(_ text: String) throws -> QuantizationPlan {
        try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data(text.utf8), file: "quant.cfg")).resolve(for: lenet)
    }

    /// LeNet-5 by hand, INT8 (one byte per weight and per activation):
    /// conv1 6·1·5·5 = 150 B of weights, 1·28·28 + 6·28·28 = 5488 B of activations;
    /// conv2 16·6·5·5 = 2400 B, 6·14·14 + 16·10·10 = 2776 B (close, but below);
    /// fc1 400·120 = 48000 B, 400 + 120 = 520 B; fc2 120·84 = 10080 B, 204 B; fc3 84·10 = 840 B, 94 B.
    func testLeNetSelectionByHandComputedBytes() throws {
        let auto = try plan("enable_auto_nuq: true")
        XCTAssertEqual(auto.autoNonUniform, [
            AutoNUQDecision(layer: "conv1", weightBytes: 150, activationBytes: 5488),
            AutoNUQDecision(layer: "conv2", weightBytes: 2400, activationBytes: 2776),
            AutoNUQDecision(layer: "fc1", weightBytes: 48000, activationBytes: 520),
            AutoNUQDecision(layer: "fc2", weightBytes: 10080, activationBytes: 204),
            AutoNUQDecision(layer: "fc3", weightBytes: 840, activationBytes: 94),
        ])
        for name in ["fc1", "fc2", "fc3"] {
            XCTAssertEqual(auto.layer(named: name)?.quantizer?.nonUniform, NUQParameters(steps: 16, iterations: 5), name)
            XCTAssertEqual(auto.layer(named: name)?.rule, "global, enable_auto_nuq")
        }
        XCTAssertNil(auto.layer(named: "conv2")?.quantizer?.nonUniform)
        let table = auto.table()
        XCTAssertTrue(table.contains("picked fc1 (48000 B of weights > 520 B of activations per image), fc2 (10080 B of weights > 204 B"), table)
        XCTAssertTrue(table.contains("kept uniform conv1 (150 B of weights ≤ 5488 B of activations per image), conv2 (2400 B"), table)
        // Off, or left out: no candidates at all, every layer uniform.
        for text in ["enable_auto_nuq: false", ""] {
            let off = try plan(text)
            XCTAssertNil(off.autoNonUniform)
            XCTAssertTrue(off.quantizedLayers.allSatisfy { $0.quantizer?.nonUniform == nil })
            XCTAssertFalse(off.table().contains("enable_auto_nuq"))
        }
        // INT16 inputs double the activation bytes: fc3's 188 B still lose to its 840 B of weights.
        let wide = try plan("enable_auto_nuq: true override_layer_types { layer_type: \"Gemm\" calibration_config "
                            + "{ ifmr_quantize { dst_type: INT16 } } }")
        XCTAssertEqual(wide.autoNonUniform?.last, AutoNUQDecision(layer: "fc3", weightBytes: 840, activationBytes: 188))
        // The checkpoint's record of the plan keeps the picked layers' NUQ.
        let record = auto.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(record.utf8), file: "record")).resolve(for: lenet)
        XCTAssertEqual(reread.layers.map { $0.quantizer?.nonUniform }, auto.layers.map { $0.quantizer?.nonUniform })
    }

    func testOverrideLayerConfigsLayersAreNeverPicked() throws {
        let auto = try plan("""
            enable_auto_nuq: true
            override_layer_configs { layer_name: "fc1" calibration_config { arq_quantize { channel_wise: false } } }
            override_layer_configs { layer_name: "fc2" calibration_config { nuq_quantize { num_steps: 32 num_of_iteration: 1 } } }
            override_layer_types { layer_type: "Gemm" calibration_config { arq_quantize { channel_wise: false } } }
            """)
        XCTAssertEqual(auto.autoNonUniform?.map(\.layer), ["conv1", "conv2", "fc3"])
        XCTAssertNil(auto.layer(named: "fc1")?.quantizer?.nonUniform, "forced uniform by its override: kept so")
        XCTAssertEqual(auto.layer(named: "fc2")?.quantizer?.nonUniform, NUQParameters(steps: 32, iterations: 1), "its own NUQ stays")
        XCTAssertEqual(auto.layer(named: "fc3")?.quantizer?.nonUniform, NUQParameters(steps: 16, iterations: 5),
                       "a type override is not a layer override")
        XCTAssertEqual(auto.layer(named: "fc3")?.rule, "override_layer_types.linear, enable_auto_nuq")
    }

    func testAutoNUQLeNetCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let configFile = folder + "/quant.cfg"
        try Data("enable_auto_nuq: true\n".utf8)
            .write(to: URL(fileURLWithPath: configFile))
        let (planStatus, planned) = try qat(["plan", "--config", configFile, "--model", "Configs/models/lenet5.json"])
        XCTAssertEqual(planStatus, 0, planned)
        XCTAssertTrue(planned.contains("picked fc1 (48000 B of weights > 520 B"), planned)
        let ptq = folder + "/ptq.h5", deployed = folder + "/int8.h5"
        let (status, log) = try qat(["calibrate", "--config", configFile, "--model", "Configs/models/lenet5.json",
                                     "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                     "--batch-num", "2", "--train-limit", "512", "--test-limit", "300"])
        XCTAssertEqual(status, 0, log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        XCTAssertEqual(deployLog.components(separatedBy: "NUQ (nuq_quantize): at most 16 levels").count, 4, deployLog)
        let file = try DeployFile.read(from: deployed)
        for name in ["fc1", "fc2", "fc3"] {
            let node = try XCTUnwrap(file.nodes.first { $0.name == name })
            let rows = node.weightCodes.count / node.outputChannels
            XCTAssertLessThanOrEqual(Set(node.weightCodes).count, 16, "\(name): one scale per tensor, so 16 codes in all (\(rows) per row)")
        }
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "300"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }
}
