import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// `qat check model`: shared outputs, unmatched config entries, coverage, few channels, BN folding.
final class DebugModelCheckTests: XCTestCase {
    let resnet = try! ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))

    func testFlagsASharedLayerAndAnEntryThatMatchesNothing() throws {
        // AMCT form: an entry for a layer the model lacks is an error (training would refuse it).
        let amct = try DebugFixtures.config(#"{"stem": {}, "block1_conv1": {}, "block1_conv2": {}, "conv2": {}, "fc": {}, "conv9": {}}"#, spec: resnet)
        let report = checkModel(spec: resnet, config: amct)
        XCTAssertFalse(report.passed, report.text())
        XCTAssertEqual(report.errors.map(\.subject), ["conv9"], report.text())
        XCTAssertEqual(report.errors.first?.check, "unmatched entry")
        // stem_relu feeds block1_conv1 (quantized) and block1_add (float): the residual fork.
        let shared = report.findings("shared output")
        XCTAssertEqual(shared.map(\.subject), ["stem_relu"], report.text())
        XCTAssertEqual(shared.first?.severity, .warning)
        XCTAssertTrue(shared.first!.message.contains("block1_conv1") && shared.first!.message.contains("block1_add"), shared.first!.message)
        XCTAssertTrue(report.text().contains("1 error(s)"), report.text())

        // Simple form: the same mistake is only a warning (one simple config may serve several models).
        let simple = try DebugFixtures.config(#"{"retrain_data_config": {}, "skip_layers": ["conv9"]}"#, spec: resnet)
        let simpleReport = checkModel(spec: resnet, config: simple)
        XCTAssertTrue(simpleReport.passed, simpleReport.text())
        XCTAssertEqual(simpleReport.findings("unmatched entry").map(\.severity), [.warning], simpleReport.text())
        XCTAssertEqual(simpleReport.findings("shared output").map(\.subject), ["stem_relu"])
    }

    func testTwoQuantizedReadersOfOneTensor() throws {
        var spec = DebugFixtures.lenetSpec
        // A second head reading pool2 through its own flatten: both fc1 and fc_aux quantize flatten's output.
        let aux = LayerSpec(name: "fc_aux", kind: .linear(.init(inputFeatures: 400, outputFeatures: 10)), inputs: ["flatten"])
        spec.layers.insert(aux, at: 7)
        var fc1 = spec.layers[8]; fc1.inputs = ["flatten"]; spec.layers[8] = fc1
        _ = try ModelGraph(spec)
        let report = checkModel(spec: spec, config: try DebugFixtures.config(nil, spec: spec))
        let shared = report.findings("shared output")
        XCTAssertEqual(shared.map(\.subject), ["flatten"], report.text())
        XCTAssertTrue(shared[0].message.contains("requantize"), shared[0].message)
    }

    func testCoverageAndFewChannelsOnLeNet() throws {
        let report = checkModel(spec: DebugFixtures.lenetSpec, config: try DebugFixtures.config(#"{"conv1": {}, "conv2": {}, "fc1": {}, "fc2": {"retrain_enable": false}}"#))
        XCTAssertTrue(report.passed, report.text())
        XCTAssertEqual(report.findings("few channels").map(\.subject), ["conv1"])
        let coverage = report.findings("coverage")
        XCTAssertEqual(coverage.filter { $0.severity == .warning }.map(\.subject), ["fc3"], report.text())
        XCTAssertEqual(coverage.filter { $0.severity == .info }.map(\.subject), ["fc2"], report.text())
        XCTAssertTrue(report.findings("shared output").isEmpty, "LeNet is a chain")
        XCTAssertTrue(report.findings("batchnorm fold").isEmpty)
    }

    func testBatchNormThatCannotBeFolded() throws {
        func layer(_ name: String, _ kind: LayerKind, _ inputs: [String] = []) -> LayerSpec {
            LayerSpec(name: name, kind: kind, inputs: inputs)
        }
        let spec = ModelSpec(name: "bn-test", inputShape: [1, 8, 8], layers: [
            layer("conv", .conv2d(.init(inputChannels: 1, outputChannels: 4, kernelSize: 3, padding: 1))),
            layer("bn", .batchnorm2d(.init(features: 4))),
            layer("skip", .add, ["bn", "conv"]),          // conv's output also read here: no fold
            layer("relu", .relu),
            layer("bn_after_relu", .batchnorm2d(.init(features: 4))),   // not after a conv
            layer("flatten", .flatten),
            layer("fc", .linear(.init(inputFeatures: 256, outputFeatures: 10))),
        ])
        _ = try ModelGraph(spec)
        let quantized = checkModel(spec: spec, config: try DebugFixtures.config(#"{"conv": {}, "fc": {}}"#, spec: spec))
        let folds = quantized.findings("batchnorm fold")
        XCTAssertEqual(folds.map(\.subject), ["bn", "bn_after_relu"], quantized.text())
        XCTAssertEqual(folds.map(\.severity), [.error, .warning])
        XCTAssertFalse(quantized.passed)
        // With the conv float the fork is a warning only.
        let float = checkModel(spec: spec, config: try DebugFixtures.config(#"{"fc": {}}"#, spec: spec))
        XCTAssertEqual(float.findings("batchnorm fold").map(\.severity), [.warning, .warning], float.text())
        XCTAssertTrue(float.passed)
    }

    func testCommandLineExitCodes() throws {
        let folder = try makeTemporaryFolder(self)
        let bad = folder + "/bad.json", good = folder + "/good.json"
        try #"{"model": {"spec": "\#(repositoryPath("Configs/models/resnet-tiny.json"))"}, "stem": {}, "conv9": {}}"#
            .write(toFile: bad, atomically: true, encoding: .utf8)
        try #"{"model": {"spec": "\#(repositoryPath("Configs/models/lenet5.json"))"}, "conv1": {}, "conv2": {}}"#
            .write(toFile: good, atomically: true, encoding: .utf8)
        let failing = try runQAT(["check", "model", "--config", bad])
        XCTAssertEqual(failing.status, 1, failing.stdout + failing.stderr)
        XCTAssertTrue(failing.stdout.contains("conv9") && failing.stdout.contains("shared output"), failing.stdout)
        let passing = try runQAT(["check", "model", "--config", good])
        XCTAssertEqual(passing.status, 0, passing.stdout + passing.stderr)
        XCTAssertTrue(passing.stdout.contains("warning") && passing.stdout.contains("fc1"), passing.stdout)
    }
}
