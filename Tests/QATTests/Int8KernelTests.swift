import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// INT8 kernels: the three code paths agree bit for bit, conv/linear equal an independent
/// reference of the integer arithmetic, and the rounding and saturation rules hold by hand.
final class Int8KernelTests: XCTestCase {
    typealias Path = Int8Kernels.Path

    // MARK: Random layers

    struct ConvCase {
        var geometry: ConvGeometry
        var x: [Int8], weights: [Int8], bias: [Int32], zero: Int8
        var requantization: Int8Kernels.Requantization
        var scales: [Float]
    }

    func randomCodes(_ count: Int, _ rng: inout SeededGenerator) -> [Int8] {
        (0..<count).map { _ in Int8.random(in: -128...127, using: &rng) }
    }

    func randomConv(channels: Int, outputChannels: Int, size: (Int, Int), kernel: Int, stride: Int,
                    padding: Int, batch: Int, _ rng: inout SeededGenerator) -> ConvCase {
        let g = ConvGeometry(batch: batch, channels: channels, height: size.0, width: size.1,
                             outputChannels: outputChannels, kernel: kernel, stride: stride, padding: padding)
        // Accumulators spread about √K·5500; these multipliers and biases keep most codes unsaturated.
        let spread = Float(g.patchSize).squareRoot() * 5500
        let multipliers = (0..<outputChannels).map { _ in Float.random(in: 10...60, using: &rng) / spread }
        let biasBound = Int32(spread / 2)
        return ConvCase(geometry: g,
                        x: randomCodes(g.batch * g.channels * g.height * g.width, &rng),
                        weights: randomCodes(g.outputChannels * g.patchSize, &rng),
                        bias: (0..<outputChannels).map { _ in Int32.random(in: -biasBound...biasBound, using: &rng) },
                        zero: Int8.random(in: -128...127, using: &rng),
                        requantization: .init(multipliers: multipliers, zeroPoint: Int8.random(in: -20...20, using: &rng),
                                              relu: Bool.random(using: &rng)),
                        scales: multipliers.map { $0 * 0.37 })
    }

    /// Shapes with odd sizes: K = C·k·k of 1, 9, 27, 75, 175, 63…; channels 1, 3, 7; padding 0–2; stride 1–2.
    func convCases() -> [ConvCase] {
        var rng = SeededGenerator(seed: 8)
        var cases: [ConvCase] = []
        for channels in [1, 3, 7] {
            for (kernel, padding) in [(1, 0), (3, 1), (5, 2), (3, 0), (5, 1)] {
                for stride in [1, 2] {
                    let outputs = [1, 3, 7, 16][cases.count % 4]
                    let size = [(9, 9), (13, 6), (28, 28), (5, 17)][(cases.count / 4) % 4]
                    guard size.0 + 2 * padding >= kernel, size.1 + 2 * padding >= kernel else { continue }
                    cases.append(randomConv(channels: channels, outputChannels: outputs, size: size, kernel: kernel,
                                            stride: stride, padding: padding, batch: 1 + cases.count % 3, &rng))
                }
            }
        }
        return cases
    }

    struct LinearCase {
        var x: [Int8], batch: Int, weights: [Int8], bias: [Int32], zero: Int8
        var requantization: Int8Kernels.Requantization
        var scales: [Float]
    }

    func linearCases() -> [LinearCase] {
        var rng = SeededGenerator(seed: 9)
        return [(1, 1, 1), (3, 5, 7), (17, 67, 10), (33, 400, 120), (16, 120, 84), (5, 64, 3), (64, 84, 10)].map {
            batch, inputs, outputs in
            let spread = Float(inputs).squareRoot() * 5500
            let multipliers = (0..<outputs).map { _ in Float.random(in: 10...60, using: &rng) / spread }
            let biasBound = Int32(spread / 2)
            return LinearCase(x: randomCodes(batch * inputs, &rng), batch: batch,
                              weights: randomCodes(outputs * inputs, &rng),
                              bias: (0..<outputs).map { _ in Int32.random(in: -biasBound...biasBound, using: &rng) },
                              zero: Int8.random(in: -128...127, using: &rng),
                              requantization: .init(multipliers: multipliers, zeroPoint: -3, relu: Bool.random(using: &rng)),
                              scales: multipliers)
        }
    }

    // MARK: (a) the paths agree bit for bit

    func assertAgreesWithPortable(_ path: Path) throws {
        guard Int8Kernels.isSupported(path) else { throw XCTSkip("this CPU cannot run the \(path) path") }
        for c in convCases() {
            let g = c.geometry
            XCTAssertEqual(Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, path: path),
                           Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, path: .portable),
                           "accumulators \(g)")
            XCTAssertEqual(Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                              requantize: c.requantization, path: path),
                           Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                              requantize: c.requantization, path: .portable), "codes \(g)")
            let a = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  scales: c.scales, path: path)
            let b = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  scales: c.scales, path: .portable)
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "floats \(g)")
        }
        for l in linearCases() {
            XCTAssertEqual(Int8Kernels.linearAccumulators(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias, path: path),
                           Int8Kernels.linearAccumulators(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias, path: .portable))
            XCTAssertEqual(Int8Kernels.linear(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias,
                                              requantize: l.requantization, path: path),
                           Int8Kernels.linear(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias,
                                              requantize: l.requantization, path: .portable))
            let a = Int8Kernels.linearDequantized(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias,
                                                  scales: l.scales, path: path)
            let b = Int8Kernels.linearDequantized(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias,
                                                  scales: l.scales, path: .portable)
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern))
        }

        // Element-wise kernels, on sizes that leave vector tails, with many exact ties.
        var rng = SeededGenerator(seed: 10)
        let acc = (0..<1003).map { i in i % 5 == 0 ? Int32.random(in: Int32.min...Int32.max, using: &rng)
                                                   : Int32.random(in: -3000...3000, using: &rng) }
        for relu in [false, true] {
            let r = Int8Kernels.Requantization(multipliers: [0.5, 0.25, 0.0371, 1e-7], zeroPoint: 5, relu: relu)
            XCTAssertEqual(Int8Kernels.requantize(Array(acc[..<1000]), channels: 4, planeSize: 25, r, path: path),
                           Int8Kernels.requantize(Array(acc[..<1000]), channels: 4, planeSize: 25, r, path: .portable))
        }
        let codes = randomCodes(1003, &rng), others = randomCodes(1003, &rng)
        let planes = Array(codes[..<(3 * 17 * 11)])
        for (kernel, stride) in [(3, 2), (2, 2), (2, 1)] {  // 2×2/2 has its own loop
            XCTAssertEqual(Int8Kernels.maxPool2d(planes, planes: 3, height: 17, width: 11, kernel: kernel, stride: stride, path: path),
                           Int8Kernels.maxPool2d(planes, planes: 3, height: 17, width: 11, kernel: kernel, stride: stride, path: .portable))
        }
        let qa = QuantizationGrid(bits: 8, scale: 0.5, offset: 3), qb = QuantizationGrid(bits: 8, scale: 0.031, offset: -7)
        for relu in [false, true] {
            XCTAssertEqual(Int8Kernels.add(codes, qa, others, qb, output: QuantizationGrid(bits: 8, scale: 0.75, offset: -2), relu: relu, path: path),
                           Int8Kernels.add(codes, qa, others, qb, output: QuantizationGrid(bits: 8, scale: 0.75, offset: -2), relu: relu, path: .portable))
        }
        var floats: [Float] = (0..<1003).map { (i: Int) -> Float in
            i % 3 == 0 ? Float(i % 200 - 100) * 0.25 : Float.random(in: -90...90, using: &rng)
        }
        floats += [.nan, .infinity, -.infinity, 1e30]
        XCTAssertEqual(Int8Kernels.quantize(floats, qa, path: path), Int8Kernels.quantize(floats, qa, path: .portable))
        XCTAssertEqual(Int8Kernels.dequantize(codes, qb, path: path).map(\.bitPattern),
                       Int8Kernels.dequantize(codes, qb, path: .portable).map(\.bitPattern))
    }

    func testAVX2PathMatchesPortable() throws { try assertAgreesWithPortable(.avx2) }
    func testVNNIPathMatchesPortable() throws { try assertAgreesWithPortable(.vnni) }

    // MARK: (b) conv and linear equal an independent reference

    /// The integer arithmetic of docs/ALGORITHMS.md §5 written out directly, accumulated in Double
    /// (exact at these sizes): padding taps are skipped, i.e. contribute (o_d − o_d)·w = 0.
    func referenceConv(_ c: ConvCase) -> [Double] {
        let g = c.geometry
        var out: [Double] = []
        for n in 0..<g.batch {
            for o in 0..<g.outputChannels {
                for oy in 0..<g.outputHeight {
                    for ox in 0..<g.outputWidth {
                        var acc = Double(c.bias[o])
                        for ci in 0..<g.channels {
                            for ky in 0..<g.kernel {
                                for kx in 0..<g.kernel {
                                    let y = oy * g.stride + ky - g.padding, x = ox * g.stride + kx - g.padding
                                    guard y >= 0, y < g.height, x >= 0, x < g.width else { continue }
                                    let q = c.x[((n * g.channels + ci) * g.height + y) * g.width + x]
                                    let w = c.weights[((o * g.channels + ci) * g.kernel + ky) * g.kernel + kx]
                                    acc += Double(Int(q) - Int(c.zero)) * Double(w)
                                }
                            }
                        }
                        out.append(acc)
                    }
                }
            }
        }
        return out
    }

    /// Requantization as the fake-quant simulation does it, in Swift Float.
    func referenceRequantize(_ acc: Double, multiplier: Float, _ r: Int8Kernels.Requantization) -> Int8 {
        let rounded = (Float(acc) * multiplier).rounded(.toNearestOrEven)
        let lower = r.relu ? Float(r.zeroPoint) : -128
        return Int8(min(max(rounded + Float(r.zeroPoint), lower), 127))
    }

    /// Counts codes strictly between the clamp bounds. Across all cases most codes must be: saturated
    /// codes would hide requantization errors (one case alone may saturate, e.g. a single channel).
    func unsaturated(_ codes: [Int8], _ r: Int8Kernels.Requantization) -> (inside: Int, total: Int) {
        let lower = r.relu ? r.zeroPoint : -128
        return (codes.filter { $0 > lower && $0 < 127 }.count, codes.count)
    }

    func testConvMatchesReference() {
        var inside = 0, total = 0
        for c in convCases() {
            let g = c.geometry, plane = g.outputHeight * g.outputWidth
            let expected = referenceConv(c)
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                let acc = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, path: path)
                XCTAssertEqual(acc.map(Double.init), expected, "\(path) \(g)")
                let codes = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                               requantize: c.requantization, path: path)
                let counts = unsaturated(codes, c.requantization)
                inside += counts.inside
                total += counts.total
                let channel = { (i: Int) in i / plane % g.outputChannels }
                XCTAssertEqual(codes, expected.indices.map {
                    referenceRequantize(expected[$0], multiplier: c.requantization.multipliers[channel($0)], c.requantization)
                }, "\(path) \(g)")
                let floats = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                           scales: c.scales, path: path)
                XCTAssertEqual(floats, expected.indices.map { Float(expected[$0]) * c.scales[channel($0)] }, "\(path) \(g)")
            }
        }
        XCTAssertGreaterThan(2 * inside, total, "test data: most codes saturate")
    }

    func testLinearMatchesReference() {
        var inside = 0, total = 0
        for l in linearCases() {
            let outputs = l.bias.count, inputs = l.x.count / l.batch
            var expected: [Double] = []
            for n in 0..<l.batch {
                for o in 0..<outputs {
                    var acc = Double(l.bias[o])
                    for i in 0..<inputs {
                        acc += Double(Int(l.x[n * inputs + i]) - Int(l.zero)) * Double(l.weights[o * inputs + i])
                    }
                    expected.append(acc)
                }
            }
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                let acc = Int8Kernels.linearAccumulators(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights,
                                                         bias: l.bias, path: path)
                XCTAssertEqual(acc.map(Double.init), expected, "\(path) \(l.batch)×\(inputs)→\(outputs)")
                let codes = Int8Kernels.linear(l.x, batch: l.batch, inputZeroPoint: l.zero, weights: l.weights, bias: l.bias,
                                               requantize: l.requantization, path: path)
                let counts = unsaturated(codes, l.requantization)
                inside += counts.inside
                total += counts.total
                XCTAssertEqual(codes, expected.indices.map {
                    referenceRequantize(expected[$0], multiplier: l.requantization.multipliers[$0 % outputs], l.requantization)
                }, "\(path)")
            }
        }
        XCTAssertGreaterThan(2 * inside, total, "test data: most codes saturate")
    }

    // MARK: (c) requantization by hand

    func testRequantizeRoundsHalfToEvenAndSaturates() {
        let acc: [Int32] = [1, 3, 5, -1, -3, -5, 7, 1000, -1000, Int32.max, Int32.min, 0]
        let plain = Int8Kernels.Requantization(multipliers: [0.5], zeroPoint: 10, relu: false)
        // 0.5→0, 1.5→2, 2.5→2, −0.5→0, −1.5→−2, −2.5→−2, 3.5→4, then +10; ±500 and beyond saturate.
        let expectedPlain: [Int8] = [10, 12, 12, 10, 8, 8, 14, 127, -128, 127, -128, 10]
        // A fused ReLU saturates below at the zero point.
        let relu = Int8Kernels.Requantization(multipliers: [0.5], zeroPoint: 10, relu: true)
        let expectedReLU: [Int8] = [10, 12, 12, 10, 10, 10, 14, 127, 10, 127, 10, 10]
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.requantize(acc, channels: 1, planeSize: acc.count, plain, path: path), expectedPlain, "\(path)")
            XCTAssertEqual(Int8Kernels.requantize(acc, channels: 1, planeSize: acc.count, relu, path: path), expectedReLU, "\(path)")
            // Per channel: [N=1, C=2, plane=2].
            let two = Int8Kernels.Requantization(multipliers: [0.5, 0.25], zeroPoint: -128, relu: true)
            XCTAssertEqual(Int8Kernels.requantize([5, 6, 10, -4], channels: 2, planeSize: 2, two, path: path),
                           [-126, -125, -126, -128], "\(path)")
            // The same ties through a fused linear: x − o_d = (0, 1), w = (3, −4), b = 9 → acc 5 → 2.5 → 2.
            let codes = Int8Kernels.linear([1, 2], batch: 1, inputZeroPoint: 1, weights: [3, -4], bias: [9],
                                           requantize: .init(multipliers: [0.5], zeroPoint: -1, relu: false), path: path)
            XCTAssertEqual(codes, [1], "\(path)")
            XCTAssertEqual(Int8Kernels.linearDequantized([1, 2], batch: 1, inputZeroPoint: 1, weights: [3, -4], bias: [9],
                                                         scales: [0.25], path: path), [1.25], "\(path)")
        }
    }

    func testConvPaddingIsRealZero() {
        // One 1×1 image of code 7 = zero point, 3×3 kernel of ones, padding 1: every tap reads real
        // zero, so the output is the bias alone.
        let g = ConvGeometry(batch: 1, channels: 1, height: 1, width: 1, outputChannels: 1, kernel: 3, stride: 1, padding: 1)
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.conv2dAccumulators([7], g, inputZeroPoint: 7, weights: Array(repeating: 1, count: 9),
                                                          bias: [-3], path: path), [-3])
            XCTAssertEqual(Int8Kernels.conv2dAccumulators([9], g, inputZeroPoint: 7, weights: Array(repeating: 1, count: 9),
                                                          bias: [-3], path: path), [-1])
        }
    }

    // MARK: (d) max pool, add, quantize, dequantize by hand

    func testMaxPoolAddQuantizeByHand() {
        let plane: [Int8] = [1, -5, 3, 2,
                             -128, 0, 4, -1,
                             7, 7, -2, -3,
                             6, 127, -4, -128]
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.maxPool2d(plane, planes: 1, height: 4, width: 4, kernel: 2, stride: 2, path: path),
                           [1, 4, 127, -2], "\(path)")
            XCTAssertEqual(Int8Kernels.maxPool2d(plane + plane.map { $0 == 127 ? -128 : $0 }, planes: 2, height: 4, width: 4,
                                                 kernel: 3, stride: 1, path: path),
                           [7, 7, 127, 127, 7, 7, 7, 7], "\(path)")

            // a: 0.5·(10 − 0) = 5, 0.5·(−128) = −64; b: 0.25·(4 − 2) = 0.5, 0.25·(0 − 2) = −0.5.
            // Sums 5.5 and −64.5 round half to even: 6 and −64; a ReLU saturates −64 at o_y = 0.
            // Third: 63.5 + 31.25 = 94.75 → 95.
            let qa = QuantizationGrid(bits: 8, scale: 0.5, offset: 0), qb = QuantizationGrid(bits: 8, scale: 0.25, offset: 2)
            XCTAssertEqual(Int8Kernels.add([10, -128, 127], qa, [4, 0, 127], qb, output: QuantizationGrid(bits: 8, scale: 1, offset: 0),
                                           relu: false, path: path), [6, -64, 95], "\(path)")
            XCTAssertEqual(Int8Kernels.add([10, -128, 127], qa, [4, 0, 127], qb, output: QuantizationGrid(bits: 8, scale: 1, offset: 0),
                                           relu: true, path: path), [6, 0, 95], "\(path)")
            XCTAssertEqual(Int8Kernels.add([127], qa, [127], qb, output: QuantizationGrid(bits: 8, scale: 0.5, offset: 5),
                                           relu: false, path: path), [127], "\(path)")

            // x / 0.5: 0.5→0, 1.5→2, −0.5→0, −1.5→−2, then +3; large values saturate; NaN → zero point.
            let q = QuantizationGrid(bits: 8, scale: 0.5, offset: 3)
            XCTAssertEqual(Int8Kernels.quantize([0.25, 0.75, -0.25, -0.75, 100, -100, .nan, 62], q, path: path),
                           [3, 5, 3, 1, 127, -128, 3, 127], "\(path)")
            XCTAssertEqual(Int8Kernels.dequantize([3, 5, -128, 127], q, path: path), [0, 1, -65.5, 62], "\(path)")
        }
    }

    /// conv2dMaxPool is conv2d then maxPool2d, code for code, on every path (and the paths agree).
    func testConvMaxPoolEqualsConvThenPool() {
        for c in convCases() {
            let g = c.geometry
            for (kernel, stride) in [(2, 2), (3, 2), (2, 1)] where kernel <= g.outputHeight && kernel <= g.outputWidth {
                var results: [[Int8]] = []
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    let conv = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  requantize: c.requantization, path: path)
                    let pooled = Int8Kernels.maxPool2d(conv, planes: g.batch * g.outputChannels, height: g.outputHeight,
                                                       width: g.outputWidth, kernel: kernel, stride: stride, path: path)
                    let fused = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                          requantize: c.requantization, poolKernel: kernel, poolStride: stride,
                                                          path: path)
                    XCTAssertEqual(fused, pooled, "\(path) \(g) pool \(kernel)/\(stride)")
                    results.append(fused)
                }
                XCTAssertTrue(results.allSatisfy { $0 == results[0] }, "paths differ \(g)")
            }
        }
    }

    func testActivePathIsSupported() {
        XCTAssertTrue(Int8Kernels.isSupported(Int8Kernels.activePath))
        XCTAssertTrue(Int8Kernels.isSupported(.portable))
    }
}
