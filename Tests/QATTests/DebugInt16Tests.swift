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

/// `dst_type: "INT16"` through the Model path: a layer's input is fake-quantized with
/// n = 65535 on [−32768, 32767], forward and backward, as docs/ALGORITHMS.md §1 states.
final class DebugInt16Tests: XCTestCase {
    /// Wraps a layer's quantizer to see the tensors around its input fake quant.
    final class RecordingQuantizer: LayerQuantizer {
        let inner: FakeQuantizer
        var input: Variable?
        var output: Variable?
        init(_ inner: FakeQuantizer) { self.inner = inner }
        func quantizeInput(_ x: Variable, training: Bool, tape: Tape?) -> Variable {
            input = x
            output = inner.quantizeInput(x, training: training, tape: tape)
            return output!
        }
        func quantizeWeight(_ weight: Variable, tape: Tape?) -> Variable { inner.quantizeWeight(weight, tape: tape) }
        var parameters: [NamedVariable] { inner.parameters }
    }

    let json = """
        {"conv1": {"retrain_data_config": {"clip_max": 1.0, "clip_min": -0.5, "dst_type": "INT16"}},
         "conv2": {"retrain_data_config": {"clip_max": 2.0, "clip_min": -1.0, "fixed_min": false, "dst_type": "INT16"}},
         "fc1": {}}
        """

    func testInt16FakeQuantMatchesItsFormulasForwardAndBackwardThroughTheModel() throws {
        let plan = try DebugFixtures.config(json).resolve(for: DebugFixtures.lenetSpec)
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer?.activationType, .int16)
        XCTAssertTrue(plan.table().contains("INT16/INT8"), plan.table())   // `qat plan` shows the width
        let (model, checkpoint) = try Model.load(checkpoint: DebugFixtures.floatCheckpoint)
        _ = checkpoint
        model.applyQuantization(plan)
        model.releasesReadOutputs = false   // the recorders read layer inputs after the forward pass
        var recorders: [String: RecordingQuantizer] = [:]
        for name in ["conv1", "conv2"] {
            let layer = model.layer(named: name) as! WeightedLayer
            let fake = layer.quantizer as! FakeQuantizer
            XCTAssertEqual(fake.activation.numBits, 16)
            recorders[name] = RecordingQuantizer(fake)
            layer.quantizer = recorders[name]
        }
        let batch = try fashionMNIST(.train, count: 16).batch(Array(0..<16)[...])
        let tape = Tape()
        let (loss, _) = softmaxCrossEntropy(model.forward(batch.images, training: true, tape: tape), labels: batch.labels, tape: tape)
        tape.backward(from: loss)

        for (name, clipMax, clipMin) in [("conv1", Float(1.0), Float(-0.5)), ("conv2", 2.0, -1.0)] {
            let recorder = recorders[name]!
            let x = recorder.input!.value.storage, y = recorder.output!.value.storage
            let g = recorder.output!.grad!.storage
            // s = (M − m) / 65535, o = round(−32768 − m/s), y = (clamp(round(x/s) + o, −32768, 32767) − o)·s.
            let s = (clipMax - clipMin) / 65535
            let o = (Float(-32768) - clipMin / s).rounded(.toNearestOrEven)
            let lower = s * (-32768 - o), upper = lower + 65535 * s
            XCTAssertEqual(recorder.inner.activation.scale, s, name)
            XCTAssertEqual(Float(recorder.inner.activation.offset), o, name)
            var above = 0, below = 0
            var dMax = 0.0, dMin = 0.0
            for i in x.indices {
                let code = min(max((x[i] / s).rounded(.toNearestOrEven) + o, -32768), 32767)
                XCTAssertEqual(y[i], (code - o) * s, accuracy: 1e-6, "\(name)[\(i)]")
                let up = x[i] > upper, lo = x[i] < lower
                if up { above += 1 }
                if lo { below += 1 }
                let t = up ? clipMax / s : lo ? clipMin / s : x[i] / s
                let e = Double(t.rounded(.toNearestOrEven) - t) / 65535
                dMax += Double(g[i]) * (e + (up ? 1 : 0))
                dMin += Double(g[i]) * ((lo ? 1 : 0) - e)
            }
            XCTAssertGreaterThan(above, 0, "\(name): some input above U, so the clip gradient has both parts")
            // dL/dM = Σ g·(e + up), dL/dm = Σ g·(lo − e) with n = 65535.
            let gradMax = Double(recorder.inner.activation.clipMax.grad!.storage[0])
            let gradMin = Double(recorder.inner.activation.clipMin.grad!.storage[0])
            XCTAssertEqual(gradMax, dMax, accuracy: 1e-4 * max(abs(dMax), 1e-3), name)
            XCTAssertEqual(gradMin, dMin, accuracy: 1e-4 * max(abs(dMin), 1e-3) + 1e-7, name)
            if name == "conv1" { XCTAssertGreaterThan(below, 0, "the image's background lies below −0.5") }
            if name == "conv2" {
                // dL/dx = g inside [L, U], 0 outside (conv2's input is pool1's output, which only the quantizer reads).
                let gx = recorder.input!.grad!.storage
                for i in x.indices {
                    XCTAssertEqual(gx[i], x[i] > upper || x[i] < lower ? 0 : g[i], "\(name) dL/dx[\(i)]")
                }
            }
        }
    }

    func testInt16IsFinerThanInt8AndSurvivesACheckpoint() throws {
        let int16 = try DebugFixtures.fakeQuantLeNet(json)
        let int8 = try DebugFixtures.fakeQuantLeNet(json.replacingOccurrences(of: "INT16", with: "INT8"))
        let float = try DebugModels.float(checkpoint: DebugFixtures.floatCheckpoint)
        let images = try fashionMNIST(.test, count: 32).batch(Array(0..<32)[...]).images
        var outputs: [[String: Tensor]] = [[:], [:], [:]]
        for (k, model) in [float, int8, int16].enumerated() {
            _ = model.forward(images, training: false, tape: nil) { i, y in outputs[k][model.layers[i].name] = y.value }
        }
        // conv1 sees the image itself in all three: INT16's error inside [L, U] is at most s/2.
        let error8 = ComparisonMetrics.compare(outputs[0]["conv1"]!.storage, outputs[1]["conv1"]!.storage)
        let error16 = ComparisonMetrics.compare(outputs[0]["conv1"]!.storage, outputs[2]["conv1"]!.storage)
        XCTAssertGreaterThan(error16.sqnrDB, error8.sqnrDB)

        let plan = try DebugFixtures.config(json).resolve(for: DebugFixtures.lenetSpec)
        let file = try makeTemporaryFolder(self) + "/int16.h5"
        try int16.checkpointFile(attributes: ["kind": "qat", "quantization": plan.explicitConfig().jsonText()],
                                 extra: int16.quantizerStateTensors()).write(to: file)
        let (restored, _) = try Model.load(checkpoint: file)
        XCTAssertEqual(restored.fakeQuantizers.map(\.activation.numBits), [16, 16, 8])
        var restoredLogits = Tensor(shape: [1])
        restoredLogits = restored.forward(images, training: false, tape: nil).value
        XCTAssertEqual(restoredLogits, int16.forward(images, training: false, tape: nil).value)
    }
}
