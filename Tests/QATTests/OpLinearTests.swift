import XCTest
import QAT

/// Naive Double linear: x [N, I], w [O, I], b [O] → y [N, O] = x·wᵀ + b.
func linearReference(x: [Double], w: [Double], b: [Double]?, n: Int, i: Int, o: Int) -> [Double] {
    var y = [Double](repeating: 0, count: n * o)
    for r in 0..<n {
        for c in 0..<o {
            var sum = b?[c] ?? 0
            for k in 0..<i { sum += x[r * i + k] * w[c * i + k] }
            y[r * o + c] = sum
        }
    }
    return y
}

final class OpLinearTests: XCTestCase {
    func check(n: Int, i: Int, o: Int, bias: Bool, inputGradient: Bool = true, seed: UInt64,
               file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable([n, i], requiresGrad: inputGradient, &rng)
        let w = randomVariable([o, i], &rng)
        let b: Variable? = bias ? randomVariable([o], &rng) : nil
        var inputs = [OpInput("x", x), OpInput("weight", w)]
        if let b { inputs.append(OpInput("bias", b)) }
        checkOp("linear \(n)×\(i)→\(o)", inputs: inputs, outputShape: [n, o],
                reference: { v in linearReference(x: v[0], w: v[1], b: bias ? v[2] : nil, n: n, i: i, o: o) },
                forward: { tape in linear(x, weight: w, bias: b, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    func testWithBias() { check(n: 3, i: 5, o: 4, bias: true, seed: 21) }
    func testWithoutBias() { check(n: 2, i: 7, o: 3, bias: false, seed: 22) }
    func testSingleRow() { check(n: 1, i: 4, o: 6, bias: true, seed: 23) }
    func testInputGradientOff() { check(n: 4, i: 3, o: 2, bias: true, inputGradient: false, seed: 24) }

    func testHandComputedForward() {
        // x = [1 2; 3 4], W = [1 0; −1 2; 0.5 0.5], b = [0, 1, −1]
        let x = Variable(Tensor(shape: [2, 2], storage: [1, 2, 3, 4]))
        let w = Variable(Tensor(shape: [3, 2], storage: [1, 0, -1, 2, 0.5, 0.5]))
        let b = Variable(Tensor(shape: [3], storage: [0, 1, -1]))
        let y = linear(x, weight: w, bias: b, tape: nil)
        XCTAssertEqual(y.shape, [2, 3])
        // row 0: 1·1 + 2·0 + 0 = 1, −1 + 4 + 1 = 4, 0.5 + 1 − 1 = 0.5
        // row 1: 3 + 0 + 0 = 3, −3 + 8 + 1 = 6, 1.5 + 2 − 1 = 2.5
        XCTAssertEqual(y.value.storage, [1, 4, 0.5, 3, 6, 2.5])
    }
}
