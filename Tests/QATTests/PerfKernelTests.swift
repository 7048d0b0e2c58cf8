import XCTest
import QAT

/// The fast paths added for speed (direct convolution, blocked gemm convolution, 2×2 max pool,
/// the thread pool): checked against the Double references and for identical results at 1 and
/// 2 threads, on shapes the small Op* tests do not reach (wide rows, many image blocks).
final class PerfKernelTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.directEnabled = true
    }

    private func geometry(_ x: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int) -> ConvGeometry {
        ConvGeometry(batch: x[0], channels: x[1], height: x[2], width: x[3],
                     outputChannels: outputs, kernel: kernel, stride: stride, padding: padding)
    }

    /// Gradient-checks conv2d on a shape the direct kernel takes (stride 1, output ≥ 16 wide).
    private func checkDirect(_ xShape: [Int], outputs: Int, kernel: Int, padding: Int, inputGradient: Bool,
                             seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let g = geometry(xShape, outputs: outputs, kernel: kernel, stride: 1, padding: padding)
        guard g.directSupported else { return }   // no AVX2: the gemm path, tested elsewhere
        var rng = SeededGenerator(seed: seed)
        let wShape = [outputs, xShape[1], kernel, kernel]
        let x = randomVariable(xShape, requiresGrad: inputGradient, &rng)
        let w = randomVariable(wShape, bound: 0.5, &rng)
        let b = randomVariable([outputs], &rng)
        let outShape = [xShape[0], outputs, g.outputHeight, g.outputWidth]
        checkOp("direct conv2d \(xShape) o\(outputs) k\(kernel) p\(padding)",
                inputs: [OpInput("x", x), OpInput("weight", w), OpInput("bias", b)], outputShape: outShape,
                reference: { v in
                    conv2dReference(x: v[0], xShape: xShape, w: v[1], wShape: wShape, b: v[2],
                                    stride: 1, padding: padding)
                },
                forward: { tape in conv2d(x, weight: w, bias: b, stride: 1, padding: padding, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    func testDirectConvLeNetConv1Shape() {
        checkDirect([1, 1, 28, 28], outputs: 6, kernel: 5, padding: 2, inputGradient: false, seed: 201)
    }

    /// Two input channels, 4 outputs (a 3 + 1 channel block), 18 columns (one masked vector).
    func testDirectConvOddShapeWithInputGradient() {
        checkDirect([2, 2, 5, 18], outputs: 4, kernel: 3, padding: 1, inputGradient: true, seed: 202)
    }

    /// 40 output columns: two 32-column blocks; 5 outputs (3 + 2); no padding.
    func testDirectConvTwoColumnBlocks() {
        checkDirect([1, 1, 6, 44], outputs: 5, kernel: 5, padding: 0, inputGradient: true, seed: 203)
    }

    /// Gradient-checks conv2d on shapes the 16-output-channel direct kernel takes (stride 1, no padding).
    private func checkC16(_ xShape: [Int], outputs: Int, kernel: Int, seed: UInt64,
                          file: StaticString = #filePath, line: UInt = #line) {
        let g = geometry(xShape, outputs: outputs, kernel: kernel, stride: 1, padding: 0)
        guard g.c16Supported && !g.directSupported else { return }   // no AVX2: the gemm path
        var rng = SeededGenerator(seed: seed)
        let wShape = [outputs, xShape[1], kernel, kernel]
        let x = randomVariable(xShape, &rng)
        let w = randomVariable(wShape, bound: 0.5, &rng)
        let b = randomVariable([outputs], &rng)
        let outShape = [xShape[0], outputs, g.outputHeight, g.outputWidth]
        checkOp("c16 conv2d \(xShape) o\(outputs) k\(kernel)",
                inputs: [OpInput("x", x), OpInput("weight", w), OpInput("bias", b)], outputShape: outShape,
                reference: { v in
                    conv2dReference(x: v[0], xShape: xShape, w: v[1], wShape: wShape, b: v[2],
                                    stride: 1, padding: 0)
                },
                forward: { tape in conv2d(x, weight: w, bias: b, stride: 1, padding: 0, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    /// 7 output columns (one 5-pixel block and two single pixels), 16 outputs, two images.
    func testC16ConvOddWidth() {
        checkC16([2, 3, 6, 9], outputs: 16, kernel: 3, seed: 211)
    }

    /// 32 outputs (two channel blocks), kernel 5 as in LeNet's conv2, 10 columns.
    func testC16ConvTwoChannelBlocks() {
        checkC16([1, 2, 7, 14], outputs: 32, kernel: 5, seed: 212)
    }

    /// The 16-channel kernel and the gemm path agree up to float rounding on LeNet's conv2.
    func testC16MatchesGemm() {
        ConvKernels.directEnabled = true
        let direct = convRun([8, 6, 14, 14], outputs: 16, kernel: 5, stride: 1, padding: 0, seed: 213)
        ConvKernels.directEnabled = false
        let gemm = convRun([8, 6, 14, 14], outputs: 16, kernel: 5, stride: 1, padding: 0, seed: 213)
        for (a, b) in zip(direct, gemm) {
            XCTAssertEqual(a.count, b.count)
            let scale = b.map { abs($0) }.max() ?? 1
            for i in 0..<a.count where abs(a[i] - b[i]) > 1e-5 * max(1, scale) {
                XCTFail("c16 \(a[i]) vs gemm \(b[i]) at \(i)")
                break
            }
        }
    }

    /// Runs a conv forward and backward and returns y, dx, dW, db.
    private func convRun(_ xShape: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int,
                         seed: UInt64) -> [[Float]] {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable(xShape, &rng)
        let w = randomVariable([outputs, xShape[1], kernel, kernel], bound: 0.3, &rng)
        let b = randomVariable([outputs], &rng)
        let tape = Tape()
        let y = conv2d(x, weight: w, bias: b, stride: stride, padding: padding, tape: tape)
        let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        return [y.value.storage, x.grad!.storage, w.grad!.storage, b.grad!.storage]
    }

    /// LeNet's conv1 and conv2 at batch 64: 1 and 2 threads give bit-identical results
    /// (gemm blocks and weight-gradient chunks are fixed by the geometry, not the thread count).
    func testLeNetConvsIdenticalAcrossThreads() {
        for direct in [true, false] {
            ConvKernels.directEnabled = direct
            for (shape, outputs, padding) in [([64, 1, 28, 28], 6, 2), ([64, 6, 14, 14], 16, 0)] {
                Parallel.threads = 1
                let single = convRun(shape, outputs: outputs, kernel: 5, stride: 1, padding: padding, seed: 204)
                Parallel.threads = 2
                let double = convRun(shape, outputs: outputs, kernel: 5, stride: 1, padding: padding, seed: 204)
                XCTAssertEqual(single, double, "conv \(shape) direct \(direct)")
            }
        }
    }

    /// The direct kernel and the gemm path agree up to float rounding on LeNet's conv1.
    func testDirectMatchesGemm() {
        ConvKernels.directEnabled = true
        let direct = convRun([8, 1, 28, 28], outputs: 6, kernel: 5, stride: 1, padding: 2, seed: 205)
        ConvKernels.directEnabled = false
        let gemm = convRun([8, 1, 28, 28], outputs: 6, kernel: 5, stride: 1, padding: 2, seed: 205)
        for (a, b) in zip(direct, gemm) {
            XCTAssertEqual(a.count, b.count)
            let scale = b.map { abs($0) }.max() ?? 1
            for i in 0..<a.count where abs(a[i] - b[i]) > 1e-5 * max(1, scale) {
                XCTFail("direct \(a[i]) vs gemm \(b[i]) at \(i)")
                break
            }
        }
    }

    /// The pool runs every index exactly once, also when there are more indices than threads.
    func testPoolRunsEveryIndexOnce() {
        Parallel.threads = 2
        for count in [1, 2, 3, 7, 64] {
            var hits = [Int](repeating: 0, count: count)
            hits.withUnsafeMutableBufferPointer { h in
                Parallel.forEachIndex(count) { i in h[i] += 1 }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: count))
        }
    }
}
