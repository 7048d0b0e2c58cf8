import Foundation
import XCTest
@testable import QATCore
@testable import QATModel
@testable import QATData
import QAT

/// `Model.forward` releases each layer output once its last reader has run: the same bits, less
/// memory held between forward and backward.
final class MemoryReleaseTests: XCTestCase {
    let resnetSpec = try! ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))
    let lenetSpec = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    private func liveHeapBytes() -> Int { Runtime.heapBytesInUse }

    private func images(_ count: Int) throws -> (Tensor, [Int32]) {
        let batch = try fashionMNIST(.train, count: count).batch(Array(0..<count)[...])
        return (batch.images, batch.labels)
    }

    /// Logits, loss and every parameter's gradient of two training steps, as bit patterns.
    private func twoSteps(_ model: Model, _ x: Tensor, _ labels: [Int32]) -> [[UInt32]] {
        var bits: [[UInt32]] = []
        for _ in 0..<2 {
            for p in model.parameters { p.variable.zeroGradient() }
            let tape = Tape()
            let logits = model.forward(x, training: true, tape: tape)
            let (loss, _) = softmaxCrossEntropy(logits, labels: labels, tape: tape)
            bits.append(logits.value.storage.map(\.bitPattern))
            bits.append(loss.value.storage.map(\.bitPattern))
            tape.backward(from: loss)
            for p in model.parameters {
                bits.append(p.variable.grad!.storage.map(\.bitPattern))
                // A plain SGD step, so the second step starts from updated weights.
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    for i in 0..<w.count { w[i] -= 0.05 * p.variable.grad!.storage[i] }
                }
            }
        }
        return bits
    }

    func testReleasingGivesTheSameBitsForResNetTiny() throws {
        let (x, labels) = try images(24)
        let kept = try Model(spec: resnetSpec, seed: 5)
        kept.releasesReadOutputs = false
        let released = try Model(spec: resnetSpec, seed: 5)
        XCTAssertEqual(twoSteps(released, x, labels), twoSteps(kept, x, labels))
        for (a, b) in zip(kept.batchNormLayers, released.batchNormLayers) {
            XCTAssertEqual(a.statistics.variance.storage.map(\.bitPattern), b.statistics.variance.storage.map(\.bitPattern))
        }
    }

    /// With fake quantizers, whose pullbacks read the layer inputs (outputs of earlier layers).
    func testReleasingGivesTheSameBitsForQuantizedLeNet() throws {
        let (x, labels) = try images(16)
        func quantizedLeNet() throws -> Model {
            let model = try Model(spec: lenetSpec, seed: 3)
            let json = createDefaultConfig(for: lenetSpec).replacingOccurrences(of: "\"learn_clip\": false", with: "\"learn_clip\": true")
            let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json"))
            model.applyQuantization(try config.resolve(for: lenetSpec))
            _ = try model.calibrate(on: [x])
            return model
        }
        let kept = try quantizedLeNet()
        kept.releasesReadOutputs = false
        let released = try quantizedLeNet()
        XCTAssertEqual(twoSteps(released, x, labels), twoSteps(kept, x, labels))
    }

    /// Between forward and backward, resnet-tiny holds less: at least the outputs of its BN layers
    /// and of its add, which no pullback reads (ReLU's keeps its own output, add's keeps nothing).
    func testReleasingLowersTheBytesHeldForBackward() throws {
        let batch = 32
        let (x, labels) = try images(batch)
        func bytesHeld(_ model: Model) -> Int {
            let before = liveHeapBytes()
            let tape = Tape()
            let logits = model.forward(x, training: true, tape: tape)
            let (loss, _) = softmaxCrossEntropy(logits, labels: labels, tape: tape)
            let held = liveHeapBytes() - before
            tape.backward(from: loss)
            return held
        }
        let kept = try Model(spec: resnetSpec, seed: 5)
        kept.releasesReadOutputs = false
        let released = try Model(spec: resnetSpec, seed: 5)
        // Unfused, so every BN output the list below names is a tensor of its own.
        (kept.fusesReLU, released.fusesReLU) = (false, false)
        _ = (bytesHeld(kept), bytesHeld(released))   // first steps allocate the gradients of the parameters
        let (keptBytes, releasedBytes) = (bytesHeld(kept), bytesHeld(released))

        let unread = ["stem_bn", "block1_bn1", "block1_bn2", "block1_add", "bn2"].map { name in
            batch * 4 * released.graph.outputShapes[released.graph.index(of: name)!].reduce(1, *)
        }.reduce(0, +)
        XCTAssertGreaterThan(unread, 1 << 20)
        XCTAssertLessThanOrEqual(releasedBytes, keptBytes - unread * 9 / 10, "kept \(keptBytes) B, released \(releasedBytes) B")
    }

    func testReleasedVariableKeepsItsShapeAndTakesGradients() {
        let v = Variable(Tensor(shape: [2, 3], repeating: 1), requiresGrad: true)
        v.releaseValue()
        XCTAssertTrue(v.isValueReleased)
        XCTAssertEqual(v.shape, [2, 3])
        v.withGradient(overwritingFresh: { g, overwrite in
            XCTAssertTrue(overwrite)
            for i in 0..<g.count { g[i] = Float(i) }
        })
        XCTAssertEqual(v.grad, Tensor(shape: [2, 3], storage: [0, 1, 2, 3, 4, 5]))
    }

    /// ReLU, ReLU6 and clip keep a one-byte mask instead of y (or x) once the model releases it
    /// and nothing else keeps it: the gradients are the same bits, NaN, ±0 and the bounds included.
    func testMaskedPullbacksGiveTheSameGradients() {
        let special: [Float] = [.nan, 0, -0, 6, -3, 3, 1e-30, -1e-30, 5.999, 6.001, .infinity, -.infinity]
        var rng = SeededGenerator(seed: 17)
        let values = special + (0..<500).map { _ in rng.nextUnitFloat() * 20 - 10 }
        let upstream = (0..<values.count).map { i in i % 7 == 0 ? -0.0 : Float(i % 13) - 6.5 }
        let ops: [(name: String, op: (Variable, Tape) -> Variable, releasesInput: Bool)] = [
            ("relu", { relu($0, tape: $1) }, false),
            ("relu6", { relu6($0, tape: $1) }, false),
            ("clip", { clip($0, min: -3, max: 3, tape: $1) }, true),
        ]
        for (name, op, releasesInput) in ops {
            func gradient(release: Bool) -> [UInt32] {
                // h = 1·x makes the op's input an intermediate value, as a layer output is.
                let x = Variable(Tensor(shape: [values.count], storage: values), requiresGrad: true)
                let tape = Tape()
                let h = multiply(x, Variable(Tensor(shape: [1], storage: [1])), tape: tape)
                let y = op(h, tape)
                if release { (releasesInput ? h : y).releaseValue() }
                y.grad = Tensor(shape: y.shape, storage: upstream)
                tape.backward(from: Variable(.scalar(0)))
                return h.grad!.storage.map(\.bitPattern)
            }
            XCTAssertEqual(gradient(release: true), gradient(release: false), name)
        }
    }

    /// Observers read each output when it is made, so they still see every layer's value.
    func testObserversSeeEveryOutputBeforeItIsReleased() throws {
        let (x, _) = try images(4)
        let model = try Model(spec: resnetSpec, seed: 5)
        var seen: [Int: Tensor] = [:]
        _ = model.forward(x, training: false, tape: nil) { index, output in seen[index] = output.value }
        XCTAssertEqual(seen.count, model.layers.count)
        for (index, value) in seen { XCTAssertEqual(value.shape, [4] + model.graph.outputShapes[index]) }
    }
}
