import Foundation
import XCTest
import QAT

/// Naive Double mean softmax cross-entropy (log-sum-exp without shifting: inputs are small).
func softmaxCrossEntropyReference(_ z: [Double], labels: [Int32], classes k: Int) -> Double {
    let n = labels.count
    var total = 0.0
    for r in 0..<n {
        var sum = 0.0
        for j in 0..<k { sum += exp(z[r * k + j]) }
        total += log(sum) - z[r * k + Int(labels[r])]
    }
    return total / Double(n)
}

final class OpSoftmaxCrossEntropyTests: XCTestCase {
    func check(n: Int, k: Int, scale: Float, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let logits = randomVariable([n, k], bound: scale, &rng)
        let labels = (0..<n).map { _ in Int32(rng.next() % UInt64(k)) }
        var correctLabels = 0
        let result = checkOp("softmaxCrossEntropy \(n)×\(k)", inputs: [OpInput("logits", logits)], outputShape: [],
                             reference: { v in [softmaxCrossEntropyReference(v[0], labels: labels, classes: k)] },
                             forward: { tape in
                                 let (loss, correct) = softmaxCrossEntropy(logits, labels: labels, tape: tape)
                                 correctLabels = correct
                                 return loss
                             }, seed: seed &+ 1, file: file, line: line)
        XCTAssertEqual(result.output.value.count, 1)
        // `correct` = rows whose label is the arg-max (no ties in random data).
        var expected = 0
        for r in 0..<n {
            let row = Array(logits.value.storage[(r * k)..<(r * k + k)])
            if row.firstIndex(of: row.max()!)! == Int(labels[r]) { expected += 1 }
        }
        XCTAssertEqual(correctLabels, expected, file: file, line: line)
    }

    func testGradients() { check(n: 4, k: 5, scale: 3, seed: 71) }
    func testGradientsLargeLogits() { check(n: 3, k: 4, scale: 20, seed: 72) }   // needs the max shift
    func testGradientsSingleRow() { check(n: 1, k: 3, scale: 2, seed: 73) }

    /// Many rows with a label that is usually the arg-max: the count is neither 0 nor n.
    func testCorrectCount() {
        var rng = SeededGenerator(seed: 74)
        let (n, k) = (20, 4)
        var z = Tensor.uniform([n, k], bound: 1, using: &rng)
        var labels: [Int32] = []
        for r in 0..<n {
            let label = Int(rng.next() % UInt64(k))
            labels.append(Int32(label))
            if r % 3 != 0 { z.storage[r * k + label] += 3 }   // rows 1, 2, 4, 5, … are right for sure
        }
        let (_, correct) = softmaxCrossEntropy(Variable(z), labels: labels, tape: nil)
        var expected = 0
        for r in 0..<n {
            let row = Array(z.storage[(r * k)..<(r * k + k)])
            if row.firstIndex(of: row.max()!)! == Int(labels[r]) { expected += 1 }
        }
        XCTAssertEqual(correct, expected)
        XCTAssertGreaterThanOrEqual(correct, 13)   // the 13 boosted rows
        XCTAssertLessThan(correct, n)
    }

    /// logits = [1 2 3; 0 ln2 ln5], labels = [2, 0].
    /// row 0: −log(e³ / (e¹ + e² + e³)) = log(1 + e⁻¹ + e⁻²) = log(1 + 0.3678794412 + 0.1353352832)
    ///        = log(1.5032147244) = 0.4076059644      (arg-max 2 = label: correct)
    /// row 1: −log(1 / (1 + 2 + 5)) = log 8 = 2.0794415417   (arg-max 2 ≠ label 0: wrong)
    /// mean = (0.4076059644 + 2.0794415417) / 2 = 1.2435237531
    func testHandComputed() {
        let logits = Variable(Tensor(shape: [2, 3], storage: [1, 2, 3, 0, Float(log(2.0)), Float(log(5.0))]),
                              requiresGrad: true)
        let tape = Tape()
        let (loss, correct) = softmaxCrossEntropy(logits, labels: [2, 0], tape: tape)
        XCTAssertEqual(Double(loss.value.storage[0]), 1.2435237531, accuracy: 1e-6)
        XCTAssertEqual(correct, 1)
        tape.backward(from: loss)
        // d/dz = (softmax − onehot) / 2:
        // row 0: softmax = [e¹, e², e³] / (e¹ + e² + e³) = [0.0900305732, 0.2447284711, 0.6652409558]
        //        → [0.0450152866, 0.1223642355, (0.6652409558 − 1)/2 = −0.1673795221]
        // row 1: softmax = [1, 2, 5] / 8 → [(1/8 − 1)/2, (2/8)/2, (5/8)/2] = [−0.4375, 0.125, 0.3125]
        assertClose(logits.grad?.storage ?? [],
                    [0.0450152866, 0.1223642355, -0.1673795221, -0.4375, 0.125, 0.3125],
                    tolerance: 1e-6, "d loss / d logits")
    }
}
