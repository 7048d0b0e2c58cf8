import XCTest
import QAT

/// ReLU, add and flatten: small ops, each gradient-checked against a Double reference.
final class OpElementwiseTests: XCTestCase {
    func testReLU() {
        var rng = SeededGenerator(seed: 51)
        let shape = [2, 3, 2, 3]
        // |x| ≥ 0.05: no value within h of the kink at 0.
        let x = Variable(awayFromZero(shape, gap: 0.05, &rng), requiresGrad: true)
        XCTAssertTrue(x.value.storage.contains { $0 < 0 } && x.value.storage.contains { $0 > 0 })
        checkOp("relu", inputs: [OpInput("x", x)], outputShape: shape,
                reference: { v in v[0].map { max($0, 0) } },
                forward: { tape in relu(x, tape: tape) }, seed: 52)
    }

    func testReLURank2() {
        var rng = SeededGenerator(seed: 53)
        let x = Variable(awayFromZero([3, 5], gap: 0.05, &rng), requiresGrad: true)
        let result = checkOp("relu 2-D", inputs: [OpInput("x", x)], outputShape: [3, 5],
                             reference: { v in v[0].map { max($0, 0) } },
                             forward: { tape in relu(x, tape: tape) }, seed: 54)
        // Negative inputs get exactly zero gradient (fresh gradient: checkOp pre-fills it).
        x.grad = nil
        let tape = Tape()
        tape.backward(from: weightedSum(relu(x, tape: tape), weights: [Float](repeating: 1, count: 15), tape: tape))
        for i in 0..<x.value.count { XCTAssertEqual(x.grad?.storage[i], x.value.storage[i] > 0 ? 1 : 0) }
        XCTAssertEqual(result.output.value.storage.filter { $0 < 0 }, [])
    }

    func testAdd() {
        var rng = SeededGenerator(seed: 55)
        let a = randomVariable([2, 3, 2, 2], &rng)
        let b = randomVariable([2, 3, 2, 2], &rng)
        checkOp("add", inputs: [OpInput("a", a), OpInput("b", b)], outputShape: [2, 3, 2, 2],
                reference: { v in zip(v[0], v[1]).map { $0 + $1 } },
                forward: { tape in add(a, b, tape: tape) }, seed: 56)
    }

    /// add(a, a): both pullback contributions land in a's gradient, dL/da = 2r.
    func testAddSameVariableTwice() {
        var rng = SeededGenerator(seed: 57)
        let a = randomVariable([3, 4], &rng)
        checkOp("add(a, a)", inputs: [OpInput("a", a)], outputShape: [3, 4],
                reference: { v in v[0].map { 2 * $0 } },
                forward: { tape in add(a, a, tape: tape) }, seed: 58)
    }

    /// Only one side needs a gradient (a residual from data): the other gets none.
    func testAddOneSideConstant() {
        var rng = SeededGenerator(seed: 59)
        let a = randomVariable([2, 5], &rng)
        let b = randomVariable([2, 5], requiresGrad: false, &rng)
        checkOp("add(a, constant)", inputs: [OpInput("a", a), OpInput("b", b)], outputShape: [2, 5],
                reference: { v in zip(v[0], v[1]).map { $0 + $1 } },
                forward: { tape in add(a, b, tape: tape) }, seed: 60)
    }

    func testFlatten() {
        var rng = SeededGenerator(seed: 61)
        let x = randomVariable([2, 3, 2, 2], &rng)
        let result = checkOp("flatten", inputs: [OpInput("x", x)], outputShape: [2, 12],
                             reference: { v in v[0] },
                             forward: { tape in flatten(x, tape: tape) }, seed: 62)
        XCTAssertEqual(result.output.value.storage, x.value.storage)
        XCTAssertEqual(x.grad?.shape, [2, 3, 2, 2])
    }

    func testFlattenThenLinear() {
        // Composition: the flattened gradient flows back through a following op with the right layout.
        var rng = SeededGenerator(seed: 63)
        let x = randomVariable([2, 2, 2, 3], &rng)
        let w = randomVariable([4, 12], &rng)
        checkOp("flatten → linear", inputs: [OpInput("x", x), OpInput("weight", w)], outputShape: [2, 4],
                reference: { v in linearReference(x: v[0], w: v[1], b: nil, n: 2, i: 12, o: 4) },
                forward: { tape in linear(flatten(x, tape: tape), weight: w, bias: nil, tape: tape) }, seed: 64)
    }
}
