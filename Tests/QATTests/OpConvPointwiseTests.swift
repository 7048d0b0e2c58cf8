import XCTest
import QAT

/// The 1×1 stride-1 path (Conv2DPointwise.swift) against a Double reference, the im2col + sgemm
/// path and the 16-channel direct path, on odd shapes that reach each of its branches: 1×1
/// planes (one sgemm over the batch), planes under 128 pixels (weight gradient over gathered
/// groups of images), larger planes (one sgemm per image), and weight gradients split in blocks
/// by rows (O > C) or by columns (C > O).
final class OpConvPointwiseTests: XCTestCase {
    /// (batch, channels, height, width, outputs)
    static let shapes: [(Int, Int, Int, Int, Int)] = [
        (3, 5, 1, 1, 7),      // 1×1 plane
        (5, 33, 1, 1, 4),     // 1×1 plane, dW split by columns
        (3, 5, 7, 3, 37),     // plane 21: groups of images, dW split by rows
        (7, 19, 5, 5, 16),    // plane 25: groups of 7 images (the whole batch, 256 / 25 rounded up is 11)
        (2, 3, 13, 11, 17),   // plane 143: one sgemm per image, dW split by rows
        (3, 50, 9, 17, 6),    // plane 153: one sgemm per image, dW split by columns
        (65, 4, 3, 2, 9),     // plane 6: groups of 43 images and a last group of 22
    ]

    override func tearDown() {
        ConvKernels.pointwiseEnabled = true
        ConvKernels.directEnabled = true
        super.tearDown()
    }

    func testGeometrySupport() {
        func geometry(kernel: Int, stride: Int, padding: Int) -> ConvGeometry {
            ConvGeometry(batch: 1, channels: 2, height: 5, width: 5, outputChannels: 3, kernel: kernel, stride: stride, padding: padding)
        }
        XCTAssertTrue(geometry(kernel: 1, stride: 1, padding: 0).pointwiseSupported)
        XCTAssertFalse(geometry(kernel: 1, stride: 2, padding: 0).pointwiseSupported)
        XCTAssertFalse(geometry(kernel: 1, stride: 1, padding: 1).pointwiseSupported)
        XCTAssertFalse(geometry(kernel: 3, stride: 1, padding: 0).pointwiseSupported)
    }

    /// Finite-difference gradient checks through `checkOp` (small shapes: every element is perturbed).
    func testGradientCheck() {
        let cases: [(Int, Int, Int, Int, Int, Bool)] = [
            (3, 5, 1, 1, 7, true), (2, 3, 4, 3, 5, true), (2, 2, 3, 5, 17, false), (1, 18, 2, 2, 3, true),
        ]
        for (index, (n, c, h, w, o, hasBias)) in cases.enumerated() {
            var rng = SeededGenerator(seed: 40 + UInt64(index))
            let xShape = [n, c, h, w], wShape = [o, c, 1, 1]
            let x = randomVariable(xShape, &rng)
            let weight = randomVariable(wShape, bound: 0.5, &rng)
            let bias: Variable? = hasBias ? randomVariable([o], &rng) : nil
            var inputs = [OpInput("x", x), OpInput("weight", weight)]
            if let bias { inputs.append(OpInput("bias", bias)) }
            checkOp("pointwise conv2d \(xShape) → \(o)", inputs: inputs, outputShape: [n, o, h, w],
                    reference: { v in
                        conv2dReference(x: v[0], xShape: xShape, w: v[1], wShape: wShape, b: hasBias ? v[2] : nil,
                                        stride: 1, padding: 0)
                    },
                    forward: { tape in conv2d(x, weight: weight, bias: bias, tape: tape) },
                    seed: 50 + UInt64(index))
        }
    }

    /// y, dx, dW, db of one 1×1 conv with the output gradient r, from fresh inputs of `seed`.
    func run(_ shape: (Int, Int, Int, Int, Int), seed: UInt64) -> (inputs: [[Float]], outputs: [[Float]]) {
        let (n, c, h, w, o) = shape
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable([n, c, h, w], &rng)
        let weight = randomVariable([o, c, 1, 1], bound: 0.5, &rng)
        let bias = randomVariable([o], &rng)
        let r = (0..<(n * o * h * w)).map { _ in rng.nextUnitFloat() * 2 - 1 }
        let tape = Tape()
        let y = conv2d(x, weight: weight, bias: bias, tape: tape)
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        return ([x.value.storage, weight.value.storage, bias.value.storage, r],
                [y.value.storage, x.grad!.storage, weight.grad!.storage, bias.grad!.storage])
    }

    /// y, dx, dW, db in Double from the definitions (P = H·W):
    /// y[n,o,p] = b[o] + Σ_c W[o,c]·x[n,c,p], dx[n,c,p] = Σ_o W[o,c]·r[n,o,p],
    /// dW[o,c] = Σ_{n,p} r[n,o,p]·x[n,c,p], db[o] = Σ_{n,p} r[n,o,p].
    func reference(_ shape: (Int, Int, Int, Int, Int), _ inputs: [[Float]]) -> [[Double]] {
        let (n, c, h, w, o) = shape
        let plane = h * w
        let (x, weight, bias, r) = (inputs[0].map(Double.init), inputs[1].map(Double.init),
                                    inputs[2].map(Double.init), inputs[3].map(Double.init))
        var y = [Double](repeating: 0, count: n * o * plane), dx = [Double](repeating: 0, count: n * c * plane)
        var dw = [Double](repeating: 0, count: o * c), db = [Double](repeating: 0, count: o)
        for image in 0..<n {
            for out in 0..<o {
                for p in 0..<plane {
                    let gy = r[(image * o + out) * plane + p]
                    var sum = bias[out]
                    for channel in 0..<c {
                        let xv = x[(image * c + channel) * plane + p]
                        sum += weight[out * c + channel] * xv
                        dx[(image * c + channel) * plane + p] += weight[out * c + channel] * gy
                        dw[out * c + channel] += gy * xv
                    }
                    y[(image * o + out) * plane + p] = sum
                    db[out] += gy
                }
            }
        }
        return [y, dx, dw, db]
    }

    func assertClose(_ actual: [Float], _ expected: [Double], tolerance: Double, _ label: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, label, file: file, line: line)
        var worst = 0.0
        for (a, e) in zip(actual, expected) { worst = max(worst, abs(Double(a) - e) / max(1, abs(e))) }
        XCTAssertLessThanOrEqual(worst, tolerance, label, file: file, line: line)
    }

    /// The new path and the previous ones (im2col + sgemm; the 16-channel direct kernel where O is
    /// a multiple of 16) agree with the Double definitions and with each other.
    func testAgreesWithDoubleReferenceAndPreviousPaths() {
        let names = ["y", "dx", "dW", "db"]
        for (index, shape) in Self.shapes.enumerated() {
            let seed = 70 + UInt64(index)
            let pointwise = run(shape, seed: seed)
            let expected = reference(shape, pointwise.inputs)
            ConvKernels.pointwiseEnabled = false
            let previous = run(shape, seed: seed)            // c16 where O % 16 == 0, else im2col
            ConvKernels.directEnabled = false
            let im2col = run(shape, seed: seed)
            ConvKernels.pointwiseEnabled = true
            ConvKernels.directEnabled = true
            for k in 0..<4 {
                let label = "\(shape) \(names[k])"
                assertClose(pointwise.outputs[k], expected[k], tolerance: 1e-5, "pointwise vs Double: \(label)")
                assertClose(im2col.outputs[k], expected[k], tolerance: 1e-5, "im2col vs Double: \(label)")
                assertClose(previous.outputs[k], expected[k], tolerance: 1e-5, "previous path vs Double: \(label)")
                assertClose(pointwise.outputs[k], im2col.outputs[k].map(Double.init), tolerance: 1e-5,
                            "pointwise vs im2col: \(label)")
            }
        }
    }

    /// Work is split by image and by fixed blocks of dW, never by thread count: 1 and 2 threads
    /// give the same bits.
    func testThreadsGiveIdenticalResults() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for (index, shape) in Self.shapes.enumerated() {
            Parallel.threads = 1
            let single = run(shape, seed: 90 + UInt64(index)).outputs
            Parallel.threads = 2
            let double = run(shape, seed: 90 + UInt64(index)).outputs
            XCTAssertEqual(single, double, "\(shape)")
        }
    }
}
