import XCTest
import QAT

/// The blocked direct conv kernels (Conv2DBlocked.swift): finite-difference gradient checks on
/// odd shapes, agreement with the im2col + sgemm path and between AVX2 and AVX-512, identical
/// results at 1 and 2 threads, and LeNet-5's layers left on their own kernels.
final class ConvBlockedTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.directEnabled = true
        ConvKernels.blockedEnabled = true
        ConvKernels.forceBlockedInstructionSet(0)
    }

    /// The instruction sets this CPU can run the blocked kernels on (empty: not x86 or no AVX2).
    private var instructionSets: [Int] { blockedInstructionSets }

    private func geometry(_ x: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int) -> ConvGeometry {
        ConvGeometry(batch: x[0], channels: x[1], height: x[2], width: x[3],
                     outputChannels: outputs, kernel: kernel, stride: stride, padding: padding)
    }

    /// Odd shapes: odd H and W, O and C not multiples of 16 (and above), stride 2, 1×1 outputs,
    /// kernels 2, 3, 5.
    private let oddShapes: [(x: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int)] = [
        ([2, 3, 5, 7], 5, 3, 1, 1),
        ([1, 17, 3, 5], 18, 3, 2, 1),   // C and O above 16, not multiples of it
        ([1, 2, 6, 5], 3, 3, 2, 1),
        ([2, 2, 3, 3], 3, 3, 2, 0),     // 1×1 output
        ([2, 3, 1, 1], 4, 3, 1, 1),     // 1×1 input and output
        ([1, 2, 6, 6], 3, 5, 1, 2),
        ([1, 2, 5, 6], 3, 2, 2, 1),
    ]

    /// Finite-difference gradient check of conv2d through the blocked kernels, on each ISA.
    func testGradientsOnOddShapes() {
        let shapes = oddShapes.map {
            BlockedConvShape(x: $0.x, outputs: $0.outputs, kernel: $0.kernel, stride: $0.stride, padding: $0.padding)
        }
        checkBlockedConvGradients(shapes, label: "blocked conv2d", seedBase: 300)
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

    private func assertClose(_ a: [[Float]], _ b: [[Float]], _ label: String) {
        for (part, (p, q)) in zip(["y", "dx", "dW", "db"], zip(a, b)) {
            XCTAssertEqual(p.count, q.count, "\(label) \(part)")
            let scale = q.map { abs($0) }.max() ?? 1
            for i in 0..<p.count where abs(p[i] - q[i]) > 1e-5 * max(1, scale) {
                XCTFail("\(label) \(part)[\(i)]: \(p[i]) vs \(q[i])")
                break
            }
        }
    }

    /// Larger odd shapes (several 16-channel blocks, rows longer than a register block): the
    /// blocked kernels on each ISA agree with im2col + sgemm up to float rounding.
    func testMatchesGemmPath() {
        let shapes: [(x: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int)] = [
            ([3, 21, 15, 13], 37, 3, 1, 1), ([2, 40, 11, 9], 24, 3, 2, 1), ([2, 8, 29, 29], 8, 3, 1, 1),
            ([2, 3, 17, 12], 10, 7, 2, 3),
        ]
        for (index, s) in shapes.enumerated() {
            let seed = UInt64(320 + index)
            ConvKernels.blockedEnabled = false
            let gemm = convRun(s.x, outputs: s.outputs, kernel: s.kernel, stride: s.stride, padding: s.padding, seed: seed)
            ConvKernels.blockedEnabled = true
            for isa in instructionSets {
                ConvKernels.forceBlockedInstructionSet(isa)
                let blocked = convRun(s.x, outputs: s.outputs, kernel: s.kernel, stride: s.stride,
                                      padding: s.padding, seed: seed)
                assertClose(blocked, gemm, "isa \(isa) \(s)")
            }
        }
    }

    /// Batch 9 split over 1 and 2 threads: bit-identical results on both ISAs.
    func testIdenticalAcrossThreads() {
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for (shape, outputs, stride) in [([9, 19, 10, 11], 21, 1), ([9, 16, 14, 14], 32, 2)] {
                Parallel.threads = 1
                let single = convRun(shape, outputs: outputs, kernel: 3, stride: stride, padding: 1, seed: 330)
                Parallel.threads = 2
                let double = convRun(shape, outputs: outputs, kernel: 3, stride: stride, padding: 1, seed: 330)
                XCTAssertEqual(single, double, "isa \(isa) \(shape) stride \(stride)")
            }
        }
    }

    /// 1×1 convs stay on im2col + sgemm.
    func testOneByOneNotBlocked() {
        XCTAssertFalse(geometry([2, 6, 5, 5], outputs: 7, kernel: 1, stride: 2, padding: 0).blockedSupported)
        XCTAssertFalse(geometry([2, 6, 5, 5], outputs: 7, kernel: 1, stride: 1, padding: 0).blockedSupported)
    }

    /// LeNet-5's convs keep their kernels: the blocked switch changes none of their bits.
    func testLeNetLayersUnchanged() {
        for (shape, outputs, padding) in [([8, 1, 28, 28], 6, 2), ([8, 6, 14, 14], 16, 0)] {
            ConvKernels.blockedEnabled = true
            let with = convRun(shape, outputs: outputs, kernel: 5, stride: 1, padding: padding, seed: 340)
            ConvKernels.blockedEnabled = false
            let without = convRun(shape, outputs: outputs, kernel: 5, stride: 1, padding: padding, seed: 340)
            XCTAssertEqual(with, without, "LeNet conv \(shape)")
        }
    }
}
