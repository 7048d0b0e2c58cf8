import XCTest
import CKernels
@testable import QATCore
@testable import QATModel
@testable import QATData
import QAT

/// `batchNorm2d(fusedReLU: true)` is `relu(batchNorm2d(…))` bit for bit (forward, dx, dγ, dβ),
/// on every BatchNorm path and thread count, and `addReLU` is `relu(add(…))`; the model fuses
/// the pairs and trains to the same bits.
final class ReLUFusionTests: XCTestCase {
    /// Planes of 1, 6, 16 (the flat small-plane passes), 63 (a masked tail), 196 and 1,600
    /// positions (the fused backward masks and sums 10 planes at a time: 3 blocks).
    static let shapes: [[Int]] = [[5, 2, 1, 1], [2, 3, 2, 3], [4, 3, 4, 4], [3, 5, 7, 9], [4, 8, 14, 14], [6, 4, 40, 40]]

    private struct Run: Equatable { var y, dx, dGamma, dBeta: [UInt32] }

    private func run(_ shape: [Int], seed: UInt64, training: Bool, fused: Bool) -> Run {
        var rng = SeededGenerator(seed: seed)
        let c = shape[1]
        let x = Variable(Tensor.uniform(shape, bound: 2, using: &rng), requiresGrad: true)
        let gamma = Variable(Tensor(shape: [c], storage: (0..<c).map { _ in 0.5 + rng.nextUnitFloat() }), requiresGrad: true)
        let beta = Variable(Tensor.uniform([c], bound: 0.5, using: &rng), requiresGrad: true)
        let statistics = BatchNormStatistics(channels: c)
        for ch in 0..<c { statistics.mean.storage[ch] = 0.2 * Float(ch) - 0.3 }
        // Gradients already there, so the pullbacks must add into them.
        x.grad = Tensor.uniform(shape, bound: 1, using: &rng)
        gamma.grad = Tensor.uniform([c], bound: 1, using: &rng)
        let upstream = Tensor.uniform(shape, bound: 1, using: &rng)
        let tape = Tape()
        // h = x·1 makes BatchNorm's input an intermediate value, as a conv output is.
        let h = multiply(x, Variable(Tensor(shape: [1], storage: [1])), tape: tape)
        let y = fused
            ? batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training, fusedReLU: true, tape: tape)
            : relu(batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training, tape: tape), tape: tape)
        let values = y.value.storage.map(\.bitPattern)
        y.grad = upstream
        tape.backward(from: Variable(.scalar(0)))
        return Run(y: values, dx: x.grad!.storage.map(\.bitPattern), dGamma: gamma.grad!.storage.map(\.bitPattern),
                   dBeta: beta.grad!.storage.map(\.bitPattern))
    }

    func testFusedEqualsReLUAfterBatchNormOnEveryPathAndThreadCount() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved; _ = qat_bn_force_isa(-1) }
        for isa in [0, 1, 2] where qat_bn_force_isa(Int32(isa)) == isa {
            for (index, shape) in Self.shapes.enumerated() {
                for training in [true, false] {
                    Parallel.threads = 1
                    let reference = run(shape, seed: 700 + UInt64(index), training: training, fused: false)
                    let fused = run(shape, seed: 700 + UInt64(index), training: training, fused: true)
                    Parallel.threads = 2
                    let fusedTwoThreads = run(shape, seed: 700 + UInt64(index), training: training, fused: true)
                    XCTAssertEqual(fused, reference, "isa \(isa) \(shape) training \(training)")
                    XCTAssertEqual(fusedTwoThreads, fused, "isa \(isa) \(shape) training \(training), 2 threads")
                    XCTAssertTrue(reference.y.contains(0) && reference.y.contains { $0 != 0 }, "ReLU cuts some, not all")
                }
            }
        }
    }

    /// The backward with ReLU's mask folded into the sums and input-gradient passes against the
    /// separate mask pass it replaced: the same bits on every path, in training and eval, at 1
    /// and 2 threads (plus planes of 4, the 8-plane sums block, and 70 channels of 16, past the
    /// spread input-gradient pass).
    func testFoldedMaskEqualsSeparateMaskPass() {
        let saved = (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass)
        defer {
            (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass) = saved
            _ = qat_bn_force_isa(-1)
        }
        let shapes = Self.shapes + [[3, 4, 2, 2], [2, 70, 4, 4]]
        for isa in [0, 1, 2] where qat_bn_force_isa(Int32(isa)) == isa {
            for (index, shape) in shapes.enumerated() {
                for training in [true, false] {
                    func fused(separate: Bool, threads: Int) -> Run {
                        (BatchNormReLUBackward.usesSeparateMaskPass, Parallel.threads) = (separate, threads)
                        return run(shape, seed: 900 + UInt64(index), training: training, fused: true)
                    }
                    let reference = fused(separate: true, threads: 1)
                    XCTAssertEqual(fused(separate: false, threads: 1), reference, "isa \(isa) \(shape) training \(training)")
                    XCTAssertEqual(fused(separate: false, threads: 2), reference, "isa \(isa) \(shape) training \(training), 2 threads")
                }
            }
        }
    }

    /// NaN passes ReLU's forward and blocks its gradient; −0 stays −0 (qat_relu_forward's rule).
    func testSpecialValuesFollowReLUsRule() {
        let shape = [1, 2, 2, 4]
        func bits(fused: Bool) -> [[UInt32]] {
            let x = Variable(Tensor(shape: shape, storage: [.nan, 0, 1, -1, 2, -2, 0.5, -0.5,
                                                             3, 1, -2, 2, .infinity, 2, 2, 2]), requiresGrad: true)
            let gamma = Variable(Tensor(shape: [2], storage: [1, -0.0]), requiresGrad: true)
            let beta = Variable(Tensor(shape: [2], storage: [0, -0.0]), requiresGrad: true)
            let statistics = BatchNormStatistics(channels: 2)
            let tape = Tape()
            let h = multiply(x, Variable(Tensor(shape: [1], storage: [1])), tape: tape)
            let y = fused
                ? batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: false, fusedReLU: true, tape: tape)
                : relu(batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: false, tape: tape), tape: tape)
            let values = y.value.storage
            y.grad = Tensor(shape: shape, storage: (0..<16).map { $0 % 3 == 0 ? -0.0 : Float($0) - 7 })
            tape.backward(from: Variable(.scalar(0)))
            return [values.map(\.bitPattern), x.grad!.storage.map(\.bitPattern), gamma.grad!.storage.map(\.bitPattern),
                    beta.grad!.storage.map(\.bitPattern)]
        }
        let fused = bits(fused: true)
        XCTAssertTrue(Float(bitPattern: fused[0][0]).isNaN)
        XCTAssertEqual(fused[0][8], (-0.0 as Float).bitPattern, "−0·x̂ + −0 is −0, which ReLU keeps")
        XCTAssertEqual(fused, bits(fused: false))
    }

    func testFusedGradientsAgainstFiniteDifferences() {
        var rng = SeededGenerator(seed: 77)
        let shape = [3, 2, 3, 3]
        let x = Variable(Tensor.uniform(shape, bound: 2, using: &rng), requiresGrad: true)
        let gamma = Variable(Tensor(shape: [2], storage: [0.8, 1.3]), requiresGrad: true)
        let beta = Variable(Tensor(shape: [2], storage: [0.1, -0.2]), requiresGrad: true)
        let statistics = BatchNormStatistics(channels: 2)
        checkOp("batchNorm2d fused ReLU", inputs: [OpInput("x", x), OpInput("gamma", gamma), OpInput("beta", beta)],
                outputShape: shape,
                reference: { v in
                    batchNormTrainReference(x: v[0], gamma: v[1], beta: v[2], shape: shape, epsilon: 1e-5).map { max($0, 0) }
                },
                forward: { tape in
                    batchNorm2d(x, gamma: gamma, beta: beta, statistics: statistics, training: true, fusedReLU: true, tape: tape)
                },
                seed: 78)
    }

    /// resnet-tiny fuses its BatchNorm → ReLU and add → ReLU pairs, and two training steps (and
    /// an eval forward) give the same bits as the unfused model.
    func testResNetTinyFusesAndTrainsToTheSameBits() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))
        let count = 12
        let batch = try fashionMNIST(.train, count: count).batch(Array(0..<count)[...])
        func twoSteps(fusing: Bool) throws -> [[UInt32]] {
            let model = try Model(spec: spec, seed: 9)
            model.fusesReLU = fusing
            var bits: [[UInt32]] = []
            for _ in 0..<2 {
                for p in model.parameters { p.variable.zeroGradient() }
                let tape = Tape()
                let logits = model.forward(batch.images, training: true, tape: tape)
                let (loss, _) = softmaxCrossEntropy(logits, labels: batch.labels, tape: tape)
                bits.append(logits.value.storage.map(\.bitPattern))
                tape.backward(from: loss)
                for p in model.parameters {
                    bits.append(p.variable.grad!.storage.map(\.bitPattern))
                    p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                        for i in 0..<w.count { w[i] -= 0.05 * p.variable.grad!.storage[i] }
                    }
                }
            }
            for layer in model.batchNormLayers { bits.append(layer.statistics.variance.storage.map(\.bitPattern)) }
            let eval = model.forward(batch.images, training: false, tape: nil)
            bits.append(eval.value.storage.map(\.bitPattern))
            return bits
        }
        let model = try Model(spec: spec)
        let names = Set(model.reluFusions().map { "\(model.layers[$0.key].name)→\(model.layers[$0.value].name)" })
        XCTAssertTrue(names.isSuperset(of: ["stem_bn→stem_relu", "block1_bn1→block1_relu1", "block1_add→block1_relu2"]), "\(names)")
        XCTAssertEqual(try twoSteps(fusing: true), try twoSteps(fusing: false))
    }

    /// addReLU against relu(add): values, both operands' gradients (fresh and accumulated), with
    /// y kept and with the model's release (ReLU's mask), special values, 1 and 2 threads.
    func testAddReLUEqualsReLUAfterAdd() {
        let special: [Float] = [.nan, 0, -0.0, 1e-30, -1e-30, .infinity, -.infinity, 3, -3]
        let count = 40_000   // more than one chunk of the element-wise split
        var rng = SeededGenerator(seed: 91)
        let av = special + (0..<(count - special.count)).map { _ in rng.nextUnitFloat() * 4 - 2 }
        let bv = special.reversed() + (0..<(count - special.count)).map { _ in rng.nextUnitFloat() * 4 - 2 }
        let upstream = (0..<count).map { i in i % 5 == 0 ? -0.0 : rng.nextUnitFloat() - 0.5 }
        let prior = (0..<count).map { i in i % 3 == 0 ? -0.0 : rng.nextUnitFloat() }
        func run(fused: Bool, release: Bool, accumulate: Bool) -> [[UInt32]] {
            let a = Variable(Tensor(shape: [count], storage: av), requiresGrad: true)
            let b = Variable(Tensor(shape: [count], storage: bv), requiresGrad: true)
            if accumulate { a.grad = Tensor(shape: [count], storage: prior) }
            let tape = Tape()
            let one = Variable(Tensor(shape: [1], storage: [1]))
            let (ha, hb) = (multiply(a, one, tape: tape), multiply(b, one, tape: tape))
            let y = fused ? addReLU(ha, hb, tape: tape) : relu(add(ha, hb, tape: tape), tape: tape)
            let values = y.value.storage.map(\.bitPattern)
            if release { y.releaseValue() }
            y.grad = Tensor(shape: [count], storage: upstream)
            tape.backward(from: Variable(.scalar(0)))
            return [values, a.grad!.storage.map(\.bitPattern), b.grad!.storage.map(\.bitPattern)]
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for release in [false, true] {
            for accumulate in [false, true] {
                Parallel.threads = 1
                let reference = run(fused: false, release: release, accumulate: accumulate)
                XCTAssertEqual(run(fused: true, release: release, accumulate: accumulate), reference,
                               "release \(release) accumulate \(accumulate)")
                Parallel.threads = 2
                XCTAssertEqual(run(fused: true, release: release, accumulate: accumulate), reference,
                               "2 threads, release \(release) accumulate \(accumulate)")
            }
        }
    }
}
