import XCTest
@testable import QATCore
@testable import QATDeploy

/// The widened AVX2 direct depthwise kernel (Sources/CInt8/depthwise_avx2_direct.c: the padded plane
/// as int16, 16 outputs per step, requantization constants in registers, floats and int32 written
/// straight out) gives the bytes of the int8 direct kernel it replaces and of the portable path, for
/// every output the depthwise conv can write, on odd channel counts, plane sizes from 1×1 to 28×28,
/// strides 1 and 2, padding 0, 1 and asymmetric, kernels 3×3, 1×3, 3×1, 2×2 and 4×4, multiplier 1 and 2.
final class Int8DepthwiseWidenedTests: XCTestCase {
    override func tearDown() {
        Int8Kernels.allowDirectDepthwiseAVX2(true)
        Int8Kernels.allowWidenedDepthwiseAVX2(true)
        Int8Kernels.allowChannelsLastDepthwiseAVX2(true)
        super.tearDown()
    }

    enum Variant { case widened, direct, portable }

    static func cases() -> [Int8ConvTests.Case] {
        var rng = SeededGenerator(seed: 31)
        var cases: [Int8ConvTests.Case] = []
        let planes = [(1, 1), (2, 3), (5, 7), (7, 7), (13, 9), (14, 14), (28, 28)]
        let kernels = [(3, 3), (1, 3), (3, 1), (2, 2), (4, 4)]
        let paddings = [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 2, 0), (1, 1, 1, 1)]
        var i = 0
        for channels in [1, 3, 17] {
            for plane in planes {
                for stride in [1, 2] {
                    let kernel = kernels[i % kernels.count], pad = paddings[i / 2 % paddings.count]
                    let multiplier = 1 + i / 3 % 2
                    i += 1
                    let g = Int8ConvGeometry(batch: 1 + i % 3, channels: channels, height: plane.0, width: plane.1,
                                             outputChannels: channels * multiplier, kernelHeight: kernel.0, kernelWidth: kernel.1,
                                             strideHeight: stride, strideWidth: stride,
                                             padTop: pad.0, padLeft: pad.1, padBottom: pad.2, padRight: pad.3, groups: channels)
                    guard g.isValid else { continue }
                    cases.append(Int8ConvTests.randomCase(g, relu6: i % 4 == 0, &rng))
                }
            }
        }
        return cases
    }

    /// Everything the depthwise conv can write for case `c` with kernel `variant` (the plane
    /// kernels: channels last switched off).
    func outputs(_ c: Int8ConvTests.Case, _ variant: Variant) -> [String: [Int64]] {
        Int8Kernels.allowDirectDepthwiseAVX2(variant != .portable)
        Int8Kernels.allowWidenedDepthwiseAVX2(variant == .widened)
        Int8Kernels.allowChannelsLastDepthwiseAVX2(false)
        return Self.outputs(c, path: variant == .portable ? .portable : .avx2)
    }

    /// Everything the depthwise conv can write for case `c` on `path`, with the kernels the
    /// switches allow: codes under every tie rule, by shift, narrow and with multipliers past 1;
    /// accumulators; floats with and without offsets; hardSwish as floats and codes; max pooled.
    static func outputs(_ c: Int8ConvTests.Case, path: Int8Kernels.Path) -> [String: [Int64]] {
        let g = c.geometry, r = c.requantization
        var result: [String: [Int64]] = [:]
        func codes(_ name: String, _ q: Int8Kernels.Requantization) {
            result[name] = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: q,
                                              path: path, algorithm: .depthwiseDirect).map(Int64.init)
        }
        codes("codes", r)
        for mode in [RoundMode.halfUp, .halfDown, .stdRound] {
            // Multipliers of 1/2 put ties everywhere; the narrow range clamps at −127.
            let ties = r.multipliers.map { _ in Float(0.5) }
            codes("codes \(mode)", .init(multipliers: ties, zeroPoint: r.zeroPoint, relu: false, roundMode: mode, byShift: false))
            codes("codes \(mode) scaled", .init(multipliers: r.multipliers, zeroPoint: r.zeroPoint, relu: r.relu, offsets: r.offsets,
                                                upperBound: r.upperBound, roundMode: mode, lowestCode: -127))
        }
        let shifts = (0..<g.outputChannels).map { Float(sign: .plus, exponent: -(5 + $0 % 4), significand: 1) }
        codes("codes by shift", .init(multipliers: shifts, zeroPoint: r.zeroPoint, relu: false))
        codes("codes narrow", .init(multipliers: r.multipliers, zeroPoint: r.zeroPoint, relu: true, offsets: r.offsets,
                                    upperBound: r.zeroPoint &+ 9, lowestCode: -127))
        codes("codes multiplier > 1", .init(multipliers: r.multipliers.map { $0 * 3000 }, zeroPoint: r.zeroPoint, relu: false,
                                            offsets: r.offsets, byShift: false))
        result["accumulators"] = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                path: path, algorithm: .depthwiseDirect).map(Int64.init)
        for offsets in [c.offsets, nil, c.scales.map { _ in Float(0.25) }] {
            result["floats \(offsets == nil)"] = Int8Kernels.conv2dDequantized(
                c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: c.scales, offsets: offsets, path: path,
                algorithm: .depthwiseDirect).map { Int64($0.bitPattern) }
        }
        result["hardSwish"] = Int8Kernels.conv2dDequantizedHardSwish(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                     scales: c.scales, offsets: c.offsets, path: path)
            .map { Int64($0.bitPattern) }
        let grid = QuantizationGrid(bits: 8, scale: 0.02, offset: -3)
        result["hardSwish codes"] = Int8Kernels.conv2dDequantizedHardSwishQuantized(
            c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, scales: c.scales, offsets: c.offsets, grid, path: path)
            .map(Int64.init)
        if g.outputHeight >= 2 && g.outputWidth >= 2 {
            result["pooled"] = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         requantize: r, poolKernel: 2, poolStride: 2,
                                                         path: path, algorithm: .depthwiseDirect).map(Int64.init)
        }
        return result
    }

    func testWidenedEqualsDirectAndPortable() {
        guard Int8Kernels.isSupported(.avx2) else { return }
        let cases = Self.cases() + Int8ConvTests.smallPlaneCases() + Int8ConvTests.depthwiseCases()
        XCTAssertGreaterThan(Self.cases().count, 35)
        for c in cases {
            let widened = outputs(c, .widened), direct = outputs(c, .direct), portable = outputs(c, .portable)
            XCTAssertEqual(widened.keys.sorted(), portable.keys.sorted())
            for (name, value) in portable {
                XCTAssertEqual(widened[name], value, "\(name) \(c.geometry) widened vs portable")
                XCTAssertEqual(widened[name], direct[name], "\(name) \(c.geometry) widened vs direct")
            }
        }
    }
}
