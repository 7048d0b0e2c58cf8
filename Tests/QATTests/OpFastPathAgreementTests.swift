import XCTest
import QAT

/// The C loops of BatchNorm, the activations and the broadcasting add/mul against references
/// that spell out the order of every sum: each fast path claims the same bits as the loops it
/// replaced, so the comparisons are exact (odd shapes, partial channel groups, NaN and ±0 inputs,
/// 1 and 2 threads, fresh and pre-existing gradients).
final class OpFastPathAgreementTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        RowBroadcast.enabled = true
    }

    // MARK: BatchNorm

    /// What BatchNorm computes, written as the serial Swift loops it used before its C kernels:
    /// one Double chain per channel in (n, p) order for the statistics, one chain per plane for the
    /// gradient sums. Returns y and the gradients of x, γ, β for the output gradient gy.
    func serialBatchNorm(x: Tensor, gamma: [Float], beta: [Float], gy: [Float], training: Bool,
                         runningMean: [Float], runningVariance: [Float], epsilon: Float = 1e-5)
        -> (y: [Float], gx: [Float], gamma: [Float], beta: [Float]) {
        let (n, c, plane) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let xs = x.storage
        var mean = runningMean, inverseStd = runningVariance.map { 1 / ($0 + epsilon).squareRoot() }
        if training {
            for ch in 0..<c {
                var sum = 0.0
                for b in 0..<n { for i in 0..<plane { sum += Double(xs[(b * c + ch) * plane + i]) } }
                let mu = sum / Double(n * plane)
                var squares = 0.0
                for b in 0..<n { for i in 0..<plane { let d = Double(xs[(b * c + ch) * plane + i]) - mu; squares += d * d } }
                mean[ch] = Float(mu)
                inverseStd[ch] = Float(1 / (squares / Double(n * plane) + Double(epsilon)).squareRoot())
            }
        }
        var y = [Float](repeating: 0, count: xs.count), normalized = y
        for k in 0..<xs.count {
            let ch = (k / plane) % c
            normalized[k] = (xs[k] - mean[ch]) * inverseStd[ch]
            y[k] = gamma[ch] * normalized[k] + beta[ch]
        }
        var sumGrad = [Double](repeating: 0, count: c), sumGradNormalized = sumGrad
        for b in 0..<n {
            for ch in 0..<c {
                var s = 0.0, sn = 0.0
                for i in 0..<plane { let k = (b * c + ch) * plane + i; s += Double(gy[k]); sn += Double(gy[k] * normalized[k]) }
                sumGrad[ch] += s; sumGradNormalized[ch] += sn
            }
        }
        let m = Double(n * plane)
        var gx = [Float](repeating: 0, count: xs.count)
        for k in 0..<xs.count {
            let ch = (k / plane) % c
            let scale = gamma[ch] * inverseStd[ch]
            gx[k] += training
                ? scale * (gy[k] - Float(sumGrad[ch] / m) - normalized[k] * Float(sumGradNormalized[ch] / m))
                : scale * gy[k]
        }
        return (y, gx, sumGradNormalized.map { 0 + Float($0) }, sumGrad.map { 0 + Float($0) })
    }

    func checkBatchNorm(_ shape: [Int], training: Bool, threads: Int, seed: UInt64,
                        file: StaticString = #filePath, line: UInt = #line) {
        Parallel.threads = threads
        var rng = SeededGenerator(seed: seed)
        let c = shape[1]
        var input = Tensor.uniform(shape, bound: 3, using: &rng)
        for k in 0..<input.count { input.storage[k] += 0.25 * Float(k % 5) }   // channels off-centre
        let gamma = Variable(Tensor.uniform([c], bound: 2, using: &rng), requiresGrad: true)
        let beta = Variable(Tensor.uniform([c], bound: 1, using: &rng), requiresGrad: true)
        let statistics = BatchNormStatistics(channels: c)
        for ch in 0..<c { statistics.variance.storage[ch] = 0.5 + Float(ch) / 7 }
        let (runningMean, runningVariance) = (statistics.mean.storage, statistics.variance.storage)
        let gy = Tensor.uniform(shape, bound: 1, using: &rng).storage
        let x = Variable(input, requiresGrad: true)
        let tape = Tape()
        let y = batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: training, tape: tape)
        tape.backward(from: weightedSum(y, weights: gy, tape: tape))
        let expected = serialBatchNorm(x: input, gamma: gamma.value.storage, beta: beta.value.storage, gy: gy,
                                       training: training, runningMean: runningMean, runningVariance: runningVariance)
        let label = "\(shape) training \(training) threads \(threads)"
        assertSameBits(y.value.storage, expected.y, "y \(label)", file: file, line: line)
        assertSameBits(x.grad!.storage, expected.gx, "dx \(label)", file: file, line: line)
        assertSameBits(gamma.grad!.storage, expected.gamma, "dγ \(label)", file: file, line: line)
        assertSameBits(beta.grad!.storage, expected.beta, "dβ \(label)", file: file, line: line)
    }

    /// Exact (bit-pattern) equality, reporting the first differing element rather than both arrays.
    func assertSameBits(_ actual: [Float], _ expected: [Float], _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(label): count", file: file, line: line)
        if let i = actual.indices.first(where: { $0 < expected.count && actual[$0].bitPattern != expected[$0].bitPattern }) {
            let differing = zip(actual, expected).filter { $0.bitPattern != $1.bitPattern }.count
            XCTFail("\(label): \(differing) elements differ, first at \(i): \(actual[i]) vs \(expected[i])", file: file, line: line)
        }
    }

    /// 11 and 19 channels: one or two full groups of 8 and a partial one; 1×1 and odd planes.
    func testBatchNormMatchesSerialLoopsExactly() {
        for (index, shape) in [[3, 11, 5, 7], [2, 19, 1, 1], [1, 3, 4, 9], [4, 8, 3, 3]].enumerated() {
            for training in [true, false] {
                for threads in [1, 2] {
                    checkBatchNorm(shape, training: training, threads: threads, seed: 900 + UInt64(index))
                }
            }
        }
    }

    /// A finite-difference gradient check on a shape with a partial channel group.
    func testBatchNormGradientsOnOddShape() {
        var rng = SeededGenerator(seed: 911)
        let shape = [2, 10, 3, 3]
        let x = randomVariable(shape, bound: 2, &rng)
        let gamma = randomVariable([10], &rng), beta = randomVariable([10], &rng)
        let statistics = BatchNormStatistics(channels: 10)
        checkOp("batchNorm2d train \(shape)", inputs: [OpInput("x", x), OpInput("gamma", gamma), OpInput("beta", beta)],
                outputShape: shape,
                reference: { v in batchNormTrainReference(x: v[0], gamma: v[1], beta: v[2], shape: shape, epsilon: 1e-5) },
                forward: { tape in batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: tape) },
                seed: 912)
    }

    // MARK: Activations

    /// Inputs with every special case: NaN, ±0, ±∞, the kinks of each activation, and random values.
    func specialInputs(_ count: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        let specials: [Float] = [.nan, 0, -0.0, .infinity, -.infinity, 6, -3, 3, 1, -1, 0.5, -0.5, 2.5, -2.5, 7, 1e-30]
        return specials + (0..<count).map { _ in rng.nextUnitFloat() * 16 - 8 }
    }

    /// Runs `op` forward and backward with a fresh gradient and with one pre-filled with `prefill`,
    /// and compares y and the gradient added with what the Swift loops `forward` and `derivative`
    /// give (derivative(x, y, g) is the value each backward adds).
    func checkActivation(_ name: String, _ op: (Variable, Tape) -> Variable,
                         forward: (Float) -> Float, derivative: (Float, Float, Float) -> Float,
                         file: StaticString = #filePath, line: UInt = #line) {
        let xs = specialInputs(40_000, seed: 920)   // large enough to be split over 2 threads
        var rng = SeededGenerator(seed: 921)
        let gy = xs.indices.map { i in i % 7 == 0 ? -0.0 : rng.nextUnitFloat() * 4 - 2 }
        let prefill = xs.indices.map { i in i % 5 == 0 ? -0.0 : rng.nextUnitFloat() - 0.5 }
        for threads in [1, 2] {
            Parallel.threads = threads
            for fresh in [true, false] {
                let x = Variable(Tensor(shape: [xs.count], storage: xs), requiresGrad: true)
                if !fresh { x.grad = Tensor(shape: [xs.count], storage: prefill) }
                let tape = Tape()
                let y = op(x, tape)
                tape.backward(from: weightedSum(y, weights: gy, tape: tape))   // seeds y's gradient with 0 + gy
                let expectedY = xs.map(forward)
                assertSameBits(y.value.storage, expectedY, "\(name) y", file: file, line: line)
                let expectedGrad = xs.indices.map { i in
                    (fresh ? 0 : prefill[i]) + derivative(xs[i], expectedY[i], 0 + gy[i])
                }
                assertSameBits(x.grad!.storage, expectedGrad, "\(name) gradient, fresh \(fresh), threads \(threads)",
                               file: file, line: line)
            }
        }
    }

    func testActivationsMatchScalarLoopsExactly() {
        checkActivation("relu", { relu($0, tape: $1) }, forward: { $0 < 0 ? 0 : $0 },
                        derivative: { _, y, g in y > 0 ? g : 0 })
        checkActivation("relu6", { relu6($0, tape: $1) }, forward: { $0 < 0 ? 0 : ($0 > 6 ? 6 : $0) },
                        derivative: { _, y, g in y > 0 && y < 6 ? g : 0 })
        checkActivation("clip", { clip($0, min: -1, max: 2.5, tape: $1) },
                        forward: { let r = $0 < -1 ? -1 : $0; return r > 2.5 ? 2.5 : r },
                        derivative: { x, _, g in x >= -1 && x <= 2.5 ? g : 0 })
        checkActivation("leaky_relu", { leakyReLU($0, negativeSlope: 0.1, tape: $1) }, forward: { $0 > 0 ? $0 : $0 * 0.1 },
                        derivative: { x, _, g in x > 0 ? g : g * 0.1 })
        checkActivation("sigmoid", { sigmoid($0, tape: $1) }, forward: { 1 / (1 + expf(-$0)) },
                        derivative: { _, y, g in g * y * (1 - y) })
        checkActivation("hard_sigmoid", { hardSigmoid($0, alpha: 0.2, beta: 0.5, tape: $1) },
                        forward: { let t = 0.2 * $0 + 0.5; return t < 0 ? 0 : (t > 1 ? 1 : t) },
                        derivative: { _, y, g in y > 0 && y < 1 ? 0.2 * g : 0 })
        checkActivation("hard_swish", { hardSwish($0, tape: $1) },
                        forward: { v in let s = v + 3; return v * (s < 0 ? 0 : (s > 6 ? 6 : s)) / 6 },
                        derivative: { v, _, g in v < -3 ? 0 : (v <= 3 ? g * (v / 3 + 0.5) : g) })
    }

    // MARK: Broadcasting add and multiply

    /// The `RowBroadcast` loops against the general broadcasting path, bit for bit: forward, both
    /// gradients, fresh and pre-filled, operands in both orders.
    func checkBroadcast(_ op: String, _ shapeA: [Int], _ shapeB: [Int], seed: UInt64,
                        file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let a = Tensor.uniform(shapeA, bound: 2, using: &rng), b = Tensor.uniform(shapeB, bound: 2, using: &rng)
        let prefillA = Tensor.uniform(shapeA, bound: 1, using: &rng), prefillB = Tensor.uniform(shapeB, bound: 1, using: &rng)
        let rank = max(shapeA.count, shapeB.count)
        let paddedA = Array(repeating: 1, count: rank - shapeA.count) + shapeA
        let paddedB = Array(repeating: 1, count: rank - shapeB.count) + shapeB
        let outputCount = zip(paddedA, paddedB).map { max($0, $1) }.reduce(1, *)
        var weights = Tensor.uniform([outputCount], bound: 1, using: &rng).storage
        weights[0] = 0
        func run(fast: Bool, prefilled: Bool) -> [[Float]] {
            RowBroadcast.enabled = fast
            let va = Variable(a, requiresGrad: true), vb = Variable(b, requiresGrad: true)
            if prefilled { va.grad = prefillA; vb.grad = prefillB }
            let tape = Tape()
            let y = op == "add" ? add(va, vb, tape: tape) : multiply(va, vb, tape: tape)
            tape.backward(from: weightedSum(y, weights: weights, tape: tape))
            return [y.value.storage, va.grad!.storage, vb.grad!.storage]
        }
        for prefilled in [false, true] {
            let (fast, general) = (run(fast: true, prefilled: prefilled), run(fast: false, prefilled: prefilled))
            for (part, name) in zip(0..<3, ["y", "da", "db"]) {
                assertSameBits(fast[part], general[part], "\(op) \(shapeA) \(shapeB) prefilled \(prefilled) \(name)",
                               file: file, line: line)
            }
        }
    }

    func testRowBroadcastMatchesGeneralPathExactly() {
        for (index, (shapeA, shapeB)) in [([3, 13, 5, 7], [3, 13, 1, 1]), ([3, 13, 5, 7], [1, 13, 1, 1]),
                                          ([4, 3, 2, 5], [1, 3, 1, 1]), ([2, 5, 3, 3], [5, 1, 1]),
                                          ([2, 9, 4, 4], [1]), ([2, 3, 1, 1], [2, 3, 6, 5]),
                                          ([3, 7, 2, 3], [3, 7, 2, 3])].enumerated() {
            checkBroadcast("multiply", shapeA, shapeB, seed: 930 + UInt64(index))
            checkBroadcast("add", shapeA, shapeB, seed: 940 + UInt64(index))
        }
    }

    // MARK: Padded max pool

    /// The padded max pool against a plain scan of every window in row-major order (first maximum
    /// wins, a NaN wins and stays): values and, through the gradient, the element each output
    /// chose. Values from a small set, so ties are frequent. (Pins the rule for any faster kernel.)
    func testPaddedMaxPoolMatchesWindowScanExactly() {
        var rng = SeededGenerator(seed: 950)
        let cases: [(shape: [Int], kernel: Size2D, stride: Size2D, padding: Padding2D)] = [
            ([2, 3, 13, 17], Size2D(3), Size2D(2), Padding2D(1)),
            ([1, 2, 9, 30], Size2D(3), Size2D(1), Padding2D(1)),
            ([2, 1, 11, 12], Size2D(height: 2, width: 3), Size2D(height: 1, width: 2), Padding2D(top: 0, left: 2, bottom: 1, right: 0)),
            ([1, 2, 5, 5], Size2D(3), Size2D(2), Padding2D(0)),
            // Rows of 16 windows and a remainder on the AVX-512 path (stride 2 and 1, K up to 4).
            ([2, 2, 7, 71], Size2D(3), Size2D(2), Padding2D(1)),
            ([1, 3, 6, 41], Size2D(4), Size2D(1), Padding2D(top: 1, left: 3, bottom: 2, right: 0)),
            ([1, 1, 4, 50], Size2D(height: 1, width: 2), Size2D(2), Padding2D(0)),
        ]
        for (shape, kernel, stride, padding) in cases {
            let (h, w) = (shape[2], shape[3])
            let values: [Float] = (0..<shape.reduce(1, *)).map { _ in
                let r = rng.nextUnitFloat()
                return r < 0.02 ? .nan : Float(Int(r * 5)) - 2
            }
            let x = Variable(Tensor(shape: shape, storage: values), requiresGrad: true)
            let tape = Tape()
            let y = maxPool2d(x, kernel: kernel, stride: stride, padding: padding, ceilMode: false, tape: tape)
            let (oh, ow) = (y.shape[2], y.shape[3])
            let weights = (0..<y.value.count).map { Float($0 % 7 + 1) }
            tape.backward(from: weightedSum(y, weights: weights, tape: tape))
            var expectedY = [Float](), expectedGrad = [Float](repeating: 0, count: values.count)
            for plane in 0..<(shape[0] * shape[1]) {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var best: Int? = nil
                        for r in (i * stride.height - padding.top)..<(i * stride.height - padding.top + kernel.height) where r >= 0 && r < h {
                            for c in (j * stride.width - padding.left)..<(j * stride.width - padding.left + kernel.width) where c >= 0 && c < w {
                                let index = plane * h * w + r * w + c
                                guard let b = best else { best = index; continue }
                                let (v, bv) = (values[index], values[b])
                                if v > bv || (v.isNaN && !bv.isNaN) { best = index }
                            }
                        }
                        expectedY.append(best.map { values[$0] } ?? -.infinity)
                        if let best { expectedGrad[best] += weights[expectedY.count - 1] }
                    }
                }
            }
            assertSameBits(y.value.storage, expectedY, "max pool \(shape) y")
            assertSameBits(x.grad!.storage, expectedGrad, "max pool \(shape) gradient")
        }
    }
}
