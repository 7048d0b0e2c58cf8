import XCTest
import CKernels
import QAT

/// BatchNorm's C loops (CKernels/batchnorm.c) on every path this CPU has (AVX-512, AVX2,
/// portable): the Double sums against a Swift loop in the documented order (batchnorm.h), bit for
/// bit; the element-wise passes against the Swift expressions, bit for bit; the op across thread
/// counts; and finite-difference gradient checks on each path.
final class BatchNormKernelTests: XCTestCase {
    override func tearDown() {
        qat_bn_force_isa(-1)
        Parallel.threads = 1
        super.tearDown()
    }

    private var paths: [Int32] { (0...qat_bn_force_isa(-1)).map { $0 } }

    private struct Shape { let batch: Int, channels: Int, plane: Int }

    /// Batch 1…7, channels 1…40, planes 1…50: every plane length up to 17 (the small-plane blocks,
    /// full vectors and tails), then random ones.
    private var shapes: [Shape] {
        var generator = SeededGenerator(seed: 900)
        func pick(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(generator.next() % UInt64(range.count)) }
        let fixed = (1...17).map { Shape(batch: 1 + $0 % 7, channels: 1 + (3 * $0) % 40, plane: $0) }
        return fixed + (0..<24).map { _ in Shape(batch: pick(1...7), channels: pick(1...40), plane: pick(1...50)) }
            + [Shape(batch: 3, channels: 40, plane: 4), Shape(batch: 2, channels: 9, plane: 50)]
    }

    private func values(_ count: Int, seed: UInt64, scale: Float = 3) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { i in i % 13 == 5 ? -0.0 : (generator.nextUnitFloat() * 2 - 1) * scale + (i % 3 == 0 ? 1.5 : 0) }
    }

    /// One plane's sum in the documented order: lane j adds positions p ≡ j (mod 8) from +0,
    /// folded ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
    private func orderedSum(_ count: Int, _ term: (Int) -> Double) -> Double {
        var l = [Double](repeating: 0, count: 8)
        for p in 0..<count { l[p % 8] += term(p) }
        return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
    }

    /// Per channel: the planes' sums added in sample order from 0.
    private func channelTotals(_ s: Shape, _ term: (_ index: Int, _ channel: Int) -> Double) -> [Double] {
        (0..<s.channels).map { c in
            var total = 0.0
            for n in 0..<s.batch {
                let base = (n * s.channels + c) * s.plane
                total += orderedSum(s.plane) { term(base + $0, c) }
            }
            return total
        }
    }

    /// The kernels' channel totals, their planes written in three uneven chunks (a chunk may start
    /// and end inside a sample), as threads would split them.
    private func kernelTotals(_ s: Shape, outputs: Int = 1,
                              _ body: (Int, Int, UnsafeMutablePointer<Double>) -> Void) -> [[Double]] {
        let planes = s.batch * s.channels
        var partial = [Double](repeating: .nan, count: outputs * planes)
        let cuts = [0, planes / 3, planes / 3 + (planes + 1) / 4, planes]
        partial.withUnsafeMutableBufferPointer { buffer in
            for k in 0..<3 where cuts[k] < cuts[k + 1] { body(cuts[k], cuts[k + 1], buffer.baseAddress!) }
        }
        return (0..<outputs).map { k in
            var totals = [Double](repeating: .nan, count: s.channels)
            partial.withUnsafeBufferPointer { qat_bn_channel_totals($0.baseAddress! + k * planes, &totals, s.batch, s.channels) }
            return totals
        }
    }

    private func assertSameBits<T: BinaryFloatingPoint>(_ a: [T], _ b: [T], _ message: String,
                                                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        if let i = a.indices.first(where: { i in i < b.count && (a[i] != b[i] || a[i].sign != b[i].sign) }) {
            XCTFail("\(message): element \(i): \(a[i]) vs \(b[i])", file: file, line: line)
        }
    }

    func testSumsFollowTheDocumentedOrderOnEveryPath() {
        defer { qat_bn_avx2_one_plane(1) }
        // AVX2: one plane at a time (the default) and the previous 4-plane loops.
        for (path, onePlane) in paths.flatMap({ path in [(path, Int32(1)), (path, Int32(0))] }) {
            XCTAssertEqual(qat_bn_force_isa(path), path)
            qat_bn_avx2_one_plane(onePlane)
            for (index, s) in shapes.enumerated() {
                let count = s.batch * s.channels * s.plane
                let x = values(count, seed: UInt64(index) + 1)
                let gy = values(count, seed: UInt64(index) + 100, scale: 1)
                let meanF = values(s.channels, seed: UInt64(index) + 200, scale: 1)
                let inverseStd = values(s.channels, seed: UInt64(index) + 300, scale: 0.5).map { abs($0) + 0.5 }
                let mean = meanF.map(Double.init)
                let planes = s.batch * s.channels
                let sums = kernelTotals(s) { q0, q1, partial in qat_bn_plane_sums(x, partial, s.channels, s.plane, q0, q1) }[0]
                let squares = kernelTotals(s) { q0, q1, partial in
                    qat_bn_plane_squared_deviations(x, mean, partial, s.channels, s.plane, q0, q1)
                }[0]
                let gradient = kernelTotals(s, outputs: 2) { q0, q1, partial in
                    qat_bn_plane_gradient_sums(gy, x, meanF, inverseStd, partial, partial + planes, s.channels, s.plane, q0, q1)
                }
                let (sumGrad, sumNormalized) = (gradient[0], gradient[1])
                let label = "path \(path) one plane \(onePlane) \(s)"
                assertSameBits(sums, channelTotals(s) { i, _ in Double(x[i]) }, "Σx " + label)
                assertSameBits(squares, channelTotals(s) { i, c in
                    let d = Double(x[i]) - mean[c]
                    return d * d
                }, "Σ(x − μ)² " + label)
                assertSameBits(sumGrad, channelTotals(s) { i, _ in Double(gy[i]) }, "Σdy " + label)
                assertSameBits(sumNormalized, channelTotals(s) { i, c in
                    let normalized = (x[i] - meanF[c]) * inverseStd[c]
                    return Double(gy[i] * normalized)
                }, "Σdy·x̂ " + label)
                // The order is one way to add; any order agrees with the plain Double sum closely.
                for c in 0..<s.channels {
                    var plain = 0.0
                    for n in 0..<s.batch { for p in 0..<s.plane { plain += Double(x[(n * s.channels + c) * s.plane + p]) } }
                    XCTAssertEqual(sums[c], plain, accuracy: 1e-12 * Double(count), label)
                }
            }
        }
    }

    /// The gradient sums with the clamp folded in equal the plain sums over the clamp's mask written
    /// by its own pass, bit for bit, on every path (ReLU, ReLU6, Clip bounds; planes below 8 take
    /// AVX2's 4-plane blocks, longer ones full rows and a tail).
    func testClampGradientSumsEqualMaskThenSumsOnEveryPath() {
        let clamps = [qat_bn_clamp(top: .infinity, pass_above: 0, pass_max: .infinity),
                      qat_bn_clamp(top: 6, pass_above: 0, pass_max: Float(6).nextDown),
                      qat_bn_clamp(top: 1.5, pass_above: -Float.leastNonzeroMagnitude, pass_max: 1.5)]
        for path in paths {
            XCTAssertEqual(qat_bn_force_isa(path), path)
            for (index, s) in shapes.enumerated() {
                let count = s.batch * s.channels * s.plane, planes = s.batch * s.channels
                let x = values(count, seed: UInt64(index) + 11), gy = values(count, seed: UInt64(index) + 12, scale: 1)
                let mean = values(s.channels, seed: UInt64(index) + 13, scale: 1)
                let inverseStd = values(s.channels, seed: UInt64(index) + 14, scale: 0.5).map { abs($0) + 0.5 }
                let gamma = values(s.channels, seed: UInt64(index) + 15, scale: 3)
                let beta = values(s.channels, seed: UInt64(index) + 16, scale: 2)
                var clamp = clamps[index % clamps.count]
                let fused = kernelTotals(s, outputs: 2) { q0, q1, partial in
                    qat_bn_clamp_plane_gradient_sums(gy, x, mean, inverseStd, gamma, beta, &clamp, partial, partial + planes,
                                                     s.channels, s.plane, q0, q1)
                }
                var masked = [Float](repeating: .nan, count: count)
                qat_bn_clamp_mask_gradient(gy, x, mean, inverseStd, gamma, beta, &clamp, &masked, s.channels, s.plane, 0, planes)
                let separate = kernelTotals(s, outputs: 2) { q0, q1, partial in
                    qat_bn_plane_gradient_sums(masked, x, mean, inverseStd, partial, partial + planes, s.channels, s.plane, q0, q1)
                }
                assertSameBits(fused[0], separate[0], "Σdy clamp path \(path) \(s)")
                assertSameBits(fused[1], separate[1], "Σdy·x̂ clamp path \(path) \(s)")
            }
        }
    }

    /// The element-wise passes keep the float expressions of the portable loops, on planes split
    /// into uneven chunks (a chunk may start and end inside a sample).
    func testNormalizeAndInputGradientKeepTheBitsOnEveryPath() {
        for path in paths {
            XCTAssertEqual(qat_bn_force_isa(path), path)
            for (index, s) in shapes.enumerated() {
                let count = s.batch * s.channels * s.plane, planes = s.batch * s.channels
                let x = values(count, seed: UInt64(index) + 1), gy = values(count, seed: UInt64(index) + 2, scale: 1)
                let prior = values(count, seed: UInt64(index) + 3, scale: 1)
                let p = (0..<6).map { values(s.channels, seed: UInt64(index) * 10 + UInt64($0) + 400, scale: 1) }
                let (mean, inverseStd, gamma, beta, meanGrad, meanGradNormalized) = (p[0], p[1].map { abs($0) + 0.5 }, p[2], p[3], p[4], p[5])
                let cuts = [0, planes / 3, planes / 3 + (planes + 1) / 4, planes]
                var y = [Float](repeating: .nan, count: count)
                for k in 0..<3 where cuts[k] < cuts[k + 1] {
                    qat_bn_normalize(x, &y, mean, inverseStd, gamma, beta, s.channels, s.plane, cuts[k], cuts[k + 1], nil)
                }
                let expectedY = (0..<count).map { i -> Float in
                    let c = (i / s.plane) % s.channels
                    let v = (x[i] - mean[c]) * inverseStd[c]
                    return gamma[c] * v + beta[c]
                }
                assertSameBits(y, expectedY, "normalize path \(path) \(s)")
                for training in [true, false] {
                    for overwrite in [true, false] {
                        var gx = overwrite ? [Float](repeating: .nan, count: count) : prior
                        for k in 0..<3 where cuts[k] < cuts[k + 1] {
                            if training {
                                qat_bn_input_grad(gy, x, mean, inverseStd, gamma, meanGrad, meanGradNormalized, &gx,
                                                  overwrite ? 1 : 0, s.channels, s.plane, cuts[k], cuts[k + 1])
                            } else {
                                qat_bn_input_grad(gy, x, mean, inverseStd, gamma, nil, nil, &gx,
                                                  overwrite ? 1 : 0, s.channels, s.plane, cuts[k], cuts[k + 1])
                            }
                        }
                        let expected = (0..<count).map { i -> Float in
                            let c = (i / s.plane) % s.channels
                            let value = training
                                ? gamma[c] * (gy[i] - meanGrad[c] - ((x[i] - mean[c]) * inverseStd[c]) * meanGradNormalized[c])
                                : gamma[c] * gy[i]
                            return (overwrite ? 0 : prior[i]) + value
                        }
                        assertSameBits(gx, expected, "input grad path \(path) \(s) training \(training) overwrite \(overwrite)")
                    }
                }
            }
        }
    }

    /// The input gradient with the clamp folded in against the Swift expressions, bit for bit:
    /// training and eval, overwriting and adding, on every path and uneven chunks.
    func testClampInputGradientKeepsTheBitsOnEveryPath() {
        let clamps = [qat_bn_clamp(top: .infinity, pass_above: 0, pass_max: .infinity),
                      qat_bn_clamp(top: 6, pass_above: 0, pass_max: Float(6).nextDown),
                      qat_bn_clamp(top: 1.5, pass_above: -Float.leastNonzeroMagnitude, pass_max: 1.5)]
        for path in paths {
            XCTAssertEqual(qat_bn_force_isa(path), path)
            for (index, s) in shapes.enumerated() {
                let count = s.batch * s.channels * s.plane, planes = s.batch * s.channels
                let x = values(count, seed: UInt64(index) + 21), gy = values(count, seed: UInt64(index) + 22, scale: 1)
                let prior = values(count, seed: UInt64(index) + 23, scale: 1)
                let p = (0..<7).map { values(s.channels, seed: UInt64(index) * 10 + UInt64($0) + 500, scale: 2) }
                let (mean, inverseStd, gamma, beta, scale) = (p[0], p[1].map { abs($0) + 0.5 }, p[2], p[3], p[4])
                let (meanGrad, meanGradNormalized) = (p[5], p[6])
                var clamp = clamps[index % clamps.count]
                let cuts = [0, planes / 3, planes / 3 + (planes + 1) / 4, planes]
                for training in [true, false] {
                    for overwrite in [true, false] {
                        var gx = overwrite ? [Float](repeating: .nan, count: count) : prior
                        for k in 0..<3 where cuts[k] < cuts[k + 1] {
                            qat_bn_clamp_input_grad(gy, x, mean, inverseStd, gamma, beta, &clamp, scale,
                                                    training ? meanGrad : nil, training ? meanGradNormalized : nil, &gx,
                                                    overwrite ? 1 : 0, s.channels, s.plane, cuts[k], cuts[k + 1])
                        }
                        let expected = (0..<count).map { i -> Float in
                            let c = (i / s.plane) % s.channels
                            let normalized = (x[i] - mean[c]) * inverseStd[c]
                            let y = gamma[c] * normalized + beta[c]
                            let g: Float = 0 + (y > clamp.pass_above && y <= clamp.pass_max ? gy[i] : 0)
                            let value = training ? scale[c] * (g - meanGrad[c] - normalized * meanGradNormalized[c]) : scale[c] * g
                            return (overwrite ? 0 : prior[i]) + value
                        }
                        assertSameBits(gx, expected, "clamp input grad path \(path) \(s) training \(training) overwrite \(overwrite)")
                    }
                }
            }
        }
    }

    /// The whole op, forward and backward, on 1 and 2 threads: the same bits on each path.
    func testIdenticalAcrossThreads() {
        let shapes = [[7, 19, 5, 5], [5, 40, 2, 2], [3, 12, 28, 28], [6, 33, 1, 1]]
        for path in paths {
            qat_bn_force_isa(path)
            for shape in shapes {
                func run(threads: Int) -> [[Float]] {
                    Parallel.threads = threads
                    let count = shape.reduce(1, *)
                    let x = Variable(Tensor(shape: shape, storage: values(count, seed: 7)), requiresGrad: true)
                    let gamma = Variable(Tensor(shape: [shape[1]], storage: values(shape[1], seed: 8)), requiresGrad: true)
                    let beta = Variable(Tensor(shape: [shape[1]], storage: values(shape[1], seed: 9)), requiresGrad: true)
                    let statistics = BatchNormStatistics(channels: shape[1])
                    let tape = Tape()
                    let y = batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: tape)
                    tape.backward(from: weightedSum(y, weights: values(count, seed: 10), tape: tape))
                    return [y.value.storage, x.grad!.storage, gamma.grad!.storage, beta.grad!.storage,
                            statistics.mean.storage, statistics.variance.storage]
                }
                let single = run(threads: 1), double = run(threads: 2)
                for k in 0..<single.count { assertSameBits(single[k], double[k], "path \(path) \(shape) output \(k)") }
            }
        }
    }

    /// Central differences through the op on each path: small planes (8-plane blocks and the rest),
    /// planes with a full vector and a tail, 1×1 planes.
    func testGradientsOnEveryPath() {
        let shapes = [[3, 9, 2, 2], [2, 5, 5, 5], [4, 3, 1, 1], [2, 2, 3, 6]]
        for path in paths {
            qat_bn_force_isa(path)
            for (index, shape) in shapes.enumerated() {
                var rng = SeededGenerator(seed: 950 + UInt64(index))
                var t = Tensor.uniform(shape, bound: 1, using: &rng)
                let plane = shape[2] * shape[3]
                for k in 0..<t.count { t.storage[k] = t.storage[k] * Float(1 + (k / plane) % shape[1]) + 0.25 }
                let x = Variable(t, requiresGrad: true)
                let gamma = Variable(Tensor(shape: [shape[1]], storage: (0..<shape[1]).map { _ in 0.5 + rng.nextUnitFloat() }),
                                     requiresGrad: true)
                let beta = randomVariable([shape[1]], &rng)
                let statistics = BatchNormStatistics(channels: shape[1])
                checkOp("batchNorm2d path \(path) \(shape)",
                        inputs: [OpInput("x", x), OpInput("gamma", gamma), OpInput("beta", beta)], outputShape: shape,
                        reference: { v in batchNormTrainReference(x: v[0], gamma: v[1], beta: v[2], shape: shape, epsilon: 1e-5) },
                        forward: { tape in
                            batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: tape)
                        },
                        seed: 960 + UInt64(index))
            }
        }
    }
}
