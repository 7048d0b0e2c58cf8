import XCTest
import QAT

/// ReLU6, y = min(max(x, 0), 6): gradient-checked against a Double reference away from the two
/// kinks, and pinned by hand at the kinks (PyTorch's hardtanh backward) and at NaN.
final class OpReLU6Tests: XCTestCase {
    /// Values in [−9, 9] at least `gap` away from both kinks, 0 and 6.
    func awayFromKinks(_ shape: [Int], gap: Float, _ rng: inout SeededGenerator) -> Tensor {
        var t = Tensor(shape: shape)
        for i in 0..<t.count {
            var v: Float
            repeat { v = rng.nextUnitFloat() * 18 - 9 } while abs(v) < gap || abs(v - 6) < gap
            t.storage[i] = v
        }
        return t
    }

    func testReLU6() {
        var rng = SeededGenerator(seed: 71)
        let shape = [2, 3, 3, 3]
        let x = Variable(awayFromKinks(shape, gap: 0.05, &rng), requiresGrad: true)
        let values = x.value.storage
        XCTAssertTrue(values.contains { $0 < 0 } && values.contains { $0 > 0 && $0 < 6 } && values.contains { $0 > 6 },
                      "all three pieces are exercised")
        checkOp("relu6", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { min(max($0, 0), 6) } },
                forward: { tape in relu6(x, tape: tape) }, seed: 72)
    }

    /// At exactly 0 and 6 the gradient is 0, as in PyTorch (hardtanh_backward passes g only where
    /// 0 < x < 6); NaN passes through the forward and gets gradient 0, as in relu.
    func testKinksAndNaN() {
        let x = Variable(Tensor(shape: [8], storage: [0, 6, -0.0, 3, .nan, 7, -1, 5.999]), requiresGrad: true)
        let tape = Tape()
        let y = relu6(x, tape: tape)
        XCTAssertEqual(Array(y.value.storage[0..<4]), [0, 6, 0, 3])
        XCTAssertEqual(y.value.storage[2].sign, .minus, "−0 stays −0")
        XCTAssertTrue(y.value.storage[4].isNaN, "NaN passes through")
        XCTAssertEqual(Array(y.value.storage[5...]), [6, 0, 5.999])
        tape.backward(from: weightedSum(y, weights: [Float](repeating: 2, count: 8), tape: tape))
        XCTAssertEqual(x.grad?.storage, [0, 0, 0, 2, 0, 0, 0, 2])
    }

    /// Composition: relu6 between two linear layers, both sides of the clip active.
    func testLinearThenReLU6ThenLinear() {
        var rng = SeededGenerator(seed: 73)
        let x = randomVariable([3, 4], bound: 4, &rng)
        let w = randomVariable([5, 4], bound: 2, &rng)
        let result = checkOp("linear → relu6", inputs: [OpInput("x", x), OpInput("weight", w)], outputShape: [3, 5],
                             reference: { v in linearReference(x: v[0], w: v[1], b: nil, n: 3, i: 4, o: 5).map { min(max($0, 0), 6) } },
                             forward: { tape in relu6(linear(x, weight: w, bias: nil, tape: tape), tape: tape) }, seed: 74)
        let outputs = result.output.value.storage
        XCTAssertTrue(outputs.contains(0) && outputs.contains(6) && outputs.contains { $0 > 0 && $0 < 6 }, "\(outputs)")
    }
}
