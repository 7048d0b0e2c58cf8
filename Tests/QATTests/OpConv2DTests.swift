import XCTest
import QAT

/// Naive Double conv2d (cross-correlation, zero padding), x [N, C, H, W], w [O, C, K, K], b [O].
func conv2dReference(x: [Double], xShape: [Int], w: [Double], wShape: [Int], b: [Double]?,
                     stride: Int, padding: Int) -> [Double] {
    let (n, c, h, wd) = (xShape[0], xShape[1], xShape[2], xShape[3])
    let (o, k) = (wShape[0], wShape[2])
    let oh = (h + 2 * padding - k) / stride + 1
    let ow = (wd + 2 * padding - k) / stride + 1
    let yShape = [n, o, oh, ow]
    var y = [Double](repeating: 0, count: n * o * oh * ow)
    for b0 in 0..<n {
        for oc in 0..<o {
            for i in 0..<oh {
                for j in 0..<ow {
                    var sum = b?[oc] ?? 0
                    for ic in 0..<c {
                        for ki in 0..<k {
                            let row = i * stride - padding + ki
                            if row < 0 || row >= h { continue }
                            for kj in 0..<k {
                                let col = j * stride - padding + kj
                                if col < 0 || col >= wd { continue }
                                sum += x[index4(xShape, b0, ic, row, col)] * w[index4(wShape, oc, ic, ki, kj)]
                            }
                        }
                    }
                    y[index4(yShape, b0, oc, i, j)] = sum
                }
            }
        }
    }
    return y
}

final class OpConv2DTests: XCTestCase {
    struct Case {
        var batch, channels, height, width, outputs, kernel, stride, padding: Int
        var bias = true
        var inputGradient = true
        var weightGradient = true
        var outputShape: [Int] {
            [batch, outputs, (height + 2 * padding - kernel) / stride + 1, (width + 2 * padding - kernel) / stride + 1]
        }
    }

    func check(_ t: Case, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let xShape = [t.batch, t.channels, t.height, t.width]
        let wShape = [t.outputs, t.channels, t.kernel, t.kernel]
        let x = randomVariable(xShape, requiresGrad: t.inputGradient, &rng)
        let w = randomVariable(wShape, bound: 0.5, requiresGrad: t.weightGradient, &rng)
        let b: Variable? = t.bias ? randomVariable([t.outputs], &rng) : nil
        var inputs = [OpInput("x", x), OpInput("weight", w)]
        if let b { inputs.append(OpInput("bias", b)) }
        checkOp("conv2d \(t)", inputs: inputs, outputShape: t.outputShape,
                reference: { v in
                    conv2dReference(x: v[0], xShape: xShape, w: v[1], wShape: wShape,
                                    b: t.bias ? v[2] : nil, stride: t.stride, padding: t.padding)
                },
                forward: { tape in conv2d(x, weight: w, bias: b, stride: t.stride, padding: t.padding, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    func testStride1NoPaddingBatch2() {
        check(Case(batch: 2, channels: 3, height: 5, width: 4, outputs: 2, kernel: 3, stride: 1, padding: 0), seed: 11)
    }

    func testStride2Padding1NonSquare() {
        // Ho = (6 + 2 − 3) / 2 + 1 = 3, Wo = (7 + 2 − 3) / 2 + 1 = 4
        check(Case(batch: 1, channels: 2, height: 6, width: 7, outputs: 3, kernel: 3, stride: 2, padding: 1), seed: 12)
    }

    func testPadding2NoBias() {
        // Padding larger than half the kernel: whole output rows see only padding on one side.
        check(Case(batch: 2, channels: 1, height: 4, width: 5, outputs: 2, kernel: 2, stride: 1, padding: 2, bias: false),
              seed: 13)
    }

    func testStride2Padding2UnevenBatch2() {
        // (7 + 4 − 3) / 2 + 1 = 5 and (5 + 4 − 3) / 2 + 1 = 4; the last input column is skipped by the stride.
        check(Case(batch: 2, channels: 2, height: 7, width: 5, outputs: 3, kernel: 3, stride: 2, padding: 2), seed: 14)
    }

    func testImageSmallerThanKernelTaps() {
        // Images smaller than the kernel: some kernel rows fall wholly above or below the image for
        // every output row (col2im's row range for them must be empty).
        check(Case(batch: 2, channels: 2, height: 2, width: 2, outputs: 2, kernel: 5, stride: 1, padding: 3), seed: 16)
        check(Case(batch: 1, channels: 1, height: 2, width: 3, outputs: 2, kernel: 5, stride: 2, padding: 3), seed: 17)
        // Stride 2, padding 2: the last kernel row sits below a 2-row image for every output row.
        check(Case(batch: 2, channels: 2, height: 2, width: 3, outputs: 2, kernel: 5, stride: 2, padding: 2), seed: 18)
    }

    func testKernel1Stride2() {
        check(Case(batch: 2, channels: 3, height: 5, width: 4, outputs: 2, kernel: 1, stride: 2, padding: 0), seed: 15)
    }

    func testInputGradientOff() {
        // x.requiresGrad == false: weight and bias gradients still exact, x.grad stays nil (checked by checkOp).
        check(Case(batch: 2, channels: 2, height: 5, width: 6, outputs: 2, kernel: 3, stride: 2, padding: 1,
                   inputGradient: false), seed: 16)
    }

    func testWeightGradientOff() {
        check(Case(batch: 1, channels: 2, height: 4, width: 4, outputs: 2, kernel: 3, stride: 1, padding: 1,
                   bias: false, weightGradient: false), seed: 17)
    }

    /// 1×1×3×3 input, 2×2 kernel, bias 1, stride 1, no padding:
    ///     x = 1 2 3      w = 1 2
    ///         4 5 6          3 4
    ///         7 8 9
    func testHandComputedForward() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: [1, 2, 3, 4, 5, 6, 7, 8, 9]))
        let w = Variable(Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4]))
        let b = Variable(Tensor(shape: [1], storage: [1]))
        let y = conv2d(x, weight: w, bias: b, tape: nil)
        XCTAssertEqual(y.shape, [1, 1, 2, 2])
        // (0,0): 1·1 + 2·2 + 4·3 + 5·4 + 1 = 1 + 4 + 12 + 20 + 1 = 38
        // (0,1): 2·1 + 3·2 + 5·3 + 6·4 + 1 = 2 + 6 + 15 + 24 + 1 = 48
        // (1,0): 4·1 + 5·2 + 7·3 + 8·4 + 1 = 4 + 10 + 21 + 32 + 1 = 68
        // (1,1): 5·1 + 6·2 + 8·3 + 9·4 + 1 = 5 + 12 + 24 + 36 + 1 = 78
        XCTAssertEqual(y.value.storage, [38, 48, 68, 78])
    }

    /// The same x and w with padding 1 and stride 2, no bias: Ho = Wo = (3 + 2 − 2) / 2 + 1 = 2.
    /// Window (i, j) covers input rows 2i−1 … 2i and columns 2j−1 … 2j; row/column −1 is padding.
    func testHandComputedForwardPaddingStride() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: [1, 2, 3, 4, 5, 6, 7, 8, 9]))
        let w = Variable(Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4]))
        let y = conv2d(x, weight: w, bias: nil, stride: 2, padding: 1, tape: nil)
        XCTAssertEqual(y.shape, [1, 1, 2, 2])
        XCTAssertEqual(y.value.storage, [
            4,    // (0,0): only x[0,0] = 1 under w[1,1] = 4            → 4
            18,   // (0,1): x[0,1] = 2 · w[1,0] = 3, x[0,2] = 3 · w[1,1] = 4 → 6 + 12 = 18
            36,   // (1,0): x[1,0] = 4 · w[0,1] = 2, x[2,0] = 7 · w[1,1] = 4 → 8 + 28 = 36
            77,   // (1,1): 5·1 + 6·2 + 8·3 + 9·4 = 5 + 12 + 24 + 36 = 77
        ])
    }

    /// Hand-computed backward of the 3×3 / 2×2 case with dL/dy = 1 everywhere:
    /// dW[a,b] = Σ over the 2×2 outputs of x under w[a,b]; dx = how many windows see each pixel, weighted.
    func testHandComputedBackward() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: [1, 2, 3, 4, 5, 6, 7, 8, 9]), requiresGrad: true)
        let w = Variable(Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4]), requiresGrad: true)
        let b = Variable(Tensor(shape: [1], storage: [1]), requiresGrad: true)
        let tape = Tape()
        let y = conv2d(x, weight: w, bias: b, tape: tape)
        tape.backward(from: weightedSum(y, weights: [1, 1, 1, 1], tape: tape))
        // dW[0,0] = 1+2+4+5 = 12, dW[0,1] = 2+3+5+6 = 16, dW[1,0] = 4+5+7+8 = 24, dW[1,1] = 5+6+8+9 = 28
        XCTAssertEqual(w.grad?.storage, [12, 16, 24, 28])
        XCTAssertEqual(b.grad?.storage, [4])
        // dx = full correlation of ones(2×2) with w: corners get one weight, edges two, the centre all four.
        //   [w00,        w01 + w00,              w01,
        //    w10 + w00,  w00 + w01 + w10 + w11,  w11 + w01,
        //    w10,        w11 + w10,              w11]
        XCTAssertEqual(x.grad?.storage, [1, 3, 2,
                                         4, 10, 6,
                                         3, 7, 4])
    }

    /// Our own loops split over channels when Parallel.threads > 1; results must not change.
    func testThreadsGiveIdenticalResults() {
        func run() -> [[Float]] {
            var rng = SeededGenerator(seed: 99)
            let x = randomVariable([2, 3, 6, 5], &rng)
            let w = randomVariable([4, 3, 3, 3], &rng)
            let b = randomVariable([4], &rng)
            let tape = Tape()
            let y = conv2d(x, weight: w, bias: b, stride: 2, padding: 1, tape: tape)
            let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }
            tape.backward(from: weightedSum(y, weights: r, tape: tape))
            return [y.value.storage, x.grad!.storage, w.grad!.storage, b.grad!.storage]
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let single = run()
        Parallel.threads = 2
        let double = run()
        XCTAssertEqual(single, double)
    }
}
