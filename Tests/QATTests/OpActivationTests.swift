import XCTest
import QAT

/// Values uniform in [−bound, bound) that keep at least `gap` away from every kink, so central
/// differences never straddle one.
private func avoiding(_ kinks: [Float], gap: Float, shape: [Int], bound: Float, _ rng: inout SeededGenerator) -> Tensor {
    var t = Tensor(shape: shape)
    for i in 0..<t.count {
        var v: Float
        repeat { v = (rng.nextUnitFloat() * 2 - 1) * bound } while kinks.contains { abs(v - $0) < gap }
        t.storage[i] = v
    }
    return t
}

/// y and dL/dx for L = Σ y (upstream gradient 1 everywhere), on a fresh tape.
private func valueAndGradient(_ values: [Float], _ op: (Variable, Tape) -> Variable) -> ([Float], [Float]) {
    let x = Variable(Tensor(shape: [values.count], storage: values), requiresGrad: true)
    let tape = Tape()
    let y = op(x, tape)
    tape.backward(from: weightedSum(y, weights: [Float](repeating: 1, count: values.count), tape: tape))
    return (y.value.storage, x.grad!.storage)
}

/// clip, leaky ReLU, sigmoid, hard sigmoid, hard swish: gradient checks away from the kinks,
/// hand-computed values and gradients at the kinks (PyTorch's conventions), NaN passing through.
final class OpActivationTests: XCTestCase {
    func testClip() {
        var rng = SeededGenerator(seed: 301)
        let shape = [2, 3, 2, 3]
        let x = Variable(avoiding([-0.5, 0.7], gap: 0.02, shape: shape, bound: 1.2, &rng), requiresGrad: true)
        checkOp("clip", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { min(max($0, -0.5), 0.7) } },
                forward: { tape in clip(x, min: -0.5, max: 0.7, tape: tape) }, seed: 302)
    }

    /// The bounds themselves pass the gradient (PyTorch's clamp: min ≤ x ≤ max); NaN stays NaN, gets 0.
    func testClipAtItsBounds() {
        let (y, g) = valueAndGradient([-1, -0.5, 0, 0.7, 1, .nan]) { clip($0, min: -0.5, max: 0.7, tape: $1) }
        XCTAssertEqual(Array(y[0..<5]), [-0.5, -0.5, 0, 0.7, 0.7])
        XCTAssertTrue(y[5].isNaN)
        XCTAssertEqual(g, [0, 1, 1, 1, 0, 0])
    }

    /// min > max: every value becomes max (numpy's clip), and no gradient passes.
    func testClipWithCrossedBounds() {
        let (y, g) = valueAndGradient([-1, 0.5, 2]) { clip($0, min: 1, max: 0, tape: $1) }
        XCTAssertEqual(y, [0, 0, 0])
        XCTAssertEqual(g, [0, 0, 0])
    }

    func testLeakyReLU() {
        var rng = SeededGenerator(seed: 303)
        let shape = [3, 7]
        let x = Variable(awayFromZero(shape, gap: 0.05, &rng), requiresGrad: true)
        checkOp("leakyReLU", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { $0 > 0 ? $0 : 0.1 * $0 } },
                forward: { tape in leakyReLU(x, negativeSlope: 0.1, tape: tape) }, seed: 304)
    }

    /// At x = 0 the gradient is the negative slope (PyTorch: g where x > 0, slope · g elsewhere).
    func testLeakyReLUAtZero() {
        let (y, g) = valueAndGradient([-2, 0, 3, .nan]) { leakyReLU($0, negativeSlope: 0.25, tape: $1) }
        XCTAssertEqual(Array(y[0..<3]), [-0.5, 0, 3])
        XCTAssertTrue(y[3].isNaN)
        XCTAssertEqual(g, [0.25, 0.25, 1, 0.25])
    }

    func testSigmoid() {
        var rng = SeededGenerator(seed: 305)
        let shape = [2, 2, 3, 3]
        let x = randomVariable(shape, bound: 5, &rng)
        checkOp("sigmoid", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { 1 / (1 + Foundation.exp(-$0)) } },
                forward: { tape in sigmoid(x, tape: tape) }, seed: 306)
    }

    func testSigmoidHandComputed() {
        let (y, g) = valueAndGradient([0, -200, 200, .nan]) { sigmoid($0, tape: $1) }
        XCTAssertEqual(Array(y[0..<3]), [0.5, 0, 1])
        XCTAssertTrue(y[3].isNaN)
        XCTAssertEqual(Array(g[0..<3]), [0.25, 0, 0])
    }

    func testHardSigmoid() {
        var rng = SeededGenerator(seed: 307)
        let shape = [4, 6]
        // alpha 0.2, beta 0.5: kinks at x = −2.5 and 2.5.
        let x = Variable(avoiding([-2.5, 2.5], gap: 0.02, shape: shape, bound: 4, &rng), requiresGrad: true)
        checkOp("hardSigmoid", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { min(max(0.2 * $0 + 0.5, 0), 1) } },
                forward: { tape in hardSigmoid(x, alpha: 0.2, beta: 0.5, tape: tape) }, seed: 308)
    }

    /// At both bounds the gradient is 0 (PyTorch's hardsigmoid: g / 6 only where −3 < x < 3).
    func testHardSigmoidAtItsBounds() {
        let (y, g) = valueAndGradient([-3, -2.5, 0, 2.5, 3, .nan]) { hardSigmoid($0, alpha: 0.2, beta: 0.5, tape: $1) }
        XCTAssertEqual(Array(y[0..<5]), [0, 0, 0.5, 1, 1])
        XCTAssertTrue(y[5].isNaN)
        XCTAssertEqual(g, [0, 0, 0.2, 0, 0, 0])
    }

    func testHardSwish() {
        var rng = SeededGenerator(seed: 309)
        let shape = [2, 3, 4]
        let x = Variable(avoiding([-3, 3], gap: 0.02, shape: shape, bound: 5, &rng), requiresGrad: true)
        checkOp("hardSwish", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { $0 * min(max($0 + 3, 0), 6) / 6 } },
                forward: { tape in hardSwish(x, tape: tape) }, seed: 310)
    }

    /// PyTorch's hardswish backward: 0 below −3, g·(x/3 + 1/2) on [−3, 3] (−g/2 at −3, 3g/2 at 3), g above.
    func testHardSwishAtItsKinks() {
        let (y, g) = valueAndGradient([-4, -3, 0, 1.5, 3, 4, .nan]) { hardSwish($0, tape: $1) }
        XCTAssertEqual(Array(y[0..<6]), [0, 0, 0, 1.125, 3, 4])
        XCTAssertTrue(y[6].isNaN)
        XCTAssertEqual(Array(g[0..<6]), [0, -0.5, 0.5, 1, 1.5, 1])
    }

    /// No gradient asked for: nothing recorded.
    func testInferenceRecordsNothing() {
        let x = Variable(Tensor(shape: [3], storage: [-1, 0, 1]))
        let tape = Tape()
        for y in [clip(x, min: 0, max: 1, tape: tape), leakyReLU(x, negativeSlope: 0.1, tape: tape),
                  sigmoid(x, tape: tape), hardSigmoid(x, alpha: 0.2, beta: 0.5, tape: tape), hardSwish(x, tape: tape)] {
            XCTAssertFalse(y.requiresGrad)
        }
        XCTAssertEqual(tape.count, 0)
    }
}
