import XCTest
import QAT

/// Naive Double pooling over K×K windows with stride S, no padding; `max` or mean.
func poolReference(_ x: [Double], shape: [Int], kernel: Int, stride: Int, max useMax: Bool) -> [Double] {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
    let oh = (h - kernel) / stride + 1, ow = (w - kernel) / stride + 1
    let yShape = [n, c, oh, ow]
    var y = [Double](repeating: 0, count: n * c * oh * ow)
    for b in 0..<n {
        for ch in 0..<c {
            for i in 0..<oh {
                for j in 0..<ow {
                    var best = -Double.infinity, sum = 0.0
                    for ki in 0..<kernel {
                        for kj in 0..<kernel {
                            let v = x[index4(shape, b, ch, i * stride + ki, j * stride + kj)]
                            best = Swift.max(best, v)
                            sum += v
                        }
                    }
                    y[index4(yShape, b, ch, i, j)] = useMax ? best : sum / Double(kernel * kernel)
                }
            }
        }
    }
    return y
}

final class OpPoolTests: XCTestCase {
    func check(max useMax: Bool, shape: [Int], kernel: Int, stride: Int, seed: UInt64,
               file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        // Max pooling: pairwise-distinct values 0.05 apart, so no window has a tie within ±h.
        let x = Variable(useMax ? distinctValues(shape, &rng) : .uniform(shape, bound: 1, using: &rng),
                         requiresGrad: true)
        let outputShape = [shape[0], shape[1], (shape[2] - kernel) / stride + 1, (shape[3] - kernel) / stride + 1]
        checkOp("\(useMax ? "max" : "avg")Pool2d \(shape) k\(kernel) s\(stride)", inputs: [OpInput("x", x)],
                outputShape: outputShape,
                reference: { v in poolReference(v[0], shape: shape, kernel: kernel, stride: stride, max: useMax) },
                forward: { tape in
                    useMax ? maxPool2d(x, kernel: kernel, stride: stride, tape: tape)
                           : avgPool2d(x, kernel: kernel, stride: stride, tape: tape)
                },
                seed: seed &+ 1, file: file, line: line)
    }

    func testMaxPoolK2S2() { check(max: true, shape: [2, 2, 4, 6], kernel: 2, stride: 2, seed: 31) }
    /// Odd sizes: the last row/column is not covered by any window.
    func testMaxPoolK2S2Uneven() { check(max: true, shape: [1, 3, 5, 7], kernel: 2, stride: 2, seed: 32) }
    /// Overlapping windows: one input can be the maximum of several windows and gets their sum.
    func testMaxPoolK3S1Overlapping() { check(max: true, shape: [2, 1, 5, 4], kernel: 3, stride: 1, seed: 33) }
    func testMaxPoolK3S2() { check(max: true, shape: [1, 2, 7, 5], kernel: 3, stride: 2, seed: 34) }

    func testAvgPoolK2S2() { check(max: false, shape: [2, 2, 4, 6], kernel: 2, stride: 2, seed: 35) }
    func testAvgPoolK2S2Uneven() { check(max: false, shape: [1, 3, 5, 7], kernel: 2, stride: 2, seed: 36) }
    func testAvgPoolK3S1Overlapping() { check(max: false, shape: [2, 1, 5, 4], kernel: 3, stride: 1, seed: 37) }
    func testAvgPoolK2S3Gaps() { check(max: false, shape: [1, 2, 8, 5], kernel: 2, stride: 3, seed: 38) }

    /// 1×1×4×4 input:
    ///      1  5  2  0
    ///      3 −1  7  4
    ///      0  6 −2  8
    ///      9  2  3  1
    static let grid: [Float] = [1, 5, 2, 0,
                                3, -1, 7, 4,
                                0, 6, -2, 8,
                                9, 2, 3, 1]

    func testMaxPoolHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 4, 4], storage: Self.grid), requiresGrad: true)
        let tape = Tape()
        let y = maxPool2d(x, kernel: 2, stride: 2, tape: tape)
        XCTAssertEqual(y.shape, [1, 1, 2, 2])
        // max(1,5,3,−1) = 5, max(2,0,7,4) = 7, max(0,6,9,2) = 9, max(−2,8,3,1) = 8
        XCTAssertEqual(y.value.storage, [5, 7, 9, 8])
        // The gradient goes to the arg-max of each window only: 5 at (0,1), 7 at (1,2), 9 at (3,0), 8 at (2,3).
        tape.backward(from: weightedSum(y, weights: [10, 20, 30, 40], tape: tape))
        XCTAssertEqual(x.grad?.storage, [0, 10, 0, 0,
                                         0, 0, 20, 0,
                                         0, 0, 0, 40,
                                         30, 0, 0, 0])

        // Overlapping 3×3 windows, stride 1 → 2×2:
        // rows 0–2 × cols 0–2 → 7; rows 0–2 × cols 1–3 → 8; rows 1–3 × cols 0–2 → 9; rows 1–3 × cols 1–3 → 8
        let z = maxPool2d(Variable(Tensor(shape: [1, 1, 4, 4], storage: Self.grid)), kernel: 3, stride: 1, tape: nil)
        XCTAssertEqual(z.value.storage, [7, 8, 9, 8])
    }

    func testAvgPoolHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 4, 4], storage: Self.grid), requiresGrad: true)
        let tape = Tape()
        let y = avgPool2d(x, kernel: 2, stride: 2, tape: tape)
        XCTAssertEqual(y.shape, [1, 1, 2, 2])
        XCTAssertEqual(y.value.storage, [
            2,      // (1 + 5 + 3 − 1) / 4 = 8 / 4
            3.25,   // (2 + 0 + 7 + 4) / 4 = 13 / 4
            4.25,   // (0 + 6 + 9 + 2) / 4 = 17 / 4
            2.5,    // (−2 + 8 + 3 + 1) / 4 = 10 / 4
        ])
        // Each input gets a quarter of its window's output gradient.
        tape.backward(from: weightedSum(y, weights: [4, 8, 12, 16], tape: tape))
        XCTAssertEqual(x.grad?.storage, [1, 1, 2, 2,
                                         1, 1, 2, 2,
                                         3, 3, 4, 4,
                                         3, 3, 4, 4])

        // 3×3 windows, stride 1: (1+5+2+3−1+7+0+6−2)/9 = 21/9, (5+2+0−1+7+4+6−2+8)/9 = 29/9,
        // (3−1+7+0+6−2+9+2+3)/9 = 27/9 = 3, (−1+7+4+6−2+8+2+3+1)/9 = 28/9
        let z = avgPool2d(Variable(Tensor(shape: [1, 1, 4, 4], storage: Self.grid)), kernel: 3, stride: 1, tape: nil)
        assertClose(z.value.storage, [21.0 / 9, 29.0 / 9, 3, 28.0 / 9], tolerance: 1e-6, "avgPool 3×3")
    }
}
