import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// DMQ (AMCT's `dmq_balancer_param`, ALGORITHMS.md §2.5): the scales on a hand-set case, the
/// float function kept, the refusals, the plan, and `qat calibrate` → deploy → verify.
final class DMQTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let resnet = try! ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))

    private func layer(_ name: String, _ kind: LayerKind, _ inputs: [String] = []) -> LayerSpec {
        LayerSpec(name: name, kind: kind, inputs: inputs)
    }

    private func plan(_ json: String, for model: ModelSpec) throws -> QuantizationPlan {
        try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "ptq.json")).resolve(for: model)
    }

    /// a (1×1 conv, 1 → 2) → ReLU → b (1×1 conv, 2 → 1). On images [1, 4] and [−3, 2], b's
    /// input channels reach a = 16 (4·4) and 1 (0.125·4 + 0.5); b's columns are w = 1 and 4.
    /// α = 0.5: s = √16/√1 = 4 and √1/√4 = ½. b's columns become 4 and −2, a's rows and biases
    /// are divided by s, and the float output stays.
    func testHandComputedScalesOnConvReluConv() throws {
        let spec = ModelSpec(name: "dmq", inputShape: [1, 1, 2], layers: [
            layer("a", .conv2d(.init(inputChannels: 1, outputChannels: 2, kernelSize: 1))),
            layer("relu", .relu),
            layer("b", .conv2d(.init(inputChannels: 2, outputChannels: 1, kernelSize: 1))),
            layer("flatten", .flatten),
            layer("fc", .linear(.init(inputFeatures: 2, outputFeatures: 3))),
        ])
        let images = Tensor(shape: [2, 1, 1, 2], storage: [1, 4, -3, 2])
        let other = Tensor(shape: [1, 1, 1, 2], storage: [2.5, -0.75])
        for strength in [0.5, 0.2, 0.8] {
            let model = try Model(spec: spec, seed: 1)
            let a = model.layer(named: "a") as! Conv2DLayer, b = model.layer(named: "b") as! Conv2DLayer
            a.weight.value.storage = [4, 0.125]
            a.bias!.value.storage = [0, 0.5]
            b.weight.value.storage = [1, -4]
            let plan = try plan(#"{"b": {"dmq_balancer_param": \#(strength)}}"#, for: spec)
            XCTAssertEqual(plan.ptqTransforms, [.dmq])
            model.applyQuantization(plan)
            let before = model.withoutFakeQuantizers { [images, other].map { model.forward($0, training: false, tape: nil).value } }
            let migrations = try DMQ.apply(to: model, plan: plan, batches: [images])
            // s = a^α / w^(1−α): 16^α and 4^(α−1).
            let expected = strength == 0.5 ? [4, 0.5] : [pow(16, strength), pow(4, strength - 1)]
            XCTAssertEqual(migrations.map(\.layer), ["b"])
            XCTAssertEqual(migrations[0].producer, "a")
            XCTAssertEqual(migrations[0].strength, strength)
            for (s, e) in zip(migrations[0].scales, expected) { XCTAssertEqual(s, e, accuracy: 1e-12 * e, "α \(strength)") }
            let s = expected.map(Float.init)
            XCTAssertEqual(b.weight.value.storage, [1 * s[0], -4 * s[1]], "α \(strength)")
            XCTAssertEqual(a.weight.value.storage, [4 * Float(1 / expected[0]), 0.125 * Float(1 / expected[1])], "α \(strength)")
            XCTAssertEqual(a.bias!.value.storage, [0, 0.5 * Float(1 / expected[1])], "α \(strength)")
            if strength == 0.5 {
                XCTAssertEqual(b.weight.value.storage, [4, -2])
                XCTAssertEqual(a.weight.value.storage, [1, 0.25])
                XCTAssertEqual(a.bias!.value.storage, [0, 1])
            }
            let after = model.withoutFakeQuantizers { [images, other].map { model.forward($0, training: false, tape: nil).value } }
            for (u, v) in zip(before, after) {
                for (x, y) in zip(u.storage, v.storage) { XCTAssertEqual(x, y, accuracy: 1e-6, "α \(strength)") }
            }
        }
    }

    /// A channel that never fires (a = 0) or has no weight (w = 0) keeps s = 1.
    func testZeroAndNonFiniteChannelsKeepScaleOne() {
        XCTAssertEqual(DMQ.scale(activation: 0, weight: 2, strength: 0.5), 1)
        XCTAssertEqual(DMQ.scale(activation: 3, weight: 0, strength: 0.5), 1)
        XCTAssertEqual(DMQ.scale(activation: .infinity, weight: 2, strength: 0.5), 1)
        XCTAssertEqual(DMQ.scale(activation: .nan, weight: 2, strength: 0.5), 1)
        XCTAssertEqual(DMQ.scale(activation: 9, weight: 4, strength: 0.5), 1.5)
    }

    /// LeNet-5 with the manual's example on conv2 and fc1 (Configs/amct/ptq-dmq.json): fc1's 400
    /// features form conv2's 16 channels of 25 (after the flatten), conv2's 6 come from conv1.
    /// At α = 0.5 each channel's migrated activation maximum equals its migrated weight maximum
    /// (√(a·w) on both sides), measured here afresh; the logits stay.
    func testLeNetThroughPoolAndFlattenBalancesBothSides() throws {
        let (model, _) = try Model.load(checkpoint: repositoryPath("Checkpoints/lenet5-float.h5"))
        let plan = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-dmq.json")).resolve(for: model.spec)
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer?.dmqStrength, 0.5)
        XCTAssertEqual(plan.layer(named: "fc1")?.quantizer?.dmqStrength, 0.5)
        XCTAssertNil(plan.layer(named: "fc2")?.quantizer)
        model.applyQuantization(plan)
        let data = try fashionMNIST(.train, count: 128)
        let batches = [data.batch(Array(0..<64)[...]).images, data.batch(Array(64..<128)[...]).images]
        let test = try fashionMNIST(.test, count: 32).batch(Array(0..<32)[...]).images
        let before = model.withoutFakeQuantizers { model.forward(test, training: false, tape: nil).value }
        let migrations = try DMQ.apply(to: model, plan: plan, batches: batches)
        XCTAssertEqual(migrations.map(\.layer), ["conv2", "fc1"])
        XCTAssertEqual(migrations.map(\.producer), ["conv1", "conv2"])
        XCTAssertEqual(migrations.map(\.scales.count), [6, 16])
        XCTAssertTrue(migrations[1].scales.contains { abs(log($0)) > 0.1 }, "scales that do nothing would make the test vacuous")
        let after = model.withoutFakeQuantizers { model.forward(test, training: false, tape: nil).value }
        let tolerance = 1e-5 * max(before.maxAbs(), 1)
        for (u, v) in zip(before.storage, after.storage) { XCTAssertEqual(u, v, accuracy: tolerance) }

        // fc1 after DMQ: activation maxima per group of 25 features, weight maxima per column group.
        let maxima = DMQ.inputMaxima(of: try DMQ.targets(in: model, plan: plan), in: model, batches: batches)
        let fc1 = model.layer(named: "fc1") as! LinearLayer
        for c in 0..<16 {
            var weight: Float = 0
            for o in 0..<120 { for f in (c * 25)..<((c + 1) * 25) { weight = max(weight, abs(fc1.weight.value.storage[o * 400 + f])) } }
            guard migrations[1].scales[c] != 1 else { continue }
            XCTAssertEqual(maxima[1][c], Double(weight), accuracy: 1e-4 * Double(weight), "fc1 channel \(c)")
        }
    }

    // MARK: Refusals and the plan

    func testLayersWithoutAProducerAreRefused() {
        func refusal(_ json: String, _ model: ModelSpec) -> InputError? {
            do { _ = try plan(json, for: model); return nil } catch { return error as? InputError }
        }
        let input = refusal(#"{"conv1": {"dmq_balancer_param": 0.5}}"#, lenet)
        XCTAssertEqual(input?.keyPath, "conv1.dmq_balancer_param")
        XCTAssertEqual(input?.message, "DMQ cannot run on conv1: it reads the model input, so no layer before it can take "
                       + "the division by its per-channel scales (remove the key)")
        let shared = refusal(#"{"block1_conv1": {"dmq_balancer_param": 0.5}}"#, resnet)
        XCTAssertEqual(shared?.keyPath, "block1_conv1.dmq_balancer_param")
        XCTAssertEqual(shared?.message, "DMQ cannot run on block1_conv1: stem_relu's output is also read by block1_add, "
                       + "which would see the rescaled channels (remove the key)")
        let add = refusal(#"{"conv2": {"dmq_balancer_param": 0.5}}"#, resnet)
        XCTAssertEqual(add?.keyPath, "conv2.dmq_balancer_param")
        XCTAssertTrue(add?.message.hasPrefix("DMQ cannot run on conv2: its input comes from block1_add (add), through which") == true,
                      "\(String(describing: add))")
        let relu6 = ModelSpec(name: "r6", inputShape: [1, 4, 4], layers: [
            layer("a", .conv2d(.init(inputChannels: 1, outputChannels: 2, kernelSize: 1))),
            layer("clip", .relu6),
            layer("b", .conv2d(.init(inputChannels: 2, outputChannels: 2, kernelSize: 1))),
        ])
        XCTAssertTrue(refusal(#"{"b": {"dmq_balancer_param": 0.5}}"#, relu6)?.message.contains("from clip (relu6)") == true)
        // The range check comes first, as before.
        XCTAssertEqual(refusal(#"{"conv1": {"dmq_balancer_param": 0.9}}"#, lenet)?.message, "must be in [0.2, 0.8], got 0.9")
    }

    /// resnet-tiny: block1_conv2 balances through block1_bn1's γ and β, fc through bn2 (pool and
    /// flatten between); logits stay.
    func testBatchNormProducersKeepTheFunction() throws {
        let model = try Model(spec: resnet, seed: 5)
        for bn in model.batchNormLayers {
            for c in 0..<bn.gamma.value.count {
                bn.gamma.value.storage[c] = 0.3 + 0.2 * Float(c)
                bn.beta.value.storage[c] = 0.1 * Float(c) - 0.3
                bn.statistics.variance.storage[c] = 0.5 + Float(c) * 0.25
            }
        }
        let plan = try plan(#"{"block1_conv2": {"dmq_balancer_param": 0.3}, "fc": {"dmq_balancer_param": 0.7}}"#, for: resnet)
        model.applyQuantization(plan)
        let images = try fashionMNIST(.test, count: 32).batch(Array(0..<32)[...]).images
        let before = model.withoutFakeQuantizers { model.forward(images, training: false, tape: nil).value }
        let migrations = try DMQ.apply(to: model, plan: plan, batches: [images])
        XCTAssertEqual(migrations.map(\.producer), ["block1_bn1", "bn2"])
        XCTAssertEqual(migrations.map(\.scales.count), [8, 16])
        let after = model.withoutFakeQuantizers { model.forward(images, training: false, tape: nil).value }
        let tolerance = 1e-5 * max(before.maxAbs(), 1)
        for (u, v) in zip(before.storage, after.storage) { XCTAssertEqual(u, v, accuracy: tolerance) }
    }

    /// The plan table and `--json` show the strength; the written plan reads back to the same
    /// plan; a strength on a layer that stays float is a warning.
    func testPlanShowsAndKeepsTheStrength() throws {
        let resolved = try RetrainConfig.load(file: repositoryPath("Configs/amct/ptq-dmq.json")).resolve(for: lenet)
        XCTAssertEqual(resolved.ptqTransforms, [.dmq])
        let table = resolved.table()
        XCTAssertTrue(table.contains("IFMR, DMQ α 0.5"), table)
        let written = resolved.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        XCTAssertTrue(written.contains(#""dmq_balancer_param": 0.5"#), written)
        let reread = try plan(written, for: lenet)
        XCTAssertEqual(reread.layers, resolved.layers)
        XCTAssertEqual(reread.ptqTransforms, [.dmq])
        let disabled = try plan(#"{"conv2": {"quant_enable": false, "dmq_balancer_param": 0.4}, "fc1": {}}"#, for: lenet)
        XCTAssertEqual(disabled.warnings, ["conv2.dmq_balancer_param: conv2 stays float (quant_enable false); "
                                           + "DMQ runs on quantized layers only, so the key has no effect"])
        XCTAssertEqual(disabled.ptqTransforms, [])
        // The simple form has no such key.
        XCTAssertThrowsError(try plan(#"{"retrain_data_config": {}, "override_layer_configs": {"fc1": {"dmq_balancer_param": 0.5}}}"#, for: lenet))
    }

    /// `qat calibrate` with the manual's DMQ example runs DMQ (and says so), and the result
    /// deploys and verifies.
    func testCalibrateWithDMQDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/ptq.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/amct/ptq-dmq.json", "--checkpoint",
                                     repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq, "--test-limit", "500"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("DMQ on conv2 (α 0.5, divided out of conv1): scales "), log)
        XCTAssertTrue(log.contains("DMQ on fc1 (α 0.5, divided out of conv2): scales ") && log.contains("over 16 channel(s)"), log)
        let deployed = folder + "/ptq-int8.h5"
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }

    /// `qat train` runs DMQ when it calibrates from float weights, and not from a calibrated
    /// checkpoint (whose weights carry it already).
    func testTrainRunsDMQOnlyFromFloatWeights() throws {
        let folder = try makeTemporaryFolder(self)
        let common = ["--config", "Configs/amct/ptq-dmq.json", "--epochs", "1", "--train-limit", "256", "--test-limit", "100"]
        let (status, log) = try qat(["train"] + common + ["--init", repositoryPath("Checkpoints/lenet5-float.h5"),
                                                          "--checkpoint-dir", folder + "/a", "--output", folder + "/a.h5"])
        XCTAssertEqual(status, 0, log)
        XCTAssertTrue(log.contains("DMQ on conv2 (α 0.5, divided out of conv1)") && log.contains("DMQ on fc1 (α 0.5"), log)
        let (again, second) = try qat(["train"] + common + ["--init", folder + "/a.h5", "--checkpoint-dir", folder + "/b",
                                                            "--output", folder + "/b.h5"])
        XCTAssertEqual(again, 0, second)
        XCTAssertTrue(second.contains("not applied: dmq"), second)
        XCTAssertFalse(second.contains("DMQ on"), second)
    }
}
