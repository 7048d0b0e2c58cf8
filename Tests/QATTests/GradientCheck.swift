import XCTest
import QAT

// Shared helpers for the op tests (Op*Tests.swift).
//
// Every op computes in Float32. Each test writes an independent reference forward in Double
// (naive loops, none of the op's code), and `checkOp` verifies:
//  (a) the Float forward matches the Double reference:  |y − y_ref| ≤ forwardTolerance · max(1, |y_ref|);
//  (b) the op's backward, seeded through the scalar L = Σ r ⊙ y with fixed random r, matches
//      central differences of the Double reference L with step h = 1e-6 for every element of every
//      input that requires a gradient:  |g − g_num| ≤ gradientTolerance · max(1, |g_num|);
//  (c) inputs that do not require a gradient get none (grad stays nil);
//  (d) pullbacks accumulate: every gradient is pre-filled with random values before backward, and
//      those are subtracted before comparing, so a pullback that overwrites (=) instead of adding (+=) fails.

/// One named input of an op under test.
struct OpInput {
    let name: String
    let variable: Variable
    init(_ name: String, _ variable: Variable) {
        self.name = name
        self.variable = variable
    }
}

/// What `checkOp` found, for extra assertions in the caller.
struct OpCheckResult {
    /// The op's output.
    let output: Variable
    /// The Double reference output at the same inputs.
    let reference: [Double]
    /// Largest |g − g_num| / max(1, |g_num|) per checked input name.
    let gradientErrors: [String: Double]
}

/// Test-only op: L = Σᵢ rᵢ · yᵢ (accumulated in Double). Its pullback adds r · dL into y's gradient,
/// which seeds the op under test with an arbitrary, non-uniform output gradient.
func weightedSum(_ y: Variable, weights r: [Float], tape: Tape?) -> Variable {
    precondition(r.count == y.value.count, "weightedSum: \(r.count) weights for \(y.shape)")
    var total = 0.0
    for i in 0..<r.count { total += Double(r[i]) * Double(y.value.storage[i]) }
    let out = Variable(.scalar(Float(total)), requiresGrad: tape != nil && y.requiresGrad)
    guard out.requiresGrad, let tape else { return out }
    tape.record {
        guard let gl = out.grad else { return }
        let seed = gl.storage[0]
        y.withGradient { gy in for i in 0..<gy.count { gy[i] += r[i] * seed } }
    }
    return out
}

/// Checks an op's forward against a Double reference and its backward against central differences.
///
/// - inputs: every tensor the op reads (inputs and parameters), in the order `reference` takes them.
/// - reference: the op's forward in Double, from the inputs' values (flat, row-major) to y (flat).
/// - forward: runs the op on `inputs` with the given tape; called exactly once.
@discardableResult
func checkOp(
    _ label: String,
    inputs: [OpInput],
    outputShape: [Int],
    reference: ([[Double]]) -> [Double],
    forward: (Tape) -> Variable,
    seed: UInt64 = 0x5EED,
    forwardTolerance: Double = 1e-5,
    gradientTolerance: Double = 1e-4,
    step h: Double = 1e-6,
    file: StaticString = #filePath, line: UInt = #line
) -> OpCheckResult {
    let base = inputs.map { $0.variable.value.storage.map(Double.init) }
    var prefillGenerator = SeededGenerator(seed: seed ^ 0xACC)
    var prefill: [Tensor?] = []
    for input in inputs {
        let v = input.variable
        v.grad = v.requiresGrad ? Tensor.uniform(v.shape, bound: 1, using: &prefillGenerator) : nil
        prefill.append(v.grad)
    }

    // (a) forward
    let tape = Tape()
    let y = forward(tape)
    XCTAssertEqual(y.shape, outputShape, "\(label): output shape", file: file, line: line)
    let yRef = reference(base)
    XCTAssertEqual(y.value.count, yRef.count, "\(label): output count", file: file, line: line)
    if y.value.count == yRef.count {
        var worst = 0.0, worstIndex = 0
        for i in 0..<yRef.count {
            let err = abs(Double(y.value.storage[i]) - yRef[i]) / max(1, abs(yRef[i]))
            if err > worst { worst = err; worstIndex = i }
        }
        XCTAssertLessThanOrEqual(worst, forwardTolerance,
                                 "\(label): forward y[\(worstIndex)] = \(y.value.storage[worstIndex]), reference \(yRef[worstIndex])",
                                 file: file, line: line)
    }

    // (b) backward through L = Σ r ⊙ y
    var rng = SeededGenerator(seed: seed)
    let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() * 2 - 1 }
    let anyGradient = inputs.contains { $0.variable.requiresGrad }
    XCTAssertEqual(y.requiresGrad, anyGradient, "\(label): output requiresGrad", file: file, line: line)
    let loss = weightedSum(y, weights: r, tape: tape)
    if anyGradient { tape.backward(from: loss) }
    XCTAssertEqual(tape.count, 0, "\(label): tape not emptied", file: file, line: line)

    func referenceLoss(_ values: [[Double]]) -> Double {
        let out = reference(values)
        var total = 0.0
        for i in 0..<out.count { total += Double(r[i]) * out[i] }
        return total
    }

    var errors: [String: Double] = [:]
    var values = base
    for (k, input) in inputs.enumerated() {
        let v = input.variable
        guard v.requiresGrad else {
            // (c) no gradient for inputs that do not ask for one
            XCTAssertNil(v.grad, "\(label): \(input.name) does not require a gradient but got one", file: file, line: line)
            continue
        }
        guard var grad = v.grad, let before = prefill[k], grad.count == before.count else {
            XCTFail("\(label): no gradient, or one of the wrong size, for \(input.name)", file: file, line: line)
            continue
        }
        XCTAssertEqual(grad.shape, v.shape, "\(label): gradient shape of \(input.name)", file: file, line: line)
        // What this backward added on top of the pre-filled values.
        for j in 0..<grad.count { grad.storage[j] -= before.storage[j] }
        var worst = 0.0, worstIndex = 0, worstNumeric = 0.0, largest = 0.0
        for j in 0..<base[k].count {
            let original = values[k][j]
            values[k][j] = original + h
            let plus = referenceLoss(values)
            values[k][j] = original - h
            let minus = referenceLoss(values)
            values[k][j] = original
            let numeric = (plus - minus) / (2 * h)
            largest = max(largest, abs(numeric))
            let err = abs(Double(grad.storage[j]) - numeric) / max(1, abs(numeric))
            if err > worst { worst = err; worstIndex = j; worstNumeric = numeric }
        }
        errors[input.name] = worst
        XCTAssertLessThanOrEqual(worst, gradientTolerance,
                                 "\(label): d L / d \(input.name)[\(worstIndex)] = \(grad.storage[worstIndex]), central difference \(worstNumeric)",
                                 file: file, line: line)
        // Guard against a vacuous pass: the gradient being checked is not all zeros.
        XCTAssertGreaterThan(largest, 1e-3, "\(label): gradient of \(input.name) is (almost) zero; the check proves little",
                             file: file, line: line)
    }
    return OpCheckResult(output: y, reference: yRef, gradientErrors: errors)
}

// MARK: - Deterministic inputs

/// A tensor of uniform values in [-bound, bound) from `rng`, as a Variable.
func randomVariable(_ shape: [Int], bound: Float = 1, requiresGrad: Bool = true,
                    _ rng: inout SeededGenerator) -> Variable {
    Variable(.uniform(shape, bound: bound, using: &rng), requiresGrad: requiresGrad)
}

/// Values whose magnitudes are at least `gap` (for ops with a kink at 0, such as ReLU).
func awayFromZero(_ shape: [Int], gap: Float, bound: Float = 1, _ rng: inout SeededGenerator) -> Tensor {
    var t = Tensor(shape: shape)
    for i in 0..<t.count {
        let magnitude = gap + rng.nextUnitFloat() * (bound - gap)
        t.storage[i] = rng.next() & 1 == 0 ? magnitude : -magnitude
    }
    return t
}

/// Pairwise-distinct values spaced at least `spacing` apart, in random order (no ties for max pooling).
func distinctValues(_ shape: [Int], spacing: Float = 0.05, _ rng: inout SeededGenerator) -> Tensor {
    let count = shape.reduce(1, *)
    let order = rng.permutation(count)
    return Tensor(shape: shape, storage: order.map { (Float($0) - Float(count) / 2) * spacing })
}

/// The flat row-major index of [a, b, c, d] in a 4-D shape.
@inline(__always)
func index4(_ shape: [Int], _ a: Int, _ b: Int, _ c: Int, _ d: Int) -> Int {
    ((a * shape[1] + b) * shape[2] + c) * shape[3] + d
}

/// Asserts two float arrays agree elementwise within `tolerance` (absolute).
func assertClose(_ actual: [Float], _ expected: [Double], tolerance: Double = 1e-5, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(message): count", file: file, line: line)
    guard actual.count == expected.count else { return }
    for i in 0..<actual.count where abs(Double(actual[i]) - expected[i]) > tolerance {
        XCTFail("\(message): [\(i)] = \(actual[i]), expected \(expected[i])", file: file, line: line)
        return
    }
}
