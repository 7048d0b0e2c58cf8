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

/// Fake quantizers attached from a retrain config: calibration, gradients into the clip bounds,
/// checkpoints of the whole state.
final class QATTrainingTests: XCTestCase {
    let lenetSpec = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    func quantizedLeNet(_ configJSON: String? = nil) throws -> Model {
        let model = try Model(spec: lenetSpec, seed: 1)
        let json = configJSON ?? createDefaultConfig(for: lenetSpec)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json"))
        model.applyQuantization(try config.resolve(for: lenetSpec))
        return model
    }

    func testCalibrationStartsConv1FromIFMROnItsInput() throws {
        let model = try quantizedLeNet()
        let data = try fashionMNIST(.train, count: 64)
        let images = data.batch(Array(0..<64)[...]).images
        let calibrated = try model.calibrate(on: [images])
        XCTAssertEqual(calibrated, ["conv1", "conv2", "fc1", "fc2", "fc3"])
        // conv1 sees the normalised image itself, so its bounds are IFMR of the batch.
        let expected = try ifmr(images.storage, layer: "conv1").startingClipRange
        let conv1 = model.fakeQuantizers[0].activation
        XCTAssertEqual(conv1.clipMax.value.storage[0], expected.clipMax)
        XCTAssertEqual(conv1.clipMin.value.storage[0], expected.clipMin)
        XCTAssertTrue(model.fakeQuantizers.allSatisfy { $0.activation.initialized })
        // A second calibration (a resumed run) leaves initialised layers alone.
        XCTAssertEqual(try model.calibrate(on: [images]), [])
    }

    func testConfiguredBoundsAreKeptAndNotCalibrated() throws {
        let model = try quantizedLeNet(#"{"conv1": {"retrain_data_config": {"clip_max": 2.5, "clip_min": -0.5}}}"#)
        let data = try fashionMNIST(.train, count: 16)
        XCTAssertEqual(try model.calibrate(on: [data.batch(Array(0..<16)[...]).images]), [])
        XCTAssertEqual(model.fakeQuantizers.map(\.layerName), ["conv1"])
        XCTAssertEqual(model.fakeQuantizers[0].activation.clipMax.value.storage[0], 2.5)
    }

    /// The acceptance test of the fake-quant issue: clip bounds get non-zero gradients and move under SGD.
    func testClipBoundsGetGradientsAndMoveUnderSGD() throws {
        // The default config freezes conv1's bounds (learn_clip false, tested below); learn all here.
        let model = try quantizedLeNet(createDefaultConfig(for: lenetSpec).replacingOccurrences(of: "\"learn_clip\": false", with: "\"learn_clip\": true"))
        let data = try fashionMNIST(.train, count: 256)
        try model.calibrate(on: [data.batch(Array(0..<64)[...]).images])
        let boundsBefore = model.fakeQuantizers.map { $0.activation.clipMax.value.storage[0] }
        let sgd = SGD(learningRate: 0.05, momentum: 0.9)
        var sawGradient = Set<String>()
        for step in 0..<4 {
            let batch = data.batch(Array((step * 64)..<((step + 1) * 64))[...])
            let tape = Tape()
            let (loss, _) = softmaxCrossEntropy(model.forward(batch.images, training: true, tape: tape), labels: batch.labels, tape: tape)
            tape.backward(from: loss)
            for q in model.fakeQuantizers where abs(q.activation.clipMax.grad?.storage[0] ?? 0) > 0 {
                sawGradient.insert(q.layerName)
            }
            sgd.step(model.parameters)
        }
        XCTAssertEqual(sawGradient, ["conv1", "conv2", "fc1", "fc2", "fc3"], "every clip_max must receive a gradient")
        let boundsAfter = model.fakeQuantizers.map { $0.activation.clipMax.value.storage[0] }
        for (i, q) in model.fakeQuantizers.enumerated() {
            XCTAssertNotEqual(boundsBefore[i], boundsAfter[i], "\(q.layerName).act_quant.clip_max did not move")
        }
        // fixed_min layers get a clip_min gradient, but the next forward puts the bound back to 0;
        // conv1 (image input, no fixed_min) trains its lower bound.
        _ = model.forward(data.batch(Array(0..<8)[...]).images, training: true, tape: nil)
        XCTAssertEqual(model.fakeQuantizers[1].activation.clipMin.value.storage[0], 0)
        XCTAssertLessThan(model.fakeQuantizers[0].activation.clipMin.value.storage[0], 0)
    }

    /// learn_clip false (the default for the layer reading the image): the bounds stay at their
    /// calibrated values, and conv1 needs no input gradient, so its quantizer records no pullback.
    func testFrozenClipBoundsSpareTheInputGradientPass() throws {
        XCTAssertTrue(createDefaultConfig(for: lenetSpec).contains("\"learn_clip\": false"))
        let frozen = try quantizedLeNet()
        let learned = try quantizedLeNet(#"{"conv1": {}, "conv2": {}, "fc1": {}, "fc2": {}, "fc3": {}}"#)
        let data = try fashionMNIST(.train, count: 64)
        let batch = data.batch(Array(0..<64)[...])
        var pullbacks: [Int] = []
        for model in [frozen, learned] {
            try model.calibrate(on: [batch.images])
            let tape = Tape()
            let (loss, _) = softmaxCrossEntropy(model.forward(batch.images, training: true, tape: tape), labels: batch.labels, tape: tape)
            pullbacks.append(tape.count)
            tape.backward(from: loss)
        }
        XCTAssertEqual(pullbacks[0], pullbacks[1] - 1, "conv1's input quantizer should record nothing when its bounds are frozen")
        let conv1 = frozen.fakeQuantizers[0]
        XCTAssertFalse(conv1.activation.clipMax.requiresGrad)
        XCTAssertNil(conv1.activation.clipMax.grad)
        XCTAssertGreaterThan((frozen.layer(named: "conv1") as! Conv2DLayer).weight.grad?.maxAbs() ?? 0, 0)
    }

    func testCheckpointRoundTripsParametersAndQuantizerStateBitForBit() throws {
        let model = try quantizedLeNet()
        let data = try fashionMNIST(.train, count: 64)
        try model.calibrate(on: [data.batch(Array(0..<64)[...]).images])
        _ = model.forward(data.batch(Array(0..<8)[...]).images, training: true, tape: nil)  // sets scales
        let file = try makeTemporaryFolder(self) + "/qat.h5"
        try model.checkpointFile(extra: model.quantizerStateTensors()).write(to: file)

        let restored = try quantizedLeNet()
        let checkpoint = try CheckpointFile.read(from: file)
        try restored.load(checkpoint, file: file)
        try restored.loadQuantizerState(checkpoint.extra, file: file)
        for (a, b) in zip(model.parameters, restored.parameters) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(a.variable.value.storage.map(\.bitPattern), b.variable.value.storage.map(\.bitPattern), a.name)
        }
        XCTAssertEqual(model.quantizerStateTensors(), restored.quantizerStateTensors())
    }

    func testLoadingAnotherModelListsEveryMismatchAtOnce() throws {
        let file = try makeTemporaryFolder(self) + "/resnet.h5"
        let resnet = try Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json")))
        try resnet.checkpointFile().write(to: file)
        let lenet = try Model(spec: lenetSpec)
        XCTAssertThrowsError(try lenet.load(CheckpointFile.read(from: file), file: file)) { error in
            guard let mismatch = error as? CheckpointMismatchError else { return XCTFail("\(error)") }
            XCTAssertTrue(mismatch.missing.contains("conv1.weight"))
            XCTAssertTrue(mismatch.unexpected.contains("stem.weight"))
            XCTAssertTrue(mismatch.unexpected.contains("stem_bn.running_mean"))
            XCTAssertTrue("\(mismatch)".contains(file))
        }
        // Same names, other shapes.
        var spec = lenetSpec
        spec.layers[9].kind = .linear(LinearAttributes(inputFeatures: 120, outputFeatures: 80))
        spec.layers[11].kind = .linear(LinearAttributes(inputFeatures: 80, outputFeatures: 10))
        let wider = try Model(spec: spec)
        let lenetFile = file + ".lenet.h5"
        try lenet.checkpointFile().write(to: lenetFile)
        XCTAssertThrowsError(try wider.load(CheckpointFile.read(from: lenetFile), file: lenetFile)) { error in
            // fc2.weight, fc2.bias and fc3.weight
            XCTAssertEqual((error as? CheckpointMismatchError)?.shapeMismatches.count, 3, "\(error)")
        }
    }
}
