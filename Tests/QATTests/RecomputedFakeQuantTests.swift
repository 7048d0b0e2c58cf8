import Foundation
import XCTest
@testable import QATCore
@testable import QATModel
@testable import QATONNX
@testable import QATData
import QAT

/// A fake quantizer's output is not kept from forward to backward: the ops that read it again
/// (1×1, depthwise and grouped convs, linear) keep the quantizer's recipe (`SavedValue`) and
/// recompute it from the quantizer's input, which its own pullback keeps anyway. The same bits
/// as keeping it (`SavedValue.recomputesOutputs = false`, the old storage), less memory.
final class RecomputedFakeQuantTests: XCTestCase {
    override func tearDown() {
        SavedValue.recomputesOutputs = true
        super.tearDown()
    }

    /// An op reading a fake-quantized input: (x̂, weight, bias, tape) → y.
    typealias Consumer = (Variable, Variable, Variable, Tape) -> Variable

    /// ULQ (learnable bounds) then `consumer`, one backward: y and every gradient as bit
    /// patterns, and whether the consumer's saved input was the recipe.
    private func run(x: Tensor, weightShape: [Int], consumer: Consumer, recomputing: Bool) -> (bits: [[UInt32]], recomputed: Bool) {
        SavedValue.recomputesOutputs = recomputing
        defer { SavedValue.recomputesOutputs = true }
        var rng = SeededGenerator(seed: 23)
        let input = Variable(x, requiresGrad: true)
        let weight = randomVariable(weightShape, bound: 0.5, &rng)
        let bias = randomVariable([weightShape[0]], &rng)
        let state = ActivationQuantizerState(fixedMin: false)
        state.setClipRange(max: 1.3, min: -0.9)   // x spans [-1.5, 1.5): elements above, below and inside
        let tape = Tape()
        let quantized = ulqFakeQuantize(input, state: state, tape: tape)
        let recomputed = quantized.recomputation != nil && SavedValue.recomputesOutputs
        let y = consumer(quantized, weight, bias, tape)
        quantized.releaseValue()   // as the layers do once their op has run
        let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() * 2 - 1 }
        let output = y.value.storage.map(\.bitPattern)
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        let gradients = [input.grad, weight.grad, bias.grad, state.clipMax.grad, state.clipMin.grad].map { $0!.storage.map(\.bitPattern) }
        return ([output] + gradients, recomputed)
    }

    private static let consumers: [(name: String, x: [Int], weight: [Int], op: Consumer)] = [
        ("pointwise conv", [3, 5, 7, 3], [6, 5, 1, 1], { conv2d($0, weight: $1, bias: $2, tape: $3) }),
        ("pointwise conv, 1×1 planes", [5, 33, 1, 1], [4, 33, 1, 1], { conv2d($0, weight: $1, bias: $2, tape: $3) }),
        ("depthwise conv", [2, 5, 9, 7], [5, 1, 3, 3], {
            conv2d($0, weight: $1, bias: $2, stride: Size2D(2), padding: Padding2D(1), dilation: Size2D(1), groups: 5, tape: $3)
        }),
        ("grouped conv", [2, 4, 6, 5], [6, 2, 3, 3], {
            conv2d($0, weight: $1, bias: $2, stride: Size2D(1), padding: Padding2D(1), dilation: Size2D(1), groups: 2, tape: $3)
        }),
        ("linear", [5, 13], [7, 13], { linear($0, weight: $1, bias: $2, tape: $3) }),
        // Keeps its own padded copy: the released quantized copy is simply gone.
        ("blocked 3×3 conv", [2, 5, 8, 9], [7, 5, 3, 3], { conv2d($0, weight: $1, bias: $2, stride: 1, padding: 1, tape: $3) }),
    ]

    func testRecomputedInputGivesTheSameValuesAndGradients() {
        for (index, consumer) in Self.consumers.enumerated() {
            var rng = SeededGenerator(seed: 70 + UInt64(index))
            let x = Tensor.uniform(consumer.x, bound: 1.5, using: &rng)
            let kept = run(x: x, weightShape: consumer.weight, consumer: consumer.op, recomputing: false)
            let recomputed = run(x: x, weightShape: consumer.weight, consumer: consumer.op, recomputing: true)
            XCTAssertFalse(kept.recomputed, consumer.name)
            XCTAssertTrue(recomputed.recomputed, consumer.name)
            XCTAssertEqual(recomputed.bits, kept.bits, consumer.name)
        }
    }

    /// The recipe gives x̂ exactly as the forward did, for every tie rule and narrow range.
    func testRecipeRecomputesTheForwardsBits() {
        var rng = SeededGenerator(seed: 5)
        // Ties on the grid (k + 0.5 steps) and values outside the bounds.
        let values = (0..<1000).map { i in i % 3 == 0 ? (Float(i % 40) - 20.5) * 0.0625 : rng.nextUnitFloat() * 4 - 2 }
        for mode in [RoundMode.halfEven, .halfUp, .halfDown, .stdRound] {
            for narrowRange in [false, true] {
                let state = ActivationQuantizerState(fixedMin: false, roundMode: mode, narrowRange: narrowRange)
                state.setClipRange(max: 1.0, min: -1.0)
                let x = Variable(Tensor(shape: [10, 100], storage: values), requiresGrad: true)
                let y = ulqFakeQuantize(x, state: state, tape: Tape())
                let saved = y.savedForPullback()
                XCTAssertTrue(saved.isRecomputed)
                y.releaseValue()
                XCTAssertEqual(saved.tensor().storage.map(\.bitPattern), Tensor(shape: [10, 100], storage: values).storage.map {
                    var copy = [$0]
                    state.grid.fakeQuantize(&copy)
                    return copy[0].bitPattern
                }, "\(mode) narrow \(narrowRange)")
            }
        }
    }

    /// No tape, or a reader on the old storage: the value itself is kept, and the release drops the recipe.
    func testRecipeOnlyWhenRecording() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 1, clipMin: -1)
        let x = Variable(Tensor(shape: [4], storage: [0.3, -2, 2, 0.1]), requiresGrad: true)
        XCTAssertNil(ulqFakeQuantize(x, state: state, tape: nil).recomputation)
        let y = ulqFakeQuantize(x, state: state, tape: Tape())
        XCTAssertNotNil(y.recomputation)
        SavedValue.recomputesOutputs = false
        XCTAssertFalse(y.savedForPullback().isRecomputed)
        SavedValue.recomputesOutputs = true
        y.releaseValue()
        XCTAssertNil(y.recomputation)
    }

    /// Finite differences of the weight and bias gradients, whose backward reads the recomputed
    /// input (x needs a gradient, so the quantizer records its pullback and leaves the recipe;
    /// the bounds are frozen and x is not perturbed: the rounding makes x̂ piecewise constant).
    func testGradientCheckThroughTheRecomputedInput() {
        for (index, consumer) in Self.consumers.enumerated() where consumer.name != "blocked 3×3 conv" {
            var rng = SeededGenerator(seed: 90 + UInt64(index))
            let state = ActivationQuantizerState(fixedMin: false, clipMax: 1.3, clipMin: -0.9)
            state.clipMax.requiresGrad = false
            state.clipMin.requiresGrad = false
            let x = randomVariable(consumer.x, bound: 1.5, &rng)
            let weight = randomVariable(consumer.weight, bound: 0.5, &rng)
            let bias = randomVariable([consumer.weight[0]], &rng)
            var quantizedX = x.value.storage
            QuantizationGrid(bits: 8, clipMax: 1.3, clipMin: -0.9).fakeQuantize(&quantizedX)
            let xq = quantizedX.map(Double.init)
            checkOp("\(consumer.name) on a recomputed x̂", inputs: [OpInput("weight", weight), OpInput("bias", bias)],
                    outputShape: outputShape(consumer.name, consumer.x, consumer.weight),
                    reference: { v in reference(consumer.name, xq, consumer.x, v[0], consumer.weight, v[1]) },
                    forward: { tape in
                        let quantized = ulqFakeQuantize(x, state: state, tape: tape)
                        XCTAssertTrue(quantized.savedForPullback().isRecomputed)
                        let y = consumer.op(quantized, weight, bias, tape)
                        quantized.releaseValue()
                        return y
                    },
                    seed: 100 + UInt64(index))
        }
    }

    private func outputShape(_ name: String, _ x: [Int], _ w: [Int]) -> [Int] {
        switch name {
        case "linear": [x[0], w[0]]
        case "depthwise conv": [x[0], w[0], (x[2] + 2 - 3) / 2 + 1, (x[3] + 2 - 3) / 2 + 1]
        case "grouped conv": [x[0], w[0], x[2], x[3]]
        default: [x[0], w[0], x[2], x[3]]   // 1×1
        }
    }

    private func reference(_ name: String, _ x: [Double], _ xShape: [Int], _ w: [Double], _ wShape: [Int], _ b: [Double]) -> [Double] {
        switch name {
        case "linear":
            return linearReference(x: x, w: w, b: b, n: xShape[0], i: xShape[1], o: wShape[0])
        case "depthwise conv":
            return groupedConvReference(x: x, xShape: xShape, w: w, wShape: wShape, b: b, stride: (2, 2),
                                        pads: (1, 1, 1, 1), dilation: (1, 1), groups: 5).values
        case "grouped conv":
            return groupedConvReference(x: x, xShape: xShape, w: w, wShape: wShape, b: b, stride: (1, 1),
                                        pads: (1, 1, 1, 1), dilation: (1, 1), groups: 2).values
        default:
            return conv2dReference(x: x, xShape: xShape, w: w, wShape: wShape, b: b, stride: 1, padding: 0)
        }
    }

    // MARK: - mobilenetv2-tiny, QAT with learnable bounds

    private func quantizedMobileNet(_ x: Tensor) throws -> Model {
        let imported = try ImportedModel.load(onnxFile: repositoryPath("examples/onnx-models/mobilenetv2-tiny.onnx"))
        let spec = imported.spec
        let model = try Model(spec: spec, seed: 1)
        let json = createDefaultConfig(for: spec).replacingOccurrences(of: "\"learn_clip\": false", with: "\"learn_clip\": true")
        let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json"))
        model.applyQuantization(try config.resolve(for: spec))
        _ = try model.calibrate(on: [x])
        return model
    }

    /// Logits, loss and every parameter's gradient of two SGD steps, as bit patterns, and the
    /// heap bytes held between the second forward and its backward.
    private func twoSteps(_ model: Model, _ x: Tensor, _ labels: [Int32], recomputing: Bool) -> (bits: [[UInt32]], held: Int) {
        SavedValue.recomputesOutputs = recomputing
        defer { SavedValue.recomputesOutputs = true }
        var bits: [[UInt32]] = [], held = 0
        for _ in 0..<2 {
            for p in model.parameters { p.variable.zeroGradient() }
            let before = Runtime.heapBytesInUse
            let tape = Tape()
            let logits = model.forward(x, training: true, tape: tape)
            let (loss, _) = softmaxCrossEntropy(logits, labels: labels, tape: tape)
            held = Runtime.heapBytesInUse - before
            bits.append(logits.value.storage.map(\.bitPattern))
            bits.append(loss.value.storage.map(\.bitPattern))
            tape.backward(from: loss)
            for p in model.parameters {
                bits.append(p.variable.grad!.storage.map(\.bitPattern))
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    for i in 0..<w.count { w[i] -= 0.05 * p.variable.grad!.storage[i] }
                }
            }
        }
        return (bits, held)
    }

    func testMobileNetV2TinyQATStepsAreTheSameBitsAndHoldLess() throws {
        let count = 8
        let batch = try fashionMNIST(.train, count: count).batch(Array(0..<count)[...])
        let kept = try quantizedMobileNet(batch.images)
        let recomputed = try quantizedMobileNet(batch.images)
        let old = twoSteps(kept, batch.images, batch.labels, recomputing: false)
        let new = twoSteps(recomputed, batch.images, batch.labels, recomputing: true)
        XCTAssertEqual(new.bits, old.bits)

        // Each quantized input of a 1×1 or depthwise conv or of the classifier was a float tensor
        // kept from forward to backward; now it is recomputed there.
        var recomputedBytes = 0
        for (i, layer) in recomputed.layers.enumerated() {
            guard let weighted = layer as? WeightedLayer, (weighted.quantizer as? FakeQuantizer)?.quantizesInput == true else { continue }
            if let conv = layer as? Conv2DLayer {
                let a = conv.convolution
                let pointwise = a.kernel == Size2D(1) && a.stride == Size2D(1) && a.padding == Padding2D(0) && a.groups == 1
                guard pointwise || a.groups > 1 else { continue }
            }
            let source = recomputed.graph.sources[i][0]
            let shape = source < 0 ? recomputed.spec.inputShape : recomputed.graph.outputShapes[source]
            recomputedBytes += 4 * count * shape.reduce(1, *)
        }
        XCTAssertGreaterThan(recomputedBytes, 1 << 20)
        XCTAssertLessThanOrEqual(new.held, old.held - recomputedBytes * 9 / 10, "kept \(old.held) B, recomputed \(new.held) B")
    }
}
