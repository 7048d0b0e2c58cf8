import XCTest
import CKernels
import QAT

/// Output length of a sliding window, written out independently of the op (PyTorch/ONNX rule):
/// floor or ceil of (in + pads − kernel) / stride, plus 1; in ceil mode a last window starting
/// past the input and the begin padding is dropped.
private func windows(_ input: Int, _ kernel: Int, _ stride: Int, _ begin: Int, _ end: Int, ceil: Bool) -> Int {
    let span = Double(input + begin + end - kernel) / Double(stride)
    var count = Int(ceil ? span.rounded(.up) : span.rounded(.down)) + 1
    if ceil && (count - 1) * stride >= input + begin { count -= 1 }
    return count
}

/// Naive Double pooling with padding. Max over in-bounds elements (−∞ when none); average over
/// in-bounds elements divided by the window clipped to the padded extent (countIncludePad) or by
/// the number of in-bounds elements (0 when none).
func paddedPoolReference(_ x: [Double], shape: [Int], kernel: (Int, Int), stride: (Int, Int),
                         pads: (top: Int, left: Int, bottom: Int, right: Int), ceil: Bool,
                         max useMax: Bool, countIncludePad: Bool = false) -> (shape: [Int], values: [Double]) {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3])
    let oh = windows(h, kernel.0, stride.0, pads.top, pads.bottom, ceil: ceil)
    let ow = windows(w, kernel.1, stride.1, pads.left, pads.right, ceil: ceil)
    let yShape = [n, c, oh, ow]
    var y = [Double](repeating: 0, count: n * c * oh * ow)
    for b in 0..<n {
        for ch in 0..<c {
            for i in 0..<oh {
                for j in 0..<ow {
                    let (r0, c0) = (i * stride.0 - pads.top, j * stride.1 - pads.left)
                    var best = -Double.infinity, sum = 0.0, inside = 0, padded = 0
                    for r in r0..<(r0 + kernel.0) {
                        for col in c0..<(c0 + kernel.1) {
                            if r < h + pads.bottom && col < w + pads.right { padded += 1 }
                            guard r >= 0 && r < h && col >= 0 && col < w else { continue }
                            let v = x[index4(shape, b, ch, r, col)]
                            best = Swift.max(best, v)
                            sum += v
                            inside += 1
                        }
                    }
                    let divisor = countIncludePad ? padded : inside
                    y[index4(yShape, b, ch, i, j)] = useMax ? best : (divisor == 0 ? 0 : sum / Double(divisor))
                }
            }
        }
    }
    return (yShape, y)
}

/// Padded, rectangular, ceil-mode pooling and global average pooling.
final class OpPoolPaddedTests: XCTestCase {
    struct Case {
        var shape: [Int]
        var kernel: (Int, Int), stride: (Int, Int)
        var pads: (top: Int, left: Int, bottom: Int, right: Int)
        var ceil = false
        var countIncludePad = false
    }

    func check(max useMax: Bool, _ t: Case, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        var rng = SeededGenerator(seed: seed)
        let x = Variable(useMax ? distinctValues(t.shape, &rng) : .uniform(t.shape, bound: 1, using: &rng),
                         requiresGrad: true)
        let reference = { (v: [Double]) in
            paddedPoolReference(v, shape: t.shape, kernel: t.kernel, stride: t.stride, pads: t.pads, ceil: t.ceil,
                                max: useMax, countIncludePad: t.countIncludePad)
        }
        let kernel = Size2D(height: t.kernel.0, width: t.kernel.1)
        let stride = Size2D(height: t.stride.0, width: t.stride.1)
        let padding = Padding2D(top: t.pads.top, left: t.pads.left, bottom: t.pads.bottom, right: t.pads.right)
        checkOp("\(useMax ? "max" : "avg")Pool2d \(t)", inputs: [OpInput("x", x)],
                outputShape: reference(x.value.storage.map(Double.init)).shape,
                reference: { v in reference(v[0]).values },
                forward: { tape in
                    useMax ? maxPool2d(x, kernel: kernel, stride: stride, padding: padding, ceilMode: t.ceil, tape: tape)
                           : avgPool2d(x, kernel: kernel, stride: stride, padding: padding, ceilMode: t.ceil,
                                       countIncludePad: t.countIncludePad, tape: tape)
                },
                seed: seed &+ 1, file: file, line: line)
    }

    let asymmetric = Case(shape: [2, 2, 7, 5], kernel: (3, 2), stride: (2, 1), pads: (1, 0, 2, 1))
    /// ResNet's stem pool: 3×3, stride 2, padding 1, here with ceil mode on an even size.
    let ceilPadded = Case(shape: [1, 3, 6, 6], kernel: (3, 3), stride: (2, 2), pads: (1, 1, 1, 1), ceil: true)
    let ceilUnpadded = Case(shape: [2, 1, 5, 7], kernel: (2, 2), stride: (2, 2), pads: (0, 0, 0, 0), ceil: true)

    func testMaxPoolAsymmetricPaddingRectangular() { check(max: true, asymmetric, seed: 501) }
    func testMaxPoolCeilModePadded() { check(max: true, ceilPadded, seed: 502) }
    func testMaxPoolCeilModeUnpadded() { check(max: true, ceilUnpadded, seed: 503) }
    func testAvgPoolAsymmetricPaddingExcluded() { check(max: false, asymmetric, seed: 504) }
    func testAvgPoolAsymmetricPaddingIncluded() {
        var t = asymmetric
        t.countIncludePad = true
        check(max: false, t, seed: 505)
    }
    func testAvgPoolCeilModePaddedIncluded() {
        var t = ceilPadded
        t.countIncludePad = true
        check(max: false, t, seed: 506)
    }
    func testAvgPoolCeilModePaddedExcluded() { check(max: false, ceilPadded, seed: 507) }
    func testAvgPoolCeilModeUnpadded() { check(max: false, ceilUnpadded, seed: 508) }

    /// x = 1…9 in a 3×3 plane, 2×2 windows, stride 2, one padding row and column at the end:
    /// count_include_pad divides every window by 4 (the window fits the padded extent), excluding
    /// it divides by the 4, 2, 2 and 1 elements inside.
    func testAvgPoolPaddingHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: (1...9).map(Float.init)))
        let padding = Padding2D(top: 0, left: 0, bottom: 1, right: 1)
        let included = avgPool2d(x, kernel: Size2D(2), stride: Size2D(2), padding: padding, ceilMode: false,
                                 countIncludePad: true, tape: nil)
        let excluded = avgPool2d(x, kernel: Size2D(2), stride: Size2D(2), padding: padding, ceilMode: false,
                                 countIncludePad: false, tape: nil)
        XCTAssertEqual(included.value, Tensor(shape: [1, 1, 2, 2], storage: [3, 2.25, 3.75, 2.25]))
        XCTAssertEqual(excluded.value, Tensor(shape: [1, 1, 2, 2], storage: [3, 4.5, 7.5, 9]))
    }

    /// Ceil mode without padding: the last window hangs past the input and is clipped to it, so
    /// both divisors count only the elements inside (PyTorch: [[3, 4.5], [7.5, 9]]).
    func testAvgPoolCeilModeHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: (1...9).map(Float.init)))
        for include in [false, true] {
            let y = avgPool2d(x, kernel: Size2D(2), stride: Size2D(2), padding: Padding2D(0), ceilMode: true,
                              countIncludePad: include, tape: nil)
            XCTAssertEqual(y.value, Tensor(shape: [1, 1, 2, 2], storage: [3, 4.5, 7.5, 9]), "include \(include)")
        }
    }

    /// 3×3 input, 1×1 window, stride 2, one padding row and column at the end: ceil mode would give
    /// 3 windows a side, but the third starts in the end padding and is dropped.
    func testCeilModeDropsAWindowStartingInTheEndPadding() {
        let x = Variable(Tensor(shape: [1, 1, 3, 3], storage: (1...9).map(Float.init)))
        let y = maxPool2d(x, kernel: Size2D(1), stride: Size2D(2), padding: Padding2D(top: 0, left: 0, bottom: 1, right: 1),
                          ceilMode: true, tape: nil)
        XCTAssertEqual(y.value, Tensor(shape: [1, 1, 2, 2], storage: [1, 3, 7, 9]))
    }

    /// Windows wholly in the padding: max gives −∞, average 0, and neither passes a gradient.
    func testWindowsOutsideTheInput() {
        let x = Variable(Tensor(shape: [1, 1, 1, 1], storage: [5]), requiresGrad: true)
        let tape = Tape()
        let y = maxPool2d(x, kernel: Size2D(1), stride: Size2D(1), padding: Padding2D(1), ceilMode: false, tape: tape)
        let inf = -Float.infinity
        XCTAssertEqual(y.value, Tensor(shape: [1, 1, 3, 3], storage: [inf, inf, inf, inf, 5, inf, inf, inf, inf]))
        tape.backward(from: weightedSum(y, weights: (1...9).map(Float.init), tape: tape))
        XCTAssertEqual(x.grad!.storage, [5])
        for include in [false, true] {
            let avg = avgPool2d(x, kernel: Size2D(1), stride: Size2D(1), padding: Padding2D(1), ceilMode: false,
                                countIncludePad: include, tape: nil)
            XCTAssertEqual(avg.value, Tensor(shape: [1, 1, 3, 3], storage: [0, 0, 0, 0, 5, 0, 0, 0, 0]))
        }
    }

    /// A NaN anywhere in a padded window wins and takes the gradient (the rule of §6.2); the
    /// average of a window holding it is NaN too.
    func testNaNPropagatesThroughPaddedPools() {
        for position in 0..<4 {
            var values: [Float] = [1, 5, 3, 2]
            values[position] = .nan
            let x = Variable(Tensor(shape: [1, 1, 2, 2], storage: values), requiresGrad: true)
            let tape = Tape()
            let y = maxPool2d(x, kernel: Size2D(3), stride: Size2D(3), padding: Padding2D(top: 1, left: 1, bottom: 0, right: 0),
                              ceilMode: false, tape: tape)
            XCTAssertEqual(y.shape, [1, 1, 1, 1])
            XCTAssertTrue(y.value.storage[0].isNaN, "NaN at \(position)")
            tape.backward(from: weightedSum(y, weights: [1], tape: tape))
            XCTAssertEqual(x.grad!.storage, (0..<4).map { $0 == position ? 1 : 0 }, "NaN at \(position)")
            let avg = avgPool2d(x, kernel: Size2D(3), stride: Size2D(3), padding: Padding2D(top: 1, left: 1, bottom: 0, right: 0),
                                ceilMode: false, countIncludePad: true, tape: nil)
            XCTAssertTrue(avg.value.storage[0].isNaN)
        }
    }

    /// Square windows without padding go to Pool.swift's loops: identical bytes, values and gradients.
    func testUnpaddedSquareMatchesOriginalPools() {
        var rng = SeededGenerator(seed: 509)
        let x = randomVariable([2, 3, 6, 7], &rng)
        for (k, s) in [(2, 2), (3, 1), (3, 2)] {
            let newMax = maxPool2d(x, kernel: Size2D(k), stride: Size2D(s), padding: Padding2D(0), ceilMode: false, tape: nil)
            XCTAssertEqual(newMax.value, maxPool2d(x, kernel: k, stride: s, tape: nil).value)
            for include in [false, true] {
                let newAvg = avgPool2d(x, kernel: Size2D(k), stride: Size2D(s), padding: Padding2D(0), ceilMode: false,
                                       countIncludePad: include, tape: nil)
                XCTAssertEqual(newAvg.value, avgPool2d(x, kernel: k, stride: s, tape: nil).value)
            }
        }
    }

    /// The AVX-512 and AVX2 lanes (those this CPU has) against the scalar window scan: the same
    /// values and the same argmax (so gradients), with ties, NaN, ±∞ and ±0 in the data, on
    /// geometries whose left windows lose 1 or 2 columns.
    func testVectorLanesMatchTheScalarScan() throws {
        defer { _ = qat_maxpool_limit_lanes(16) }
        let lanesAvailable = qat_maxpool_limit_lanes(16)
        try XCTSkipIf(lanesAvailable == 1, "no AVX2 on this CPU: the scalar scan is the only path")
        let special: [Float] = [.nan, .infinity, -.infinity, 0, -0.0, 1, 1, 1]
        let cases: [(shape: [Int], kernel: Size2D, stride: Size2D, padding: Padding2D, ceil: Bool)] = [
            ([2, 3, 28, 28], Size2D(3), Size2D(2), Padding2D(1), false),   // resnet18-tiny's stem pool
            ([1, 2, 9, 37], Size2D(3), Size2D(1), Padding2D(1), false),
            ([2, 2, 11, 40], Size2D(5), Size2D(2), Padding2D(2), true),
            ([1, 3, 7, 19], Size2D(height: 2, width: 5), Size2D(height: 1, width: 2),
             Padding2D(top: 1, left: 2, bottom: 0, right: 1), false),
            ([1, 1, 5, 33], Size2D(4), Size2D(1), Padding2D(top: 0, left: 3, bottom: 2, right: 0), true),
        ]
        for (index, c) in cases.enumerated() {
            func run(lanes: Int32) -> [[UInt32]] {
                XCTAssertEqual(qat_maxpool_limit_lanes(lanes), lanes)
                var rng = SeededGenerator(seed: 520 + UInt64(index))
                let count = c.shape.reduce(1, *)
                // Few distinct values, so windows hold ties; some special values among them.
                let values = (0..<count).map { i -> Float in
                    i % 23 == 0 ? special[(i / 23) % special.count] : Float(Int(rng.nextUnitFloat() * 5)) - 2
                }
                let x = Variable(Tensor(shape: c.shape, storage: values), requiresGrad: true)
                let tape = Tape()
                let y = maxPool2d(x, kernel: c.kernel, stride: c.stride, padding: c.padding, ceilMode: c.ceil, tape: tape)
                tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { Float($0 % 7) + 0.5 }, tape: tape))
                return [y.value.storage.map(\.bitPattern), x.grad!.storage.map(\.bitPattern)]
            }
            let scalar = run(lanes: 1)
            for lanes: Int32 in [8, 16] where lanesAvailable >= lanes {
                XCTAssertEqual(run(lanes: lanes), scalar, "\(lanes) lanes, case \(index) \(c.shape)")
            }
        }
    }

    /// The padded loops are split over planes; 1 and 2 threads give identical bytes.
    func testThreadsGiveIdenticalResults() {
        func run() -> [[Float]] {
            var rng = SeededGenerator(seed: 510)
            let x = randomVariable([4, 8, 7, 6], &rng)
            let tape = Tape()
            let a = maxPool2d(x, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: true, tape: tape)
            let b = avgPool2d(x, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: true,
                              countIncludePad: false, tape: tape)
            let y = add(a, b, tape: tape)
            tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { _ in rng.nextUnitFloat() }, tape: tape))
            return [y.value.storage, x.grad!.storage]
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 1
        let single = run()
        Parallel.threads = 2
        XCTAssertEqual(single, run())
    }

    func testGlobalAveragePool() {
        var rng = SeededGenerator(seed: 511)
        let shape = [2, 3, 4, 5]
        let x = randomVariable(shape, &rng)
        checkOp("globalAveragePool", inputs: [OpInput("x", x)], outputShape: [2, 3, 1, 1],
                reference: { v in (0..<6).map { p in v[0][(p * 20)..<((p + 1) * 20)].reduce(0, +) / 20 } },
                forward: { tape in globalAveragePool(x, tape: tape) }, seed: 512)
    }

    func testGlobalAveragePoolHandComputed() {
        let x = Variable(Tensor(shape: [1, 2, 2, 2], storage: [1, 2, 3, 6, -1, -1, -1, -1]))
        XCTAssertEqual(globalAveragePool(x, tape: nil).value, Tensor(shape: [1, 2, 1, 1], storage: [3, -1]))
    }
}
