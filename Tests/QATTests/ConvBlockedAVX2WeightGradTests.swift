import XCTest
import QAT

/// The AVX2 weight gradient for K ≤ 3 (CKernels/conv_blocked_weight_grad_avx2.h): 8 output
/// channels a vector, gy block-major, images outside and a group of (block, input channel) units
/// inside. Each accumulator adds the same products in the same order as the avx2_8 instance, so
/// with ≤ 8 output channels dW is bit-identical to the instances' path; above 8 that path runs 16
/// lanes in another order, and dW agrees up to rounding. Checked on odd shapes against a Double
/// reference, by finite differences and across thread counts. Runs only where AVX2 is available.
final class ConvBlockedAVX2WeightGradTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.forceBlockedInstructionSet(0)
        ConvKernels.forceBlockedLanes(0)
        ConvKernels.enableBlockedAVX2WeightGradient(true)
    }

    private typealias Shape = BlockedConvShape

    /// Output planes 1×1 … 28×28 (rows of 1, 2, 3, 4, 5, 7 pixels and more: every row-block mix;
    /// 2-pixel rows in pairs, an odd count of them too),
    /// stride 1 and 2, padding 0 and 1, K 2 and 3, O and C odd or past a block (9, 13, 20, 37:
    /// partial 8-lane blocks, unit groups of 32 crossed), batch 1, 3, 5 and 17 (2×2 planes pass 16
    /// images at a time).
    private let shapes: [Shape] = [
        Shape(x: [1, 1, 1, 1], outputs: 1, kernel: 3, stride: 1, padding: 1),     // 1×1
        Shape(x: [17, 5, 2, 2], outputs: 7, kernel: 3, stride: 1, padding: 1),    // 2×2, batch 17
        Shape(x: [17, 9, 2, 2], outputs: 13, kernel: 3, stride: 1, padding: 1),   // 2×2, O > 8
        Shape(x: [3, 7, 3, 3], outputs: 9, kernel: 3, stride: 1, padding: 1),     // 3×3
        Shape(x: [3, 9, 5, 2], outputs: 10, kernel: 3, stride: 1, padding: 1),    // 5×2: row pairs, one row left
        Shape(x: [5, 4, 3, 1], outputs: 6, kernel: 2, stride: 1, padding: 1),     // 4×2, K 2
        Shape(x: [5, 37, 4, 4], outputs: 20, kernel: 3, stride: 1, padding: 1),   // 4×4, 111 units
        Shape(x: [3, 3, 5, 5], outputs: 8, kernel: 3, stride: 1, padding: 1),     // rows of 5
        Shape(x: [3, 6, 7, 7], outputs: 13, kernel: 3, stride: 1, padding: 1),    // rows of 7
        Shape(x: [3, 4, 9, 11], outputs: 5, kernel: 3, stride: 1, padding: 0),    // 7×9, no padding
        Shape(x: [1, 8, 28, 28], outputs: 9, kernel: 3, stride: 1, padding: 1),   // 28×28
        Shape(x: [3, 5, 9, 7], outputs: 11, kernel: 2, stride: 1, padding: 1),    // K 2
        Shape(x: [3, 7, 9, 13], outputs: 3, kernel: 3, stride: 2, padding: 1),    // stride 2, rows of 7
        Shape(x: [5, 11, 4, 4], outputs: 20, kernel: 3, stride: 2, padding: 1),   // stride 2, 2×2
        Shape(x: [3, 16, 15, 15], outputs: 9, kernel: 3, stride: 2, padding: 1),  // stride 2, 8×8
        Shape(x: [3, 6, 11, 10], outputs: 8, kernel: 3, stride: 2, padding: 0),   // stride 2, no padding
        Shape(x: [3, 4, 10, 9], outputs: 12, kernel: 2, stride: 2, padding: 1),   // K 2 stride 2
    ]

    private var available: Bool { blockedInstructionSets.contains(1) }

    /// y, dx, dW, db of one forward and backward (upstream gradient r) through conv2d.
    private func convRun(_ s: Shape, seed: UInt64) -> [[Float]] {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable(s.x, &rng)
        let w = randomVariable([s.outputs, s.x[1], s.kernel, s.kernel], bound: 0.3, &rng)
        let b = randomVariable([s.outputs], &rng)
        let tape = Tape()
        let y = conv2d(x, weight: w, bias: b, stride: s.stride, padding: s.padding, tape: tape)
        let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        return [y.value.storage, x.grad!.storage, w.grad!.storage, b.grad!.storage, x.value.storage, r]
    }

    /// dW in Double with naive loops from the run's x and r (none of the kernels' code).
    private func referenceWeightGradient(_ s: Shape, x: [Float], r: [Float]) -> [Double] {
        let g = s.geometry
        let (N, C, H, W, O, K) = (g.batch, g.channels, g.height, g.width, g.outputChannels, g.kernel)
        let (oh, ow) = (g.outputHeight, g.outputWidth)
        var dw = [Double](repeating: 0, count: O * C * K * K)
        for n in 0..<N { for o in 0..<O { for i in 0..<oh { for j in 0..<ow {
            let gy = Double(r[((n * O + o) * oh + i) * ow + j])
            for c in 0..<C { for kh in 0..<K { for kw in 0..<K {
                let h = i * g.stride - g.padding + kh, v = j * g.stride - g.padding + kw
                guard h >= 0 && h < H && v >= 0 && v < W else { continue }
                dw[((o * C + c) * K + kh) * K + kw] += gy * Double(x[((n * C + c) * H + h) * W + v])
            } } }
        } } } }
        return dw
    }

    private func assertClose(_ p: [Float], _ q: [Double], _ label: String) {
        XCTAssertEqual(p.count, q.count, label)
        let scale = max(1, q.map { abs($0) }.max() ?? 1)
        for i in 0..<min(p.count, q.count) where abs(Double(p[i]) - q[i]) > 1e-5 * scale {
            XCTFail("\(label) dW[\(i)]: \(p[i]) vs \(q[i])")
            break
        }
    }

    func testShapesTakeBlockedPath() {
        for s in shapes {
            let g = s.geometry
            XCTAssertTrue(g.blockedSupported && !g.directSupported && !g.c16Supported, "\(s)")
        }
    }

    /// Against the instances' AVX2 weight gradient: y, dx, db bit-identical (untouched passes), dW
    /// bit-identical for O ≤ 8 (same sums in the same order) and within rounding above; dW also
    /// against the Double reference.
    func testMatchesInstancesAndReference() throws {
        try XCTSkipUnless(available, "no AVX2 blocked path")
        ConvKernels.forceBlockedInstructionSet(1)
        for (index, s) in shapes.enumerated() {
            let seed = UInt64(700 + index)
            ConvKernels.enableBlockedAVX2WeightGradient(false)
            let old = convRun(s, seed: seed)
            ConvKernels.enableBlockedAVX2WeightGradient(true)
            let new = convRun(s, seed: seed)
            XCTAssertEqual(new[0], old[0], "\(s) y")
            XCTAssertEqual(new[1], old[1], "\(s) dx")
            XCTAssertEqual(new[3], old[3], "\(s) db")
            if s.outputs <= 8 { XCTAssertEqual(new[2], old[2], "\(s) dW") }
            assertClose(new[2], old[2].map(Double.init), "\(s) vs instances")
            assertClose(new[2], referenceWeightGradient(s, x: new[4], r: new[5]), "\(s) vs Double")
        }
    }

    /// Finite-difference gradient checks on each ISA (AVX2 takes the new weight gradient).
    func testGradients() {
        let checked = [Shape(x: [2, 3, 5, 4], outputs: 9, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [3, 2, 2, 2], outputs: 5, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [1, 3, 7, 6], outputs: 10, kernel: 3, stride: 2, padding: 1),
                       Shape(x: [2, 2, 5, 5], outputs: 3, kernel: 2, stride: 1, padding: 0)]
        checkBlockedConvGradients(checked, label: "AVX2 weight gradient", seedBase: 720)
    }

    /// Batch 19 split over 1 and 2 threads: bit-identical (units split, each sums every image).
    func testIdenticalAcrossThreads() throws {
        try XCTSkipUnless(available, "no AVX2 blocked path")
        ConvKernels.forceBlockedInstructionSet(1)
        let threaded = [Shape(x: [19, 37, 2, 2], outputs: 13, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [19, 9, 14, 13], outputs: 20, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [19, 5, 11, 9], outputs: 16, kernel: 3, stride: 2, padding: 1)]
        for s in threaded {
            Parallel.threads = 1
            let single = convRun(s, seed: 740)
            Parallel.threads = 2
            let double = convRun(s, seed: 740)
            XCTAssertEqual(single, double, "\(s)")
        }
    }
}
