import XCTest
import QAT

/// The tape itself: accumulation into shared variables, emptying after backward, and no recording
/// when there is no tape or nothing needs a gradient.
final class OpTapeTests: XCTestCase {
    /// x feeds both relu and add: dL/dx = r·(1[x > 0] + 1), the sum of both paths.
    func testVariableUsedByTwoOpsAccumulates() {
        var rng = SeededGenerator(seed: 81)
        let x = Variable(awayFromZero([2, 4], gap: 0.1, &rng), requiresGrad: true)
        let r: [Float] = (0..<8).map { _ in rng.nextUnitFloat() * 2 - 1 }
        let tape = Tape()
        let y = add(relu(x, tape: tape), x, tape: tape)
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        let expected = (0..<8).map { Double(r[$0]) * (x.value.storage[$0] > 0 ? 2 : 1) }
        assertClose(x.grad!.storage, expected, tolerance: 1e-7, "two paths")

        // The same check through the generic checker (central differences of the Double reference).
        checkOp("add(relu(x), x)", inputs: [OpInput("x", x)], outputShape: [2, 4],
                reference: { v in v[0].map { max($0, 0) + $0 } },
                forward: { tape in add(relu(x, tape: tape), x, tape: tape) }, seed: 82)
    }

    /// Gradients accumulate across backward passes until zeroGradient() clears them.
    func testGradientsAccumulateAcrossBackwardPasses() {
        var rng = SeededGenerator(seed: 83)
        let w = randomVariable([3, 2], &rng)
        let x = randomVariable([4, 2], requiresGrad: false, &rng)
        let r: [Float] = (0..<12).map { _ in rng.nextUnitFloat() - 0.5 }
        func step() {
            let tape = Tape()
            let y = linear(x, weight: w, bias: nil, tape: tape)
            tape.backward(from: weightedSum(y, weights: r, tape: tape))
        }
        step()
        let once = w.grad!.storage
        XCTAssertTrue(once.contains { $0 != 0 })
        step()
        for i in 0..<once.count { XCTAssertEqual(w.grad!.storage[i], 2 * once[i], accuracy: 1e-6) }
        w.zeroGradient()
        XCTAssertEqual(w.grad?.storage, [Float](repeating: 0, count: 6))
        step()
        XCTAssertEqual(w.grad!.storage, once)
    }

    func testBackwardEmptiesTape() {
        var rng = SeededGenerator(seed: 84)
        let x = randomVariable([2, 3], &rng)
        let w = randomVariable([2, 3], &rng)
        let tape = Tape()
        let h = linear(x, weight: w, bias: nil, tape: tape)
        let y = relu(h, tape: tape)
        XCTAssertEqual(tape.count, 2)
        let loss = weightedSum(y, weights: [1, 1, 1, 1], tape: tape)
        XCTAssertEqual(tape.count, 3)
        tape.backward(from: loss)
        XCTAssertEqual(tape.count, 0)
        XCTAssertEqual(loss.grad?.storage, [1])   // the seed

        // A second backward on the same tape replays only what was recorded since.
        let gx = x.grad!.storage
        let z = flatten(x, tape: tape)
        XCTAssertEqual(tape.count, 1)
        tape.backward(from: weightedSum(z, weights: [Float](repeating: 0, count: 6), tape: tape))
        XCTAssertEqual(tape.count, 0)
        XCTAssertEqual(x.grad!.storage, gx)   // zero weights added nothing; linear/relu did not run again
    }

    /// Every op once with tape == nil (nothing recorded, output needs no gradient) and once with a tape
    /// but constant inputs (nothing recorded), and once with a tape and gradients (one pullback each).
    func testOpsRecordOnlyWhenNeeded() {
        var rng = SeededGenerator(seed: 85)
        func all(_ requiresGrad: Bool, _ tape: Tape?) -> [Variable] {
            let image = randomVariable([2, 2, 4, 4], requiresGrad: requiresGrad, &rng)
            let convW = randomVariable([3, 2, 3, 3], requiresGrad: requiresGrad, &rng)
            let convB = randomVariable([3], requiresGrad: requiresGrad, &rng)
            let gamma = randomVariable([2], requiresGrad: requiresGrad, &rng)
            let beta = randomVariable([2], requiresGrad: requiresGrad, &rng)
            let flat = randomVariable([2, 32], requiresGrad: requiresGrad, &rng)
            let linW = randomVariable([5, 32], requiresGrad: requiresGrad, &rng)
            let logits = randomVariable([2, 5], requiresGrad: requiresGrad, &rng)
            return [
                conv2d(image, weight: convW, bias: convB, stride: 1, padding: 1, tape: tape),
                linear(flat, weight: linW, bias: nil, tape: tape),
                maxPool2d(image, kernel: 2, stride: 2, tape: tape),
                avgPool2d(image, kernel: 2, stride: 2, tape: tape),
                batchNorm2d(image, gamma: gamma, beta: beta, statistics: BatchNormStatistics(channels: 2),
                            training: true, tape: tape),
                batchNorm2d(image, gamma: gamma, beta: beta, statistics: BatchNormStatistics(channels: 2),
                            training: false, tape: tape),
                relu(image, tape: tape),
                add(image, image, tape: tape),
                flatten(image, tape: tape),
                softmaxCrossEntropy(logits, labels: [0, 1], tape: tape).loss,
            ]
        }
        // No tape: inference. Nothing needs a gradient even though the inputs do.
        for (k, out) in all(true, nil).enumerated() { XCTAssertFalse(out.requiresGrad, "op \(k) without tape") }
        // A tape, but only constants in: nothing recorded.
        let idle = Tape()
        for (k, out) in all(false, idle).enumerated() { XCTAssertFalse(out.requiresGrad, "op \(k) on constants") }
        XCTAssertEqual(idle.count, 0)
        // A tape and trainable inputs: exactly one pullback per op.
        let busy = Tape()
        let outs = all(true, busy)
        XCTAssertEqual(busy.count, outs.count)
        for (k, out) in outs.enumerated() { XCTAssertTrue(out.requiresGrad, "op \(k) with tape") }
    }
}
