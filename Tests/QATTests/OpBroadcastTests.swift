import XCTest
import QAT

/// Naive numpy broadcasting in Double: both shapes aligned at the right, size-1 axes repeat.
func broadcastReference(_ a: [Double], _ aShape: [Int], _ b: [Double], _ bShape: [Int],
                        _ op: (Double, Double) -> Double) -> (shape: [Int], values: [Double]) {
    let rank = max(aShape.count, bShape.count)
    let sa = Array(repeating: 1, count: rank - aShape.count) + aShape
    let sb = Array(repeating: 1, count: rank - bShape.count) + bShape
    let shape = zip(sa, sb).map { max($0, $1) }
    let count = shape.reduce(1, *)
    var values = [Double](repeating: 0, count: count)
    for flat in 0..<count {
        var rest = flat, ia = 0, ib = 0, stepA = 1, stepB = 1
        for axis in (0..<rank).reversed() {
            let index = rest % shape[axis]
            rest /= shape[axis]
            if sa[axis] != 1 { ia += index * stepA }
            if sb[axis] != 1 { ib += index * stepB }
            stepA *= sa[axis]
            stepB *= sb[axis]
        }
        values[flat] = op(a[ia], b[ib])
    }
    return (shape, values)
}

/// add and multiply with numpy broadcasting (squeeze-and-excitation, constant operands) and concat.
final class OpBroadcastTests: XCTestCase {
    func check(_ name: String, _ aShape: [Int], _ bShape: [Int], seed: UInt64, bGradient: Bool = true,
               file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let a = randomVariable(aShape, &rng)
        let b = randomVariable(bShape, requiresGrad: bGradient, &rng)
        let isAdd = name == "add"
        let op: (Double, Double) -> Double = isAdd ? { $0 + $1 } : { $0 * $1 }
        let shape = broadcastReference(a.value.storage.map(Double.init), aShape,
                                       b.value.storage.map(Double.init), bShape, op).shape
        checkOp("\(name) \(aShape) \(bShape)", inputs: [OpInput("a", a), OpInput("b", b)], outputShape: shape,
                reference: { v in broadcastReference(v[0], aShape, v[1], bShape, op).values },
                forward: { tape in isAdd ? add(a, b, tape: tape) : multiply(a, b, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    func testAddPerChannel() { check("add", [2, 3, 4, 5], [1, 3, 1, 1], seed: 401) }
    func testAddPerSampleAndChannel() { check("add", [2, 3, 4, 5], [2, 3, 1, 1], seed: 402) }
    func testAddBroadcastOnTheLeft() { check("add", [1, 3, 1, 1], [2, 3, 4, 5], seed: 403) }
    func testAddLowerRankAndBothRepeat() { check("add", [2, 1, 4], [3, 1], seed: 404) }
    func testAddConstantOperand() { check("add", [2, 3, 2, 2], [1, 3, 2, 2], seed: 405, bGradient: false) }
    func testMultiplyPerChannel() { check("multiply", [2, 3, 4, 5], [1, 3, 1, 1], seed: 406) }
    func testMultiplySqueezeExcitation() { check("multiply", [2, 3, 4, 5], [2, 3, 1, 1], seed: 407) }
    func testMultiplySameShape() { check("multiply", [2, 3, 2, 2], [2, 3, 2, 2], seed: 408) }
    func testMultiplyBothRepeat() { check("multiply", [2, 1, 3, 1], [1, 4, 1, 5], seed: 409) }
    func testMultiplyScalarOperand() { check("multiply", [2, 3, 2, 2], [1], seed: 410) }

    /// Same shapes keep the residual add's loop: y is exactly a + b in float32.
    func testSameShapeAddIsPlainFloatSum() {
        var rng = SeededGenerator(seed: 411)
        let a = randomVariable([2, 3, 4, 4], &rng), b = randomVariable([2, 3, 4, 4], &rng)
        let y = add(a, b, tape: nil)
        XCTAssertEqual(y.value.storage, zip(a.value.storage, b.value.storage).map { $0 + $1 })
    }

    /// [2, 2] · [2, 1] by hand: each row scaled by its own factor; the factor's gradient sums the row.
    func testMultiplyHandComputed() {
        let a = Variable(Tensor(shape: [2, 2], storage: [1, 2, 3, 4]), requiresGrad: true)
        let b = Variable(Tensor(shape: [2, 1], storage: [10, -1]), requiresGrad: true)
        let tape = Tape()
        let y = multiply(a, b, tape: tape)
        XCTAssertEqual(y.value.storage, [10, 20, -3, -4])
        tape.backward(from: weightedSum(y, weights: [1, 1, 1, 1], tape: tape))
        XCTAssertEqual(a.grad!.storage, [10, 10, -1, -1])
        XCTAssertEqual(b.grad!.storage, [3, 7])
    }

    func concatReference(_ parts: [[Double]], shapes: [[Int]], axis: Int) -> [Double] {
        let outer = shapes[0][..<axis].reduce(1, *)
        var y: [Double] = []
        for o in 0..<outer {
            for (part, shape) in zip(parts, shapes) {
                let block = shape[axis...].reduce(1, *)
                y += part[(o * block)..<((o + 1) * block)]
            }
        }
        return y
    }

    func checkConcat(_ shapes: [[Int]], axis: Int, gradients: [Bool], seed: UInt64,
                     file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let xs = zip(shapes, gradients).map { randomVariable($0, requiresGrad: $1, &rng) }
        var outputShape = shapes[0]
        outputShape[axis] = shapes.reduce(0) { $0 + $1[axis] }
        checkOp("concat \(shapes) axis \(axis)", inputs: xs.enumerated().map { OpInput("x\($0.offset)", $0.element) },
                outputShape: outputShape,
                reference: { v in self.concatReference(v, shapes: shapes, axis: axis) },
                forward: { tape in concat(xs, axis: axis, tape: tape) }, seed: seed &+ 1, file: file, line: line)
    }

    func testConcatChannels() {
        checkConcat([[2, 3, 2, 2], [2, 1, 2, 2], [2, 2, 2, 2]], axis: 1, gradients: [true, true, true], seed: 412)
    }
    func testConcatOneInputWithoutGradient() {
        checkConcat([[2, 2, 3, 1], [2, 3, 3, 1]], axis: 1, gradients: [false, true], seed: 413)
    }
    func testConcatBatchAxis() { checkConcat([[1, 2, 2], [3, 2, 2]], axis: 0, gradients: [true, true], seed: 414) }
    func testConcatLastAxis() { checkConcat([[2, 2, 1], [2, 2, 3]], axis: 2, gradients: [true, true], seed: 415) }

    func testConcatHandComputed() {
        let a = Variable(Tensor(shape: [2, 1], storage: [1, 2]))
        let b = Variable(Tensor(shape: [2, 2], storage: [3, 4, 5, 6]))
        XCTAssertEqual(concat([a, b], axis: 1, tape: nil).value, Tensor(shape: [2, 3], storage: [1, 3, 4, 2, 5, 6]))
    }
}
