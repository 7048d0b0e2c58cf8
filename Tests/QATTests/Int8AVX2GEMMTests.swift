import XCTest
@testable import QATCore
@testable import QATDeploy

/// The AVX2 GEMM's pair kernel (16-column tiles whose lanes are output columns, vector epilogue,
/// ReLU as it stores) gives the codes, floats and accumulators of its first ("quad") kernel and of
/// the portable path bit for bit: GEMM shapes m = 1…13 rows, k = 1, 5, 9, 27, 100 (not multiples
/// of 4), n = 1…40 columns (16-column tiles with and without tails), every output kind (int32,
/// floats with and without offsets and ReLU, codes by scale in every tie mode with wide and narrow
/// clamps, codes by shift), 1×1 and 3×3 convs with stride 1 and 2, padding, several images per
/// GEMM, a fused max pool, and linear layers (strided outputs). The pair kernel's specialised
/// epilogue loops (int32; floats by offset and ReLU; codes by scale with ties to even, clamped
/// before vcvtps2dq rounds) agree with its general loop, including multipliers so large that the
/// scaled sums overflow to ±∞.
final class Int8AVX2GEMMTests: XCTestCase {
    typealias Path = Int8Kernels.Path

    /// Every output of one conv as bit patterns, on `path` with the pair kernel on or off.
    static func outputs(_ c: Int8ConvTests.Case, pool: Int8PoolGeometry? = nil, path: Path, pairs: Bool,
                        epilogues: Bool = true) -> [[UInt32]] {
        Int8Kernels.allowAVX2PairTiles(pairs)
        Int8Kernels.allowAVX2PairEpilogues(epilogues)
        defer {
            Int8Kernels.allowAVX2PairTiles(true)
            Int8Kernels.allowAVX2PairEpilogues(true)
        }
        let g = c.geometry, oc = g.outputChannels
        var result: [[UInt32]] = []
        func codes(_ r: Int8Kernels.Requantization) -> [UInt32] {
            Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: r, path: path,
                               algorithm: .im2colGEMM).map { UInt32(UInt8(bitPattern: $0)) }
        }
        result.append(codes(c.requantization))
        // Scaled sums far past the clamp, up to ±∞ (3e38 · |sum| ≥ 2 overflows), with and without offsets.
        for huge: Float in [1e20, 3e38] {
            for offsets in [nil, c.offsets ?? Array(repeating: 0.5, count: oc)] {
                result.append(codes(Int8Kernels.Requantization(multipliers: Array(repeating: huge, count: oc), zeroPoint: -3,
                                                               relu: false, offsets: offsets, upperBound: 127)))
            }
        }
        // Power-of-two multipliers make exact ties: by float multiply in every tie mode, and by shift.
        // Exponents near randomCase's multipliers (~35 / (√patch · 5500)), so codes are not all clamped.
        let base = Int(log2(Float(g.patchSize).squareRoot() * 157).rounded())
        let powers = (0..<oc).map { Float(sign: .plus, exponent: -base - $0 % 3, significand: 1) }
        for mode in RoundMode.allCases {
            for narrow in [false, true] {
                let r = Int8Kernels.Requantization(multipliers: powers, zeroPoint: narrow ? 3 : -5, relu: narrow, offsets: nil,
                                                   upperBound: narrow ? 9 : 127, roundMode: mode, lowestCode: narrow ? -127 : -128,
                                                   byShift: false)
                result.append(codes(r))
                let s = Int8Kernels.Requantization(multipliers: powers, zeroPoint: narrow ? 3 : -5, relu: narrow, offsets: nil,
                                                   upperBound: narrow ? 9 : 127, roundMode: mode, lowestCode: narrow ? -127 : -128)
                XCTAssertNotNil(s.shifts)
                result.append(codes(s))
            }
        }
        for relu in [false, true] {
            for offsets in [nil, c.offsets ?? c.scales.map { $0 * 3 - 0.01 }] {
                result.append(Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                            scales: c.scales, offsets: offsets, relu: relu, pool: pool, path: path)
                    .map(\.bitPattern))
            }
        }
        if pool == nil {
            result.append(Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         path: path, algorithm: .im2colGEMM).map { UInt32(bitPattern: $0) })
        }
        return result
    }

    func assertPairsAgree(_ c: Int8ConvTests.Case, pool: Int8PoolGeometry? = nil, _ label: String) {
        let expected = Self.outputs(c, pool: pool, path: .portable, pairs: true)
        XCTAssertEqual(Self.outputs(c, pool: pool, path: .avx2, pairs: true), expected, "pair kernel, \(label)")
        XCTAssertEqual(Self.outputs(c, pool: pool, path: .avx2, pairs: true, epilogues: false), expected,
                       "pair kernel's general epilogue, \(label)")
        XCTAssertEqual(Self.outputs(c, pool: pool, path: .avx2, pairs: false), expected, "quad kernel, \(label)")
    }

    /// A case whose last channels test the float ReLU's edge cases: a negative scale (negative
    /// floats become +0), and zero weights and bias with a negative scale (−0, kept).
    static func withEdgeChannels(_ c: Int8ConvTests.Case) -> Int8ConvTests.Case {
        var c = c
        let oc = c.geometry.outputChannels, patch = c.geometry.patchSize
        if oc >= 2 { c.scales[oc - 2] = -c.scales[oc - 2] }
        if oc >= 3 {
            c.scales[oc - 1] = -0.25
            for j in 0..<patch { c.weights[(oc - 1) * patch + j] = 0 }
            c.bias[oc - 1] = 0
        }
        return c
    }

    func testPairKernelOnGEMMShapes() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 2_611)
        // 1×1 convs on a 1-row plane: m = output channels, k = input channels, n = width.
        for m in 1...13 {
            for k in [1, 5, 9, 27, 100] {
                for n in [1, 3, 8, 15, 16, 17, 31, 33, 40] where (m + k + n) % 2 == 0 || n == 16 || m == 13 {
                    let g = Int8ConvGeometry(batch: 1, channels: k, height: 1, width: n, outputChannels: m, kernelHeight: 1,
                                             kernelWidth: 1, strideHeight: 1, strideWidth: 1,
                                             padTop: 0, padLeft: 0, padBottom: 0, padRight: 0, groups: 1)
                    assertPairsAgree(Self.withEdgeChannels(Int8ConvTests.randomCase(g, relu6: n % 3 == 0, &rng)), "m \(m) k \(k) n \(n)")
                }
            }
        }
    }

    func testPairKernelOnConvShapes() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 2_612)
        // (channels, height, width, output channels, kernel, stride, pad, batch): 3×3 stride 1 and 2 with
        // padding, odd channels, planes of 1…784 outputs, several images per GEMM (small planes).
        let shapes: [(c: Int, h: Int, w: Int, oc: Int, k: Int, s: Int, p: Int, n: Int)] = [
            (3, 13, 11, 7, 3, 1, 1, 3), (5, 9, 10, 13, 3, 2, 1, 2), (16, 7, 7, 24, 3, 1, 1, 3), (8, 28, 28, 6, 3, 1, 1, 1),
            (17, 2, 2, 9, 3, 1, 1, 5), (4, 1, 1, 11, 3, 1, 1, 3), (24, 14, 14, 40, 1, 1, 0, 2), (12, 8, 8, 5, 1, 2, 0, 3),
            (7, 6, 5, 3, 3, 2, 0, 2)]
        for s in shapes {
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.h, width: s.w, outputChannels: s.oc, kernelHeight: s.k,
                                     kernelWidth: s.k, strideHeight: s.s, strideWidth: s.s,
                                     padTop: s.p, padLeft: s.p, padBottom: s.p, padRight: s.p, groups: 1)
            let c = Self.withEdgeChannels(Int8ConvTests.randomCase(g, relu6: s.c % 2 == 1, &rng))
            assertPairsAgree(c, "\(g)")
            if g.outputHeight >= 2 && g.outputWidth >= 2 {  // a fused 2×2 max pool after the float ReLU
                assertPairsAgree(c, pool: Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, kernel: 2, stride: 2),
                                 "\(g), pooled")
            }
        }
    }

    func testPairKernelOnLinearLayers() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 2_613)
        for (batch, inputs, outs) in [(37, 45, 16), (1, 9, 3), (17, 100, 13), (40, 27, 1)] {
            let x = Int8ConvTests.randomCodes(batch * inputs, &rng), w = Int8ConvTests.randomCodes(outs * inputs, &rng)
            let bias = (0..<outs).map { _ in Int32.random(in: -5000...5000, using: &rng) }
            let scales = (0..<outs).map { _ in Float.random(in: 1e-4...1e-3, using: &rng) }
            let r = Int8Kernels.Requantization(multipliers: scales, zeroPoint: 4, relu: true)
            func outputs(_ path: Path, pairs: Bool) -> [[UInt32]] {
                Int8Kernels.allowAVX2PairTiles(pairs)
                defer { Int8Kernels.allowAVX2PairTiles(true) }
                return [Int8Kernels.linear(x, batch: batch, inputZeroPoint: -7, weights: w, bias: bias, requantize: r, path: path)
                            .map { UInt32(UInt8(bitPattern: $0)) },
                        Int8Kernels.linearDequantized(x, batch: batch, inputZeroPoint: -7, weights: w, bias: bias, scales: scales,
                                                      offsets: scales.map { -$0 }, path: path).map(\.bitPattern),
                        Int8Kernels.linearAccumulators(x, batch: batch, inputZeroPoint: -7, weights: w, bias: bias, path: path)
                            .map { UInt32(bitPattern: $0) }]
            }
            let expected = outputs(.portable, pairs: true)
            XCTAssertEqual(outputs(.avx2, pairs: true), expected, "pair kernel, linear \(batch)×\(inputs)→\(outs)")
            XCTAssertEqual(outputs(.avx2, pairs: false), expected, "quad kernel, linear \(batch)×\(inputs)→\(outs)")
        }
    }
}
