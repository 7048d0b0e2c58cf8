import XCTest
@testable import QATCore
@testable import QATDeploy

/// General INT8 convolution (Int8ConvGeometry): depthwise by the direct kernel and grouped conv by
/// im2col + GEMM per group. On every path the accumulators equal a plain Int64 reference of
/// docs/ALGORITHMS.md §5, the codes and floats equal the requantization written out in Swift
/// Float, the paths agree bit for bit, and the two algorithms agree where both apply.
final class Int8ConvTests: XCTestCase {
    typealias Path = Int8Kernels.Path

    struct Case {
        var geometry: Int8ConvGeometry
        var x: [Int8], weights: [Int8], bias: [Int32], zero: Int8
        var requantization: Int8Kernels.Requantization
        var scales: [Float], offsets: [Float]?
    }

    static func randomCodes(_ count: Int, _ rng: inout SeededGenerator) -> [Int8] {
        (0..<count).map { _ in Int8.random(in: -128...127, using: &rng) }
    }

    /// Two cases of `g` at the extremes: codes all 127 (u8 255) against weights all −128, and
    /// alternating extremes; the largest sums (near the int32 bounds the kernels rely on).
    static func extremeCases(_ g: Int8ConvGeometry, _ rng: inout SeededGenerator) -> [Case] {
        var high = randomCase(g, relu6: false, &rng)
        high.x = high.x.map { _ in 127 }
        high.weights = high.weights.map { _ in -128 }
        high.zero = -128
        var alternating = randomCase(g, relu6: false, &rng)
        alternating.x = alternating.x.indices.map { $0 % 2 == 0 ? 127 : -128 }
        alternating.weights = alternating.weights.indices.map { $0 % 3 == 0 ? 127 : -128 }
        return [high, alternating]
    }

    /// Random codes, weights and biases for `g`; half the cases carry offsets (bias residuals),
    /// and `relu6` fuses a ReLU6 (lower bound o_y, upper bound the code of 6).
    static func randomCase(_ g: Int8ConvGeometry, relu6: Bool, _ rng: inout SeededGenerator) -> Case {
        precondition(g.isValid, "test geometry \(g)")
        let spread = Float(g.patchSize).squareRoot() * 5500
        let multipliers = (0..<g.outputChannels).map { _ in Float.random(in: 10...60, using: &rng) / spread }
        let biasBound = Int32(spread / 2)
        let zeroPoint = Int8.random(in: -20...20, using: &rng)
        let offsets: [Float]? = Bool.random(using: &rng) ? multipliers.map { _ in Float.random(in: -0.5...0.5, using: &rng) } : nil
        let upper = relu6 ? zeroPoint + Int8.random(in: 60...100, using: &rng) : 127
        return Case(geometry: g,
                    x: randomCodes(g.batch * g.channels * g.height * g.width, &rng),
                    weights: randomCodes(g.outputChannels * g.patchSize, &rng),
                    bias: (0..<g.outputChannels).map { _ in Int32.random(in: -biasBound...biasBound, using: &rng) },
                    zero: Int8.random(in: -128...127, using: &rng),
                    requantization: .init(multipliers: multipliers, zeroPoint: zeroPoint, relu: relu6, offsets: offsets, upperBound: upper),
                    scales: multipliers.map { $0 * 0.37 }, offsets: offsets)
    }

    /// Depthwise geometries: odd image sizes (7×5, 13×11, one wider than 64 columns), 3, 17 and 33
    /// channels, multiplier 1 and 2, 3×3 and rectangular kernels (kw 5 needs two groups of 4
    /// taps), stride 1, 2 and (1, 3), symmetric and asymmetric padding, dilation 2.
    static func depthwiseCases() -> [Case] {
        var rng = SeededGenerator(seed: 21)
        var cases: [Case] = []
        let sizes = [(7, 5), (13, 11), (9, 70)]
        let kernels = [(3, 3), (3, 3), (2, 5), (5, 3), (1, 1)]
        let strides = [(1, 1), (2, 2), (1, 3), (2, 1)]
        let paddings = [(1, 1, 1, 1), (0, 1, 1, 0), (0, 0, 0, 0), (2, 1, 0, 3)]
        let dilations = [(1, 1), (2, 2), (1, 2)]
        var i = 0
        for channels in [3, 17, 33] {
            for multiplier in [1, 2] {
                for _ in 0..<4 {
                    let size = sizes[i % sizes.count], kernel = kernels[i % kernels.count]
                    let stride = strides[i / 2 % strides.count], pad = paddings[i / 3 % paddings.count]
                    let dilation = dilations[i / 5 % dilations.count]
                    i += 1
                    let g = Int8ConvGeometry(batch: 1 + i % 2, channels: channels, height: size.0, width: size.1,
                                             outputChannels: channels * multiplier, kernelHeight: kernel.0, kernelWidth: kernel.1,
                                             strideHeight: stride.0, strideWidth: stride.1,
                                             dilationHeight: dilation.0, dilationWidth: dilation.1,
                                             padTop: pad.0, padLeft: pad.1, padBottom: pad.2, padRight: pad.3, groups: channels)
                    guard g.isValid else { continue }
                    cases.append(randomCase(g, relu6: i % 3 == 0, &rng))
                }
            }
        }
        // The MobileNet shapes: 3×3, padding 1, stride 1 and 2; widths 14 and 37 (one 32-column
        // chunk of the row builder, then a 16-column one) and 83 (a 64-column VNNI block and a tail).
        for (stride, width) in [(1, 14), (2, 14), (1, 37), (2, 37), (1, 83), (2, 83)] {
            let g = Int8ConvGeometry(batch: 2, channels: 8, height: 14, width: width, outputChannels: 8, kernelHeight: 3, kernelWidth: 3,
                                     strideHeight: stride, strideWidth: stride, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 8)
            cases.append(randomCase(g, relu6: stride == 1, &rng))
        }
        return cases
    }

    /// Small planes, where the VBMI path's flat kernel runs (outputs across row ends in one vector):
    /// every input height 1…15 with an odd spread of widths, 3×3, stride 1 and 2, padding 0 and 1
    /// (and one asymmetric), multiplier 1 and 2, random zero points; plus 1×3 and 2×2 kernels.
    static func smallPlaneCases() -> [Case] {
        var rng = SeededGenerator(seed: 23)
        var cases: [Case] = []
        for height in 1...15 {
            for (stride, pad) in [(1, 1), (2, 1), (1, 0), (2, 0)] {
                let width = (height * 7 + stride + pad) % 15 + 1
                let pads = height == 9 && stride == 2 ? (0, 1, 1, 0) : (pad, pad, pad, pad)
                let kernel = height == 4 ? (1, 3) : height == 6 && pad == 0 ? (2, 2) : (3, 3)
                let multiplier = 1 + height % 2
                let g = Int8ConvGeometry(batch: 2, channels: 3, height: height, width: width, outputChannels: 3 * multiplier,
                                         kernelHeight: kernel.0, kernelWidth: kernel.1, strideHeight: stride, strideWidth: stride,
                                         padTop: pads.0, padLeft: pads.1, padBottom: pads.2, padRight: pads.3, groups: 3)
                guard g.isValid else { continue }
                cases.append(randomCase(g, relu6: height % 3 == 0, &rng))
            }
        }
        return cases
    }

    /// Grouped and general (groups 1) geometries for the im2col + GEMM path.
    static func groupedCases() -> [Case] {
        var rng = SeededGenerator(seed: 22)
        let shapes: [(c: Int, o: Int, groups: Int, size: (Int, Int), kernel: (Int, Int), stride: (Int, Int),
                      pad: (Int, Int, Int, Int), dilation: (Int, Int))] = [
            (4, 6, 2, (7, 5), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
            (8, 8, 4, (13, 11), (3, 3), (2, 2), (0, 1, 1, 0), (1, 1)),
            (6, 9, 3, (9, 12), (2, 3), (1, 2), (1, 0, 2, 1), (2, 1)),
            (4, 4, 2, (11, 7), (3, 1), (2, 1), (0, 0, 0, 0), (2, 2)),
            (3, 5, 1, (13, 11), (5, 3), (1, 1), (2, 1, 2, 1), (1, 2)),
            (2, 4, 1, (7, 5), (3, 3), (1, 1), (0, 1, 1, 0), (1, 1)),
            (8, 16, 8, (7, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  // depthwise, multiplier 2, through the GEMM
        ]
        return shapes.enumerated().map { i, s in
            let g = Int8ConvGeometry(batch: 1 + i % 3, channels: s.c, height: s.size.0, width: s.size.1, outputChannels: s.o,
                                     kernelHeight: s.kernel.0, kernelWidth: s.kernel.1, strideHeight: s.stride.0, strideWidth: s.stride.1,
                                     dilationHeight: s.dilation.0, dilationWidth: s.dilation.1,
                                     padTop: s.pad.0, padLeft: s.pad.1, padBottom: s.pad.2, padRight: s.pad.3, groups: s.groups)
            return randomCase(g, relu6: i % 3 == 0, &rng)
        }
    }

    // MARK: The reference

    /// §5 written out: Int64 accumulators, padding taps skipped (they contribute (o_d − o_d)·w = 0).
    static func referenceAccumulators(_ c: Case) -> [Int64] {
        let g = c.geometry
        let groupChannels = g.channels / g.groups, groupOutputs = g.outputChannels / g.groups
        var out: [Int64] = []
        out.reserveCapacity(g.batch * g.outputChannels * g.outputHeight * g.outputWidth)
        for n in 0..<g.batch {
            for o in 0..<g.outputChannels {
                let firstChannel = o / groupOutputs * groupChannels
                for oy in 0..<g.outputHeight {
                    for ox in 0..<g.outputWidth {
                        var acc = Int64(c.bias[o])
                        for ci in 0..<groupChannels {
                            for ky in 0..<g.kernelHeight {
                                for kx in 0..<g.kernelWidth {
                                    let y = oy * g.strideHeight + ky * g.dilationHeight - g.padTop
                                    let x = ox * g.strideWidth + kx * g.dilationWidth - g.padLeft
                                    guard y >= 0, y < g.height, x >= 0, x < g.width else { continue }
                                    let q = c.x[((n * g.channels + firstChannel + ci) * g.height + y) * g.width + x]
                                    let w = c.weights[((o * groupChannels + ci) * g.kernelHeight + ky) * g.kernelWidth + kx]
                                    acc += Int64(Int(q) - Int(c.zero)) * Int64(w)
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

    /// Requantization as the fake-quant simulation does it, in Swift Float: product, then offset,
    /// each rounded; round half to even; clamp to [lo, upperBound].
    static func referenceCode(_ acc: Int64, channel: Int, _ r: Int8Kernels.Requantization) -> Int8 {
        var scaled = Float(acc) * r.multipliers[channel]
        if let offsets = r.offsets { scaled = scaled + offsets[channel] }
        let lower = r.relu ? Float(r.zeroPoint) : -128
        return Int8(min(max(scaled.rounded(.toNearestOrEven) + Float(r.zeroPoint), lower), Float(r.upperBound)))
    }

    static func referenceFloat(_ acc: Int64, channel: Int, _ c: Case) -> Float {
        var y = Float(acc) * c.scales[channel]
        if let offsets = c.offsets { y = y + offsets[channel] }
        return y
    }

    // MARK: Checks

    /// Accumulators, codes, floats and the fused max pool on every supported path against the
    /// reference; `algorithm` forces the kernel (nil: the public entry points).
    func assertMatchesReference(_ cases: [Case], algorithm: Int8Kernels.ConvAlgorithm,
                                file: StaticString = #filePath, line: UInt = #line) {
        var inside = 0, total = 0
        for c in cases {
            let g = c.geometry, plane = g.outputHeight * g.outputWidth
            let expected = Self.referenceAccumulators(c)
            let channel = { (i: Int) in i / plane % g.outputChannels }
            let codes = expected.indices.map { Self.referenceCode(expected[$0], channel: channel($0), c.requantization) }
            let floats = expected.indices.map { Self.referenceFloat(expected[$0], channel: channel($0), c).bitPattern }
            let lower = c.requantization.relu ? c.requantization.zeroPoint : -128
            inside += codes.filter { $0 > lower && $0 < c.requantization.upperBound }.count
            total += codes.count
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                let acc = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         path: path, algorithm: algorithm)
                XCTAssertEqual(acc.map(Int64.init), expected, "accumulators \(path) \(algorithm) \(g)", file: file, line: line)
                let q = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, path: path, algorithm: algorithm)
                XCTAssertEqual(q, codes, "codes \(path) \(algorithm) \(g)", file: file, line: line)
                let y = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      scales: c.scales, offsets: c.offsets, path: path, algorithm: algorithm)
                XCTAssertEqual(y.map(\.bitPattern), floats, "floats \(path) \(algorithm) \(g)", file: file, line: line)
                for (k, s) in [(2, 2), (3, 1)] where k <= g.outputHeight && k <= g.outputWidth {
                    let pooled = Int8Kernels.maxPool2d(codes, planes: g.batch * g.outputChannels, height: g.outputHeight,
                                                       width: g.outputWidth, kernel: k, stride: s, path: .portable)
                    let fused = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                          requantize: c.requantization, poolKernel: k, poolStride: s,
                                                          path: path, algorithm: algorithm)
                    XCTAssertEqual(fused, pooled, "conv + pool \(k)/\(s) \(path) \(algorithm) \(g)", file: file, line: line)
                }
            }
        }
        XCTAssertGreaterThan(2 * inside, total, "test data: most codes saturate", file: file, line: line)
    }

    func testDepthwiseDirectMatchesReference() {
        assertMatchesReference(Self.depthwiseCases(), algorithm: .depthwiseDirect)
    }

    func testDepthwiseDirectMatchesReferenceOnSmallPlanes() {
        assertMatchesReference(Self.smallPlaneCases(), algorithm: .depthwiseDirect)
    }

    func testDepthwiseThroughGEMMMatchesReference() {
        assertMatchesReference(Self.depthwiseCases(), algorithm: .im2colGEMM)
    }

    func testGroupedConvMatchesReference() {
        assertMatchesReference(Self.groupedCases(), algorithm: .im2colGEMM)
    }

    /// The public entry points pick the direct kernel for depthwise geometries and give the same
    /// codes on every path (stated on its own, not only through the reference).
    func testPathsAgreeBitForBit() {
        for c in Self.depthwiseCases() + Self.groupedCases() {
            let g = c.geometry
            var results: [[Int8]] = [], floats: [[UInt32]] = []
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                results.append(Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  requantize: c.requantization, path: path))
                floats.append(Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                            scales: c.scales, offsets: c.offsets, path: path).map(\.bitPattern))
            }
            XCTAssertTrue(results.allSatisfy { $0 == results[0] }, "paths differ on codes \(g)")
            XCTAssertTrue(floats.allSatisfy { $0 == floats[0] }, "paths differ on floats \(g)")
        }
    }

    /// A square, symmetric, ungrouped geometry gives the same codes through the new entry point
    /// as through the existing conv2d.
    func testSquareGeometryEqualsExistingConv() {
        var rng = SeededGenerator(seed: 23)
        for (k, s, p) in [(3, 1, 1), (5, 2, 2), (1, 1, 0)] {
            let g = Int8ConvGeometry(batch: 2, channels: 3, height: 11, width: 9, outputChannels: 5, kernelHeight: k, kernelWidth: k,
                                     strideHeight: s, strideWidth: s, padTop: p, padLeft: p, padBottom: p, padRight: p)
            let c = Self.randomCase(g, relu6: false, &rng)
            let old = ConvGeometry(batch: 2, channels: 3, height: 11, width: 9, outputChannels: 5, kernel: k, stride: s, padding: p)
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                XCTAssertEqual(Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  requantize: c.requantization, path: path),
                               Int8Kernels.conv2d(c.x, old, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                  requantize: c.requantization, path: path), "\(path) \(g)")
            }
        }
    }

    /// By hand: a 2×2 image, 2×2 kernel, padding top 0, left 1, bottom 1, right 0. With zero point 5
    /// the codes 6 7 / 8 9 are the real values 1 2 / 3 4, and the padded plane is
    ///     0 1 2
    ///     0 3 4
    ///     0 0 0
    /// so a kernel of ones sums 0+1+0+3 = 4, 1+2+3+4 = 10, 0+3+0+0 = 3, 3+4+0+0 = 7; the second
    /// channel's kernel (2, 0 / 0, −1) gives 0−3 = −3, 2−4 = −2, 0, 6; the bias is added.
    func testDepthwiseAsymmetricPaddingByHand() {
        let g = Int8ConvGeometry(batch: 1, channels: 2, height: 2, width: 2, outputChannels: 2, kernelHeight: 2, kernelWidth: 2,
                                 padTop: 0, padLeft: 1, padBottom: 1, padRight: 0, groups: 2)
        let x: [Int8] = [6, 7, 8, 9, 6, 7, 8, 9]
        let weights: [Int8] = [1, 1, 1, 1, 2, 0, 0, -1]
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            for algorithm in [Int8Kernels.ConvAlgorithm.depthwiseDirect, .im2colGEMM] {
                XCTAssertEqual(Int8Kernels.conv2dAccumulators(x, g, inputZeroPoint: 5, weights: weights, bias: [100, -100],
                                                              path: path, algorithm: algorithm),
                               [104, 110, 103, 107, -103, -102, -100, -94], "\(path) \(algorithm)")
            }
            // Requantized with multiplier 0.5, o_y = 0, fused ReLU6 whose code of 6 is 52:
            // 52, 55→52, 51.5→52 (half to even), 53.5→52; −51.5, −51, −50, −47 → 0.
            let r = Int8Kernels.Requantization(multipliers: [0.5, 0.5], zeroPoint: 0, relu: true, upperBound: 52)
            XCTAssertEqual(Int8Kernels.conv2d(x, g, inputZeroPoint: 5, weights: weights, bias: [100, -100], requantize: r, path: path),
                           [52, 52, 52, 52, 0, 0, 0, 0], "\(path)")
            let plain = Int8Kernels.Requantization(multipliers: [0.5, 0.5], zeroPoint: 0, relu: false)
            XCTAssertEqual(Int8Kernels.conv2d(x, g, inputZeroPoint: 5, weights: weights, bias: [-100, -100], requantize: plain, path: path),
                           [-48, -45, -48, -46, -52, -51, -50, -47], "\(path)")
        }
    }

    func testGeometryOutputSizes() {
        // (13 + 0 + 1 − 2·2 − 1)/2 + 1 = 5; (11 + 1 + 0 − 1·4 − 1)/3 + 1 = 3.
        let g = Int8ConvGeometry(batch: 1, channels: 4, height: 13, width: 11, outputChannels: 8, kernelHeight: 3, kernelWidth: 5,
                                 strideHeight: 2, strideWidth: 3, dilationHeight: 2, dilationWidth: 1,
                                 padTop: 0, padLeft: 1, padBottom: 1, padRight: 0, groups: 4)
        XCTAssertEqual(g.outputHeight, 5)
        XCTAssertEqual(g.outputWidth, 3)
        XCTAssertEqual(g.patchSize, 15)
        XCTAssertTrue(g.isDepthwise)
        XCTAssertTrue(g.isValid)
        var bad = g
        bad.groups = 3
        XCTAssertFalse(bad.isValid)
        bad = g
        bad.kernelWidth = 13
        XCTAssertFalse(bad.isValid)
        XCTAssertFalse(Int8ConvGeometry(batch: 1, channels: 1, height: 3, width: 3, outputChannels: 1,
                                        kernelHeight: 3, kernelWidth: 3, groups: 1).isDepthwise)
    }
}
