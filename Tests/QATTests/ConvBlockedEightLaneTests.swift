import XCTest
import QAT

/// The 8-lane passes of the blocked conv kernels (Conv2DBlocked.swift): a pass whose vectorised
/// channels (forward and weight gradient: output channels, input gradient: input channels) are at
/// most 8 takes 8 channels a vector, and on AVX2 the forward and the input gradient take 8 for any
/// channel count (several 8-lane blocks, the last one partly empty). Checked on odd shapes against a Double reference, against the
/// 16-lane passes, by finite differences, across thread counts, on each instruction set.
final class ConvBlockedEightLaneTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.forceBlockedInstructionSet(0)
        ConvKernels.forceBlockedLanes(0)
    }

    private var instructionSets: [Int] { blockedInstructionSets }

    private typealias Shape = BlockedConvShape

    /// C and O in 1…8 (and one side above 8), 3×3, 5×5 and 2×2, stride 1 and 2, padding 0/1/2,
    /// odd H and W, output planes under 4 pixels, rows of 8 or more pixels (the stride-1 loops that
    /// reuse each input value for a kernel row), batch 1 and 3.
    private let shapes: [Shape] = [
        Shape(x: [1, 1, 3, 3], outputs: 1, kernel: 3, stride: 1, padding: 1),
        Shape(x: [3, 8, 7, 5], outputs: 8, kernel: 3, stride: 1, padding: 1),
        Shape(x: [3, 5, 9, 11], outputs: 7, kernel: 5, stride: 1, padding: 2),
        Shape(x: [3, 4, 1, 3], outputs: 6, kernel: 3, stride: 1, padding: 1),    // 1×3 output
        Shape(x: [1, 3, 1, 1], outputs: 4, kernel: 3, stride: 1, padding: 1),    // 1×1 input and output
        Shape(x: [3, 7, 9, 7], outputs: 3, kernel: 3, stride: 2, padding: 1),
        Shape(x: [1, 6, 11, 13], outputs: 8, kernel: 5, stride: 2, padding: 2),
        Shape(x: [3, 2, 5, 5], outputs: 5, kernel: 5, stride: 2, padding: 0),    // 1×1 output
        Shape(x: [1, 8, 13, 9], outputs: 5, kernel: 3, stride: 2, padding: 0),
        Shape(x: [3, 1, 6, 5], outputs: 8, kernel: 3, stride: 1, padding: 1),
        Shape(x: [3, 8, 15, 15], outputs: 16, kernel: 3, stride: 2, padding: 1),  // forward 16 lanes, input gradient 8
        Shape(x: [3, 12, 9, 7], outputs: 8, kernel: 3, stride: 1, padding: 1),    // forward 8 lanes, input gradient 16
        Shape(x: [1, 8, 28, 28], outputs: 8, kernel: 3, stride: 1, padding: 1),   // resnet-tiny's block convs
        Shape(x: [3, 3, 9, 11], outputs: 5, kernel: 2, stride: 1, padding: 1),    // 2×2, rows of 12
        // Both sides above 8: on AVX2 several 8-lane blocks (forward and input gradient).
        Shape(x: [3, 12, 9, 7], outputs: 20, kernel: 3, stride: 1, padding: 1),
        Shape(x: [2, 17, 8, 8], outputs: 19, kernel: 3, stride: 2, padding: 1),
        Shape(x: [5, 24, 4, 4], outputs: 24, kernel: 3, stride: 1, padding: 1),  // 4×4 planes: image slots
    ]

    /// y, dx, dW, db of one forward and backward (upstream gradient r) in Float through conv2d.
    private func convRun(_ s: Shape, seed: UInt64) -> [[Float]] {
        let (x, w, b, r) = inputs(s, seed: seed)
        let tape = Tape()
        let xv = Variable(x, requiresGrad: true), wv = Variable(w, requiresGrad: true), bv = Variable(b, requiresGrad: true)
        let y = conv2d(xv, weight: wv, bias: bv, stride: s.stride, padding: s.padding, tape: tape)
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        return [y.value.storage, xv.grad!.storage, wv.grad!.storage, bv.grad!.storage]
    }

    private func inputs(_ s: Shape, seed: UInt64) -> (Tensor, Tensor, Tensor, [Float]) {
        var rng = SeededGenerator(seed: seed)
        let x = Tensor.uniform(s.x, bound: 1, using: &rng)
        let w = Tensor.uniform([s.outputs, s.x[1], s.kernel, s.kernel], bound: 0.3, using: &rng)
        let b = Tensor.uniform([s.outputs], bound: 1, using: &rng)
        let g = s.geometry
        let r = (0..<g.batch * s.outputs * g.outputHeight * g.outputWidth).map { _ in rng.nextUnitFloat() - 0.5 }
        return (x, w, b, r)
    }

    /// y, dx, dW, db in Double with naive loops (none of the kernels' code).
    private func reference(_ s: Shape, seed: UInt64) -> [[Double]] {
        let (xt, wt, bt, rf) = inputs(s, seed: seed)
        let x = xt.storage.map(Double.init), w = wt.storage.map(Double.init), r = rf.map(Double.init)
        let g = s.geometry
        let (N, C, H, W, O, K) = (g.batch, g.channels, g.height, g.width, g.outputChannels, g.kernel)
        let (oh, ow) = (g.outputHeight, g.outputWidth)
        var y = [Double](repeating: 0, count: N * O * oh * ow)
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        var db = [Double](repeating: 0, count: O)
        for n in 0..<N {
            for o in 0..<O {
                for i in 0..<oh {
                    for j in 0..<ow {
                        let out = ((n * O + o) * oh + i) * ow + j
                        var sum = Double(bt.storage[o])
                        db[o] += r[out]
                        for c in 0..<C {
                            for kh in 0..<K {
                                let h = i * g.stride - g.padding + kh
                                guard h >= 0 && h < H else { continue }
                                for kw in 0..<K {
                                    let v = j * g.stride - g.padding + kw
                                    guard v >= 0 && v < W else { continue }
                                    let xi = ((n * C + c) * H + h) * W + v, wi = ((o * C + c) * K + kh) * K + kw
                                    sum += x[xi] * w[wi]
                                    dx[xi] += r[out] * w[wi]
                                    dw[wi] += r[out] * x[xi]
                                }
                            }
                        }
                        y[out] = sum
                    }
                }
            }
        }
        return [y, dx, dw, db]
    }

    private func assertClose(_ a: [[Float]], _ b: [[Double]], _ label: String) {
        for (part, (p, q)) in zip(["y", "dx", "dW", "db"], zip(a, b)) {
            XCTAssertEqual(p.count, q.count, "\(label) \(part)")
            let scale = max(1, q.map { abs($0) }.max() ?? 1)
            for i in 0..<min(p.count, q.count) where abs(Double(p[i]) - q[i]) > 1e-5 * scale {
                XCTFail("\(label) \(part)[\(i)]: \(p[i]) vs \(q[i])")
                break
            }
        }
    }

    /// Every shape takes the blocked path (not the direct or 16-output-channel kernels).
    func testShapesTakeBlockedPath() {
        for s in shapes {
            let g = s.geometry
            XCTAssertTrue(g.blockedSupported && !g.directSupported && !g.c16Supported, "\(s)")
        }
    }

    /// The 8-lane passes on each ISA agree with the Double reference up to float rounding.
    func testMatchesDoubleReference() {
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for (index, s) in shapes.enumerated() {
                let seed = UInt64(400 + index)
                assertClose(convRun(s, seed: seed), reference(s, seed: seed), "isa \(isa) \(s)")
            }
        }
    }

    /// Against the 16-lane passes: each output (forward) or input-gradient pixel sums its terms in
    /// the same order whatever the width, so y and dx are bit-identical; on AVX-512 both widths'
    /// weight gradients take all taps per unit in one chain, so dW is too. AVX2's 16-lane weight
    /// gradient splits even and odd pixels (a different order): there dW agrees up to rounding.
    func testMatchesSixteenLanes() {
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for (index, s) in shapes.enumerated() {
                let seed = UInt64(420 + index)
                ConvKernels.forceBlockedLanes(16)
                let wide = convRun(s, seed: seed)
                ConvKernels.forceBlockedLanes(0)
                let narrow = convRun(s, seed: seed)
                XCTAssertEqual(narrow[0], wide[0], "isa \(isa) \(s) y")
                XCTAssertEqual(narrow[1], wide[1], "isa \(isa) \(s) dx")
                XCTAssertEqual(narrow[3], wide[3], "isa \(isa) \(s) db")
                if isa == 2 {
                    XCTAssertEqual(narrow[2], wide[2], "isa \(isa) \(s) dW")
                } else {
                    assertClose([narrow[2]], [wide[2].map(Double.init)], "isa \(isa) \(s) dW")
                }
            }
        }
    }

    /// Finite-difference gradient checks through the 8-lane passes, on each ISA.
    func testGradients() {
        // Small shapes: the check evaluates the Double reference twice per input element.
        let checked = [Shape(x: [1, 8, 5, 3], outputs: 8, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [1, 3, 5, 4], outputs: 7, kernel: 5, stride: 1, padding: 2),
                       Shape(x: [2, 4, 1, 3], outputs: 6, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [1, 6, 7, 7], outputs: 8, kernel: 5, stride: 2, padding: 2),
                       Shape(x: [3, 2, 5, 5], outputs: 5, kernel: 5, stride: 2, padding: 0),
                       Shape(x: [2, 1, 6, 5], outputs: 8, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [1, 10, 5, 3], outputs: 8, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [1, 5, 7, 5], outputs: 16, kernel: 3, stride: 2, padding: 1),
                       Shape(x: [1, 2, 3, 9], outputs: 3, kernel: 3, stride: 1, padding: 1),   // rows of 9: row-reuse loops
                       Shape(x: [1, 11, 5, 4], outputs: 13, kernel: 3, stride: 1, padding: 1),  // two 8-lane blocks on AVX2
                       Shape(x: [2, 9, 5, 5], outputs: 10, kernel: 3, stride: 2, padding: 1)]
        checkBlockedConvGradients(checked, label: "8-lane blocked conv2d", seedBase: 440)
    }

    /// Batch 9 split over 1 and 2 threads: bit-identical on each ISA.
    func testIdenticalAcrossThreads() {
        let threaded = [Shape(x: [9, 8, 14, 13], outputs: 8, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [9, 5, 11, 9], outputs: 16, kernel: 3, stride: 2, padding: 1),
                        Shape(x: [9, 11, 7, 9], outputs: 6, kernel: 5, stride: 2, padding: 2),
                        Shape(x: [9, 20, 6, 6], outputs: 18, kernel: 3, stride: 1, padding: 1)]
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for s in threaded {
                Parallel.threads = 1
                let single = convRun(s, seed: 460)
                Parallel.threads = 2
                let double = convRun(s, seed: 460)
                XCTAssertEqual(single, double, "isa \(isa) \(s)")
            }
        }
    }
}
