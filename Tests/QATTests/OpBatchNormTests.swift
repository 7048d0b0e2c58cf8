import XCTest
import QAT

/// Naive Double BatchNorm2d in train mode: batch mean and biased batch variance per channel.
func batchNormTrainReference(x: [Double], gamma: [Double], beta: [Double], shape: [Int], epsilon: Double) -> [Double] {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
    let m = Double(n * h * w)
    var y = [Double](repeating: 0, count: x.count)
    for ch in 0..<c {
        var mean = 0.0
        for b in 0..<n { for i in 0..<h { for j in 0..<w { mean += x[index4(shape, b, ch, i, j)] } } }
        mean /= m
        var variance = 0.0
        for b in 0..<n { for i in 0..<h { for j in 0..<w {
            let d = x[index4(shape, b, ch, i, j)] - mean
            variance += d * d
        } } }
        variance /= m
        for b in 0..<n { for i in 0..<h { for j in 0..<w {
            let k = index4(shape, b, ch, i, j)
            y[k] = gamma[ch] * (x[k] - mean) / (variance + epsilon).squareRoot() + beta[ch]
        } } }
    }
    return y
}

/// Naive Double BatchNorm2d in eval mode: fixed running mean and variance.
func batchNormEvalReference(x: [Double], gamma: [Double], beta: [Double], mean: [Double], variance: [Double],
                            shape: [Int], epsilon: Double) -> [Double] {
    var y = [Double](repeating: 0, count: x.count)
    let plane = shape[2] * shape[3]
    for k in 0..<x.count {
        let ch = (k / plane) % shape[1]
        y[k] = gamma[ch] * (x[k] - mean[ch]) / (variance[ch] + epsilon).squareRoot() + beta[ch]
    }
    return y
}

final class OpBatchNormTests: XCTestCase {
    /// x with a different mean and spread per channel, so a wrong axis or a missing centring shows.
    func makeInput(_ shape: [Int], _ rng: inout SeededGenerator) -> Variable {
        var t = Tensor.uniform(shape, bound: 1, using: &rng)
        let plane = shape[2] * shape[3]
        for k in 0..<t.count {
            let ch = (k / plane) % shape[1]
            t.storage[k] = t.storage[k] * Float(1 + ch) + Float(ch) - 0.5
        }
        return Variable(t, requiresGrad: true)
    }

    func makeParameters(_ c: Int, _ rng: inout SeededGenerator) -> (gamma: Variable, beta: Variable) {
        let gamma = Variable(Tensor(shape: [c], storage: (0..<c).map { _ in 0.5 + rng.nextUnitFloat() }), requiresGrad: true)
        let beta = randomVariable([c], &rng)
        return (gamma, beta)
    }

    func makeStatistics(_ c: Int, _ rng: inout SeededGenerator) -> BatchNormStatistics {
        let s = BatchNormStatistics(channels: c)
        for ch in 0..<c {
            s.mean.storage[ch] = rng.nextUnitFloat() - 0.5
            s.variance.storage[ch] = 0.5 + rng.nextUnitFloat()
        }
        return s
    }

    func checkTrain(_ shape: [Int], seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let x = makeInput(shape, &rng)
        let (gamma, beta) = makeParameters(shape[1], &rng)
        let statistics = makeStatistics(shape[1], &rng)
        checkOp("batchNorm2d train \(shape)", inputs: [OpInput("x", x), OpInput("gamma", gamma), OpInput("beta", beta)],
                outputShape: shape,
                reference: { v in batchNormTrainReference(x: v[0], gamma: v[1], beta: v[2], shape: shape, epsilon: 1e-5) },
                forward: { tape in
                    batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: tape)
                },
                seed: seed &+ 1, file: file, line: line)
    }

    func testTrainGradients() { checkTrain([3, 2, 3, 2], seed: 41) }
    func testTrainGradientsBatch1() { checkTrain([1, 3, 4, 3], seed: 42) }
    func testTrainGradients1x1Planes() { checkTrain([5, 2, 1, 1], seed: 43) }

    func testEvalGradients() {
        var rng = SeededGenerator(seed: 44)
        let shape = [2, 3, 3, 2]
        let x = makeInput(shape, &rng)
        let (gamma, beta) = makeParameters(shape[1], &rng)
        let statistics = makeStatistics(shape[1], &rng)
        let mean = statistics.mean.storage.map(Double.init)
        let variance = statistics.variance.storage.map(Double.init)
        checkOp("batchNorm2d eval", inputs: [OpInput("x", x), OpInput("gamma", gamma), OpInput("beta", beta)],
                outputShape: shape,
                reference: { v in
                    batchNormEvalReference(x: v[0], gamma: v[1], beta: v[2], mean: mean, variance: variance,
                                           shape: shape, epsilon: 1e-5)
                },
                forward: { tape in
                    batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: false, tape: tape)
                },
                seed: 45)
        // Eval mode never touches the running statistics.
        XCTAssertEqual(statistics.mean.storage.map(Double.init), mean)
        XCTAssertEqual(statistics.variance.storage.map(Double.init), variance)
    }

    /// PyTorch's rule: running = (1 − momentum)·running + momentum·batch, with the unbiased batch
    /// variance (÷ (M − 1), M = N·H·W) for the running variance and the biased one for normalising.
    func testRunningStatisticsUpdate() {
        var rng = SeededGenerator(seed: 46)
        let shape = [2, 2, 3, 2]
        let x = makeInput(shape, &rng)
        let (gamma, beta) = makeParameters(shape[1], &rng)
        let statistics = makeStatistics(shape[1], &rng)
        let oldMean = statistics.mean.storage.map(Double.init)
        let oldVariance = statistics.variance.storage.map(Double.init)

        func expected(_ values: [Float], old: ([Double], [Double]), momentum: Double = 0.1) -> ([Double], [Double]) {
            let plane = shape[2] * shape[3], m = Double(shape[0] * plane)
            var mean = [Double](repeating: 0, count: shape[1]), variance = mean
            for ch in 0..<shape[1] {
                var xs: [Double] = []
                for b in 0..<shape[0] { for i in 0..<plane { xs.append(Double(values[(b * shape[1] + ch) * plane + i])) } }
                let mu = xs.reduce(0, +) / m
                let unbiased = xs.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / (m - 1)
                mean[ch] = (1 - momentum) * old.0[ch] + momentum * mu
                variance[ch] = (1 - momentum) * old.1[ch] + momentum * unbiased
            }
            return (mean, variance)
        }

        // Default momentum (0.1), with a tape.
        let tape = Tape()
        _ = batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: tape)
        let (mean1, variance1) = expected(x.value.storage, old: (oldMean, oldVariance))
        assertClose(statistics.mean.storage, mean1, tolerance: 1e-6, "running mean after step 1")
        assertClose(statistics.variance.storage, variance1, tolerance: 1e-6, "running variance after step 1")

        // A second step from the updated state, now without a tape (training still moves the statistics).
        let x2 = makeInput(shape, &rng)
        _ = batchNorm2d(x2, gamma: gamma, beta: beta, statistics: statistics, training: true, tape: nil)
        let (mean2, variance2) = expected(x2.value.storage, old: (mean1, variance1))
        assertClose(statistics.mean.storage, mean2, tolerance: 1e-6, "running mean after step 2")
        assertClose(statistics.variance.storage, variance2, tolerance: 1e-6, "running variance after step 2")

        // A non-default momentum is honoured.
        let x3 = makeInput(shape, &rng)
        _ = batchNorm2d(x3, gamma: gamma, beta: beta, statistics: statistics, training: true, momentum: 0.3, tape: nil)
        let (mean3, variance3) = expected(x3.value.storage, old: (mean2, variance2), momentum: 0.3)
        assertClose(statistics.mean.storage, mean3, tolerance: 1e-6, "running mean, momentum 0.3")
        assertClose(statistics.variance.storage, variance3, tolerance: 1e-6, "running variance, momentum 0.3")
    }

    /// A hand-computed case: one channel, x = [1, 2, 3, 6] (N = 1, 2×2), γ = 2, β = 1, ε = 0.
    /// mean = 12/4 = 3, biased variance = (4 + 1 + 0 + 9)/4 = 3.5, unbiased = 14/3.
    func testHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 6]))
        let gamma = Variable(Tensor(shape: [1], storage: [2]))
        let beta = Variable(Tensor(shape: [1], storage: [1]))
        let statistics = BatchNormStatistics(channels: 1)   // mean 0, variance 1
        let y = batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, epsilon: 0, tape: nil)
        let s = 3.5.squareRoot()
        // y = 2·(x − 3)/√3.5 + 1
        assertClose(y.value.storage, [2 * -2 / s + 1, 2 * -1 / s + 1, 1, 2 * 3 / s + 1], tolerance: 1e-6, "train y")
        // running mean = 0.9·0 + 0.1·3 = 0.3; running variance = 0.9·1 + 0.1·14/3 = 0.9 + 0.4667 = 1.3667
        assertClose(statistics.mean.storage, [0.3], tolerance: 1e-7, "running mean")
        assertClose(statistics.variance.storage, [0.9 + 1.4 / 3], tolerance: 1e-6, "running variance")

        // Eval with running mean 0.3, variance 1.3667 and ε = 0: y = 2·(x − 0.3)/√1.3667 + 1
        let e = batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: false, epsilon: 0, tape: nil)
        let sd = (0.9 + 1.4 / 3).squareRoot()
        assertClose(e.value.storage, [1, 2, 3, 6].map { 2 * ($0 - 0.3) / sd + 1 }, tolerance: 1e-6, "eval y")
    }
}
