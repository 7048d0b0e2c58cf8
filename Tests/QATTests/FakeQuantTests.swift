import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// ULQ (activations) and ARQ / LSQ (weights) fake quantization: docs/ALGORITHMS.md §1 and §3.
final class FakeQuantTests: XCTestCase {

    // MARK: Helpers

    /// Records loss = Σ weights·y on `tape`, so that backward seeds dL/dy = weights.
    private func weightedSum(_ y: Variable, _ weights: [Float], tape: Tape) -> Variable {
        var total: Float = 0
        for i in 0..<weights.count { total += y.value.storage[i] * weights[i] }
        let loss = Variable(.scalar(total), requiresGrad: true)
        tape.record {
            let seed = loss.grad!.storage[0]
            y.withGradient { g in for i in 0..<g.count { g[i] += seed * weights[i] } }
        }
        return loss
    }

    /// The contract's forward written plainly: (clamp(round(x/s) + o, qmin, qmax) − o)·s.
    private func referenceQuantize(_ x: Float, scale s: Float, offset o: Int, bits: Int) -> Float {
        let (qmin, qmax) = QuantizationGrid.codeBounds(bits: bits)
        let code = min(max((x / s).rounded(.toNearestOrEven) + Float(o), Float(qmin)), Float(qmax))
        return (code - Float(o)) * s
    }

    private func randomValues(_ count: Int, bound: Float, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in (generator.nextUnitFloat() * 2 - 1) * bound }
    }

    private func quantize(_ values: [Float], _ state: ActivationQuantizerState) -> [Float] {
        ulqFakeQuantize(Variable(Tensor(shape: [values.count], storage: values)), state: state, tape: nil)
            .value.storage
    }

    // MARK: ULQ forward

    func testULQForwardHandChecked() {
        // M − m = 255/16, so s = 1/16 exactly; m/s = −64 → o = −64; L = −4, U = 11.9375.
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 11.9375, clipMin: -4)
        let x: [Float] = [-0.09375, 0.21875, 0.15625, 1.0 / 32, 12.5, -5, 11.9375, -4, 0.1]
        let y = quantize(x, state)
        XCTAssertEqual(state.scale, 0.0625)
        XCTAssertEqual(state.offset, -64)
        let q = QuantizationGrid(bits: 8, clipMax: 11.9375, clipMin: -4)
        XCTAssertEqual(q.lower, -4)
        XCTAssertEqual(q.upper, 11.9375)
        // Codes −1.5 → −2, 3.5 → 4, 2.5 → 2, 0.5 → 0 (half to even); 12.5 and −5 clip to U and L.
        XCTAssertEqual(y, [-0.125, 0.25, 0.125, 0, 11.9375, -4, 11.9375, -4, 0.125])
    }

    func testULQOffsetTieRoundsHalfToEven() {
        // m/s = −63.5 exactly, so o = round(−64.5) = −64 (half away from zero would give −65).
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 11.96875, clipMin: -3.96875)
        _ = quantize([0], state)
        XCTAssertEqual(state.scale, 0.0625)
        XCTAssertEqual(state.offset, -64)
    }

    func testULQReluLikeRangeHasOffsetMinus128() {
        let state = ActivationQuantizerState(fixedMin: true, clipMax: 15.9375, clipMin: -3)
        let y = quantize([-1, 0.03125, 0.09375, 20], state)
        XCTAssertEqual(state.offset, -128)
        XCTAssertEqual(state.scale, 0.0625)
        XCTAssertEqual(y, [0, 0, 0.125, 15.9375])
    }

    func testULQForwardMatchesContractFormulaOnRandomData() {
        let x = randomValues(5000, bound: 3, seed: 11)
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 1.7, clipMin: -0.9)
        let y = quantize(x, state)
        let s = Float(1.7 - -0.9) / 255
        XCTAssertEqual(state.scale, s)
        XCTAssertEqual(state.offset, Int((-128 - Float(-0.9) / s).rounded(.toNearestOrEven)))
        for i in 0..<x.count {
            XCTAssertEqual(y[i], referenceQuantize(x[i], scale: s, offset: state.offset, bits: 8), "at \(x[i])")
        }
    }

    func testULQTinyRangeUsesUnitScale() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 1e-6, clipMin: -1e-6)
        let y = quantize([0.4, 0.6, -3], state)
        XCTAssertEqual(state.scale, 1)
        XCTAssertEqual(state.offset, -128)
        XCTAssertEqual(y, [0, 1, 0])   // L = 0, U = 255
    }

    func testINT16UsesWiderGrid() {
        let x = randomValues(3000, bound: 4, seed: 5)
        let state = ActivationQuantizerState(fixedMin: false, numBits: 16, clipMax: 3, clipMin: -1)
        let y = quantize(x, state)
        let s = Float(4) / 65535
        let o = Int((-32768 - Float(-1) / s).rounded(.toNearestOrEven))
        XCTAssertEqual(state.scale, s)
        XCTAssertEqual(state.offset, o)
        XCTAssertEqual(state.grid.levels, 65535)
        for i in 0..<x.count {
            XCTAssertEqual(y[i], referenceQuantize(x[i], scale: s, offset: o, bits: 16), "at \(x[i])")
        }
        // Far finer than INT8: inside the range the error is at most half a step.
        XCTAssertLessThanOrEqual(abs(y[0] - min(max(x[0], -1), 3)), s)
    }

    // MARK: ULQ backward against the straight-through surrogate

    /// Checks the op's gradients against central differences, in Double, of the surrogate
    /// f(M, m, x) = Σ g·(clamp(x, m, M) + (M − m)/n · r) with rounding residuals r frozen.
    private func checkULQGradients(numBits: Int, clipMax: Float, clipMin: Float, seed: UInt64) {
        let q = QuantizationGrid(bits: numBits, clipMax: clipMax, clipMin: clipMin)
        let n = Double(q.levels)
        let s = Double(q.scale)
        // Keep points away from every boundary (m, M, L, U) so the masks cannot flip under ±h.
        let margin = Float(2 * s) + 1e-3
        let x = randomValues(400, bound: 2 * max(clipMax, -clipMin), seed: seed).filter { v in
            [clipMin, clipMax, q.lower, q.upper].allSatisfy { abs(v - $0) > margin }
        }
        let g = randomValues(x.count, bound: 1, seed: seed + 1)

        // Frozen residuals: t = x/s inside, M/s above, m/s below, as the contract defines them.
        let r: [Double] = x.map { v in
            let t = v > q.upper ? Double(clipMax) / s : v < q.lower ? Double(clipMin) / s : Double(v) / s
            return t.rounded(.toNearestOrEven) - t
        }
        func surrogate(_ M: Double, _ m: Double, _ xs: [Double]) -> Double {
            var total = 0.0
            for i in 0..<xs.count { total += Double(g[i]) * (min(max(xs[i], m), M) + (M - m) / n * r[i]) }
            return total
        }
        let (M, m) = (Double(clipMax), Double(clipMin))
        let xd = x.map(Double.init)
        let h = 1e-6

        // Closed forms in Double, and the surrogate's central differences, must agree to ~1e-5.
        var expectedMax = 0.0, expectedMin = 0.0
        var expectedX = [Double](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let (up, lo) = (xd[i] > M ? 1.0 : 0, xd[i] < m ? 1.0 : 0)
            let e = r[i] / n
            expectedMax += Double(g[i]) * (e + up)
            expectedMin += Double(g[i]) * (lo - e)
            expectedX[i] = up + lo == 0 ? Double(g[i]) : 0
        }
        let fdMax = (surrogate(M + h, m, xd) - surrogate(M - h, m, xd)) / (2 * h)
        let fdMin = (surrogate(M, m + h, xd) - surrogate(M, m - h, xd)) / (2 * h)
        XCTAssertEqual(fdMax, expectedMax, accuracy: 1e-5 * max(1, abs(expectedMax)))
        XCTAssertEqual(fdMin, expectedMin, accuracy: 1e-5 * max(1, abs(expectedMin)))
        for i in stride(from: 0, to: x.count, by: 7) {
            var plus = xd, minus = xd
            plus[i] += h; minus[i] -= h
            let fd = (surrogate(M, m, plus) - surrogate(M, m, minus)) / (2 * h)
            XCTAssertEqual(fd, expectedX[i], accuracy: 1e-5 * max(1, abs(expectedX[i])))
        }

        // The Float op against the Double closed forms.
        let state = ActivationQuantizerState(fixedMin: false, numBits: numBits, clipMax: clipMax, clipMin: clipMin)
        let input = Variable(Tensor(shape: [x.count], storage: x), requiresGrad: true)
        let tape = Tape()
        let y = ulqFakeQuantize(input, state: state, tape: tape)
        tape.backward(from: weightedSum(y, g, tape: tape))
        // Float residuals are off by about ulp(t)/n per element, far below this tolerance.
        let tolerance = 1e-6 * g.reduce(0) { $0 + Double(abs($1)) }
        XCTAssertEqual(Double(state.clipMax.grad![flat: 0]), expectedMax, accuracy: tolerance)
        XCTAssertEqual(Double(state.clipMin.grad![flat: 0]), expectedMin, accuracy: tolerance)
        if numBits == 8 {
            // The rounding-residual term must matter at this tolerance, or the check is blind to it.
            let residualTerm = zip(g, r).reduce(0.0) { $0 + Double($1.0) * $1.1 } / n
            XCTAssertGreaterThan(abs(residualTerm), 10 * tolerance)
        }
        for i in 0..<x.count {
            XCTAssertEqual(Double(input.grad![flat: i]), expectedX[i], "dL/dx at \(x[i])")
        }
        XCTAssertTrue(expectedX.contains(0) && expectedX.contains { $0 != 0 }, "test needs both regions")
    }

    func testULQGradientsMatchSurrogateINT8() {
        checkULQGradients(numBits: 8, clipMax: 1.3, clipMin: -0.7, seed: 21)
        checkULQGradients(numBits: 8, clipMax: 0.37, clipMin: -2.1, seed: 22)
    }

    func testULQGradientsMatchSurrogateINT16() {
        checkULQGradients(numBits: 16, clipMax: 2.2, clipMin: -0.45, seed: 23)
    }

    /// Several 1024-element blocks plus a ragged tail: the blocked SIMD sums must match plain
    /// Double sums, and not depend on the thread count.
    func testULQBackwardOverManyBlocksIsAccurateAndThreadIndependent() {
        let x = randomValues(5003, bound: 2, seed: 51)
        let g = randomValues(x.count, bound: 1, seed: 52)
        func gradients(threads: Int) -> (Float, Float, [Float]) {
            let saved = Parallel.threads
            Parallel.threads = threads
            defer { Parallel.threads = saved }
            let state = ActivationQuantizerState(fixedMin: false, clipMax: 1.1, clipMin: -0.6)
            let input = Variable(Tensor(shape: [x.count], storage: x), requiresGrad: true)
            let tape = Tape()
            let y = ulqFakeQuantize(input, state: state, tape: tape)
            tape.backward(from: weightedSum(y, g, tape: tape))
            return (state.clipMax.grad![flat: 0], state.clipMin.grad![flat: 0], input.grad!.storage)
        }
        let one = gradients(threads: 1), two = gradients(threads: 2)
        XCTAssertEqual(one.0, two.0)
        XCTAssertEqual(one.1, two.1)
        XCTAssertEqual(one.2, two.2)

        let q = QuantizationGrid(bits: 8, clipMax: 1.1, clipMin: -0.6)
        var dMax = 0.0, dMin = 0.0
        for i in 0..<x.count {
            let (up, lo) = (x[i] > q.upper, x[i] < q.lower)
            let t = up ? Float(1.1) / q.scale : lo ? Float(-0.6) / q.scale : x[i] / q.scale
            let e = Double(t.rounded(.toNearestOrEven) - t) / 255
            dMax += Double(g[i]) * (e + (up ? 1 : 0))
            dMin += Double(g[i]) * ((lo ? 1 : 0) - e)
            XCTAssertEqual(one.2[i], up || lo ? 0 : g[i])
        }
        let tolerance = 1e-6 * g.reduce(0) { $0 + Double(abs($1)) }
        XCTAssertEqual(Double(one.0), dMax, accuracy: tolerance)
        XCTAssertEqual(Double(one.1), dMin, accuracy: tolerance)
    }

    func testULQBoundaryEqualityIsInside() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 11.9375, clipMin: -4)
        let input = Variable(Tensor(shape: [4], storage: [-4, 11.9375, -4.0625, 12]), requiresGrad: true)
        let tape = Tape()
        let y = ulqFakeQuantize(input, state: state, tape: tape)
        tape.backward(from: weightedSum(y, [1, 1, 1, 1], tape: tape))
        XCTAssertEqual(input.grad!.storage, [1, 1, 0, 0])
        // Residuals here are all 0 (on-grid points and M/s, m/s integers): dM = #up, dm = #lo.
        XCTAssertEqual(state.clipMax.grad![flat: 0], 1)
        XCTAssertEqual(state.clipMin.grad![flat: 0], 1)
    }

    func testULQClipGradientsHandChecked() {
        // s = 1/16, o = −64. Forty inside points at codes k + 0.25 (residual −0.25 each), one
        // point above U (M/s = 191, residual 0): dM = 1 − 40·0.25/255, dm = 40·0.25/255.
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 11.9375, clipMin: -4)
        let x = (0..<40).map { (Float($0) + 0.25) / 16 } + [13]
        let input = Variable(Tensor(shape: [x.count], storage: x), requiresGrad: true)
        let tape = Tape()
        let y = ulqFakeQuantize(input, state: state, tape: tape)
        tape.backward(from: weightedSum(y, [Float](repeating: 1, count: x.count), tape: tape))
        XCTAssertEqual(state.clipMax.grad![flat: 0], 1 - 10.0 / 255, accuracy: 1e-6)
        XCTAssertEqual(state.clipMin.grad![flat: 0], 10.0 / 255, accuracy: 1e-6)
        XCTAssertEqual(input.grad!.storage, [Float](repeating: 1, count: 40) + [0])
    }

    func testULQGradientScaleIsOptIn() {
        func clipGradient(scale: Float?) -> Float {
            let state = ActivationQuantizerState(fixedMin: false, clipMax: 1, clipMin: -1)
            state.gradientScale = scale
            let input = Variable(Tensor(shape: [3], storage: [2, 0.3, -3]))
            let tape = Tape()
            let y = ulqFakeQuantize(input, state: state, tape: tape)
            tape.backward(from: weightedSum(y, [1, 1, 1], tape: tape))
            XCTAssertNil(input.grad, "data input needs no gradient")
            return state.clipMax.grad![flat: 0]
        }
        let plain = clipGradient(scale: nil)
        XCTAssertNotEqual(plain, 0)
        XCTAssertEqual(clipGradient(scale: 0.25), plain * 0.25, accuracy: 1e-7)
    }

    // MARK: ULQ validity, rollback and fixed_min

    private func clipPair(_ state: ActivationQuantizerState) -> (Float, Float) {
        (state.clipMax.value[flat: 0], state.clipMin.value[flat: 0])
    }

    func testRollbackWhenMaxNotAboveMin() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 2, clipMin: -1)
        _ = quantize([0], state)
        state.clipMax.value[flat: 0] = -0.5
        state.clipMin.value[flat: 0] = 0.3
        _ = quantize([0], state)
        XCTAssertTrue(clipPair(state) == (2, -1))
        XCTAssertEqual(state.scale, 3 / 255)
    }

    func testRollbackOfNegativeMaxOnly() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 2, clipMin: -1)
        _ = quantize([0], state)
        state.clipMax.value[flat: 0] = -0.2
        state.clipMin.value[flat: 0] = -0.8
        _ = quantize([0], state)
        XCTAssertTrue(clipPair(state) == (2, -0.8))
        XCTAssertTrue((state.previousClipMax, state.previousClipMin) == (2, -0.8))
    }

    func testRollbackOfPositiveMinOnly() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 2, clipMin: -1)
        _ = quantize([0], state)
        state.clipMax.value[flat: 0] = 3
        state.clipMin.value[flat: 0] = 0.4
        _ = quantize([0], state)
        XCTAssertTrue(clipPair(state) == (3, -1))
    }

    func testRollbackOfNaN() {
        let state = ActivationQuantizerState(fixedMin: false, clipMax: 2, clipMin: -1)
        state.clipMax.value[flat: 0] = .nan
        _ = quantize([0], state)
        XCTAssertTrue(clipPair(state) == (2, -1))
    }

    func testNoValidPairFallsBackToBatchMinMax() {
        // Bounds given but invalid, and no valid pair ever seen: the batch decides.
        let state = ActivationQuantizerState(fixedMin: false, clipMax: -1, clipMin: 2)
        XCTAssertFalse(state.hasValidPreviousPair)
        _ = quantize([-0.5, 0.25, 1.5], state)
        XCTAssertTrue(clipPair(state) == (1.5, -0.5))
        XCTAssertTrue(state.hasValidPreviousPair)

        // Only M invalid: M comes from the batch, m is kept.
        let partial = ActivationQuantizerState(fixedMin: false)
        partial.initialized = true
        partial.clipMax.value[flat: 0] = -0.1
        partial.clipMin.value[flat: 0] = -0.25
        _ = quantize([-2, 0.75], partial)
        XCTAssertTrue(clipPair(partial) == (0.75, -0.25))
    }

    func testUninitializedStateUsesEachBatch() {
        let state = ActivationQuantizerState(fixedMin: false)
        _ = quantize([-1, 3], state)
        XCTAssertTrue(clipPair(state) == (3, -1))
        _ = quantize([-0.5, 0.5], state)
        XCTAssertTrue(clipPair(state) == (0.5, -0.5))
        XCTAssertFalse(state.initialized)
        // All-positive batch: m' = min(m, 0) = 0 keeps 0 on the grid.
        _ = quantize([1, 2], state)
        XCTAssertTrue(clipPair(state) == (2, 0))
    }

    func testFixedMinComputesGradientButResetsMin() {
        let state = ActivationQuantizerState(fixedMin: true, clipMax: 2, clipMin: -1)
        let input = Variable(Tensor(shape: [3], storage: [-0.5, -0.25, 1]), requiresGrad: true)
        let tape = Tape()
        let y = ulqFakeQuantize(input, state: state, tape: tape)
        XCTAssertEqual(state.clipMin.value[flat: 0], 0, "fixed_min pins m to 0")
        tape.backward(from: weightedSum(y, [1, 1, 1], tape: tape))
        let gradient = state.clipMin.grad![flat: 0]
        XCTAssertGreaterThan(gradient, 1.9, "two elements below L = 0 each add about 1")

        // An optimizer step moves m, and the next forward puts it back to 0.
        state.clipMin.value[flat: 0] -= 0.1 * gradient
        XCTAssertNotEqual(state.clipMin.value[flat: 0], 0)
        _ = quantize([0.5], state)
        XCTAssertEqual(state.clipMin.value[flat: 0], 0)
        XCTAssertEqual(state.offset, -128)
    }

    // MARK: ARQ

    func testARQPerChannelUses128Or127() {
        // Row 0: |min| > |max| → D = 128, s = 1/128 (exact). Row 1: |max| wins → D = 127.
        // Row 2: |max| == |min| → D = 127. Row 3: all zero → s = 1.
        let w: [Float] = [0.5, -1.0, 3.0 / 256, 5.0 / 256, -3.0 / 256, 0.25,
                          1.27, -0.3, 0.6, 0, 0, 0,
                          1.27, -1.27, 0, 0, 0, 0,
                          0, 0, 0, 0, 0, 0]
        let weight = Variable(Tensor(shape: [4, 2, 3], storage: w), requiresGrad: true)
        let state = WeightQuantizerState(weightShape: [4, 2, 3], channelWise: true)
        let tape = Tape()
        let y = weightFakeQuantize(weight, state: state, tape: tape)
        XCTAssertEqual(state.scales, [1.0 / 128, Float(1.27) / 127, Float(1.27) / 127, 1])
        // Ties: 1.5 → 2, 2.5 → 2, −1.5 → −2 codes of 1/128.
        XCTAssertEqual(Array(y.value.storage[0..<6]), [0.5, -1.0, 2.0 / 128, 2.0 / 128, -2.0 / 128, 0.25])
        for i in 6..<24 {
            let s = state.scales[i / 6]
            let expected = min(max((w[i] / s).rounded(.toNearestOrEven), -128), 127) * s
            XCTAssertEqual(y.value.storage[i], expected)
        }
        // Straight-through: the upstream gradient passes unchanged.
        let g = randomValues(24, bound: 1, seed: 3)
        tape.backward(from: weightedSum(y, g, tape: tape))
        XCTAssertEqual(weight.grad!.storage, g)
    }

    func testARQClampsCode128AndStraightThroughEvenThere() {
        // s = 1/128; 0.998·128 = 127.74 rounds to 128, which clamps to 127.
        let weight = Variable(Tensor(shape: [1, 2], storage: [-1, 0.998]), requiresGrad: true)
        let state = WeightQuantizerState(weightShape: [1, 2], channelWise: true)
        let tape = Tape()
        let y = arqFakeQuantize(weight, state: state, tape: tape)
        XCTAssertEqual(y.value.storage, [-1, 127.0 / 128])
        tape.backward(from: weightedSum(y, [2, 3], tape: tape))
        XCTAssertEqual(weight.grad!.storage, [2, 3])
    }

    func testARQPerTensorUsesOneScale() {
        let w: [Float] = [0.5, -1.0, 0.25, 1.27, -0.3, 0.6]
        let state = WeightQuantizerState(weightShape: [2, 3], channelWise: false)
        let y = weightFakeQuantize(Variable(Tensor(shape: [2, 3], storage: w)), state: state, tape: nil)
        let s = Float(1.27) / 127   // max |w| is the positive 1.27
        XCTAssertEqual(state.scales, [s])
        XCTAssertEqual(y.value.storage, w.map { min(max(($0 / s).rounded(.toNearestOrEven), -128), 127) * s })
        // Per channel the first row would have used 1/128 instead.
        XCTAssertEqual(arqScales(Tensor(shape: [2, 3], storage: w), rows: 2), [1.0 / 128, s])
    }

    func testARQRecomputesScalesEveryForward() {
        let weight = Variable(Tensor(shape: [1, 2], storage: [1.27, 0]))
        let state = WeightQuantizerState(weightShape: [1, 2], channelWise: true)
        _ = arqFakeQuantize(weight, state: state, tape: nil)
        weight.value.storage[0] = 2.54
        _ = arqFakeQuantize(weight, state: state, tape: nil)
        XCTAssertEqual(state.scales, [Float(2.54) / 127])
    }

    // MARK: LSQ (ulq_retrain)

    func testLSQStartsFromARQAndResetsBadScales() {
        let w = Tensor(shape: [2, 2], storage: [0.5, -1, 1.27, 0.3])
        let state = WeightQuantizerState(weightShape: [2, 2], channelWise: true, algorithm: .lsq)
        let weight = Variable(w, requiresGrad: true)
        _ = weightFakeQuantize(weight, state: state, tape: nil)
        XCTAssertTrue(state.initialized)
        XCTAssertEqual(state.learnedScales!.value.storage, arqScales(w, rows: 2))
        // Learned scales persist even when ARQ would now pick something else...
        state.learnedScales!.value.storage = [0.02, 0.03]
        weight.value.storage[0] = 5
        _ = weightFakeQuantize(weight, state: state, tape: nil)
        XCTAssertEqual(state.scales, [0.02, 0.03])
        // ...but one driven negative is reset to its row's ARQ scale.
        state.learnedScales!.value.storage = [-0.01, 0.03]
        _ = weightFakeQuantize(weight, state: state, tape: nil)
        XCTAssertEqual(state.scales, [5.0 / 127, 0.03])
    }

    func testLSQScaleGradientMatchesSurrogate() {
        // Two rows; scales well below ARQ's so both tails are clipped.
        let rows = 2, rowLength = 50
        let w = randomValues(rows * rowLength, bound: 1, seed: 31)
        let g = randomValues(w.count, bound: 1, seed: 32)
        let scales: [Float] = [0.005, 0.0061]
        let state = WeightQuantizerState(weightShape: [rows, rowLength], channelWise: true, algorithm: .lsq)
        state.learnedScales!.value.storage = scales
        state.initialized = true
        let weight = Variable(Tensor(shape: [rows, rowLength], storage: w), requiresGrad: true)
        let tape = Tape()
        let y = lsqFakeQuantize(weight, state: state, tape: tape)
        tape.backward(from: weightedSum(y, g, tape: tape))

        // Surrogate per row: Σ g·s·(clamp(w/s, −128, 127) + r) with r frozen at s0 (0 outside).
        let gradScale = 1 / (Double(rowLength) * 127).squareRoot()
        var sawClipped = false
        for row in 0..<rows {
            let s0 = Double(scales[row])
            let range = (row * rowLength)..<((row + 1) * rowLength)
            let r: [Double] = range.map { i in
                let t = Double(w[i]) / s0
                return t < -128 || t > 127 ? 0 : t.rounded(.toNearestOrEven) - t
            }
            func surrogate(_ s: Double) -> Double {
                var total = 0.0
                for (k, i) in range.enumerated() {
                    total += Double(g[i]) * s * (min(max(Double(w[i]) / s, -128), 127) + r[k])
                }
                return total
            }
            let h = 1e-8
            let fd = (surrogate(s0 + h) - surrogate(s0 - h)) / (2 * h) * gradScale
            let op = Double(state.learnedScales!.grad![flat: row])
            XCTAssertEqual(op, fd, accuracy: 1e-4 * max(1, abs(fd)))
            for i in range {
                let t = w[i] / scales[row]
                let inside = t >= -128 && t <= 127
                sawClipped = sawClipped || !inside
                XCTAssertEqual(weight.grad![flat: i], inside ? g[i] : 0)
            }
        }
        XCTAssertTrue(sawClipped, "the test needs clipped weights")
    }
}
