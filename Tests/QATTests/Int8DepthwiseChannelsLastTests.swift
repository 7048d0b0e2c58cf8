import XCTest
@testable import QATCore
@testable import QATDeploy

/// The AVX2 depthwise kernel that runs channels last inside (Sources/CInt8/depthwise_avx2_channels.c:
/// the image transposed to padded NHWC int16, 16 channels of a pixel per vector, the outputs
/// transposed back) gives the bytes of the plane kernels and of the portable path, for every output
/// the depthwise conv can write: on 16, 32 and 48 channels, planes from 3×3 (too small, so the
/// plane kernels run) to 28×28 and 9×70, flat pixel counts that are and are not multiples of the
/// transposes' 8 and 16, strides 1, 2 and (1, 3), symmetric and asymmetric padding, kernels 3×3,
/// 1×3, 2×5, 5×3 and 1×1, dilation 2.
final class Int8DepthwiseChannelsLastTests: XCTestCase {
    override func tearDown() {
        Int8Kernels.allowChannelsLastDepthwiseAVX2(true)
        super.tearDown()
    }

    static func cases() -> [Int8ConvTests.Case] {
        var rng = SeededGenerator(seed: 41)
        var cases: [Int8ConvTests.Case] = []
        let planes = [(3, 3), (4, 4), (5, 7), (7, 7), (9, 13), (14, 14), (28, 28), (9, 70)]
        let kernels = [(3, 3), (3, 3), (1, 3), (2, 5), (5, 3), (1, 1)]
        let strides = [(1, 1), (2, 2), (1, 3)]
        let paddings = [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 2, 0), (2, 1, 0, 3)]
        let dilations = [(1, 1), (1, 1), (2, 2)]
        var i = 0
        for channels in [16, 32, 48] {
            for plane in planes {
                for _ in 0..<2 {
                    let kernel = kernels[i % kernels.count], stride = strides[i / 2 % strides.count]
                    let pad = paddings[i / 3 % paddings.count], dilation = dilations[i / 4 % dilations.count]
                    i += 1
                    let g = Int8ConvGeometry(batch: 1 + i % 3, channels: channels, height: plane.0, width: plane.1,
                                             outputChannels: channels, kernelHeight: kernel.0, kernelWidth: kernel.1,
                                             strideHeight: stride.0, strideWidth: stride.1,
                                             dilationHeight: dilation.0, dilationWidth: dilation.1,
                                             padTop: pad.0, padLeft: pad.1, padBottom: pad.2, padRight: pad.3, groups: channels)
                    guard g.isValid else { continue }
                    cases.append(Int8ConvTests.randomCase(g, relu6: i % 4 == 0, &rng))
                }
            }
        }
        return cases
    }

    /// What the depthwise conv writes for `c` on AVX2 with channels last allowed or not.
    func outputs(_ c: Int8ConvTests.Case, channelsLast: Bool) -> [String: [Int64]] {
        Int8Kernels.allowChannelsLastDepthwiseAVX2(channelsLast)
        return Int8DepthwiseWidenedTests.outputs(c, path: .avx2)
    }

    func testChannelsLastEqualsPlaneKernelsAndPortable() {
        guard Int8Kernels.isSupported(.avx2) else { return }
        let cases = Self.cases()
        XCTAssertGreaterThan(cases.count, 40)
        // Enough of them take the kernel: multiplier 1, ≥ 8 input and ≥ 16 output pixels.
        let taken = cases.filter { $0.geometry.height * $0.geometry.width >= 8 && $0.geometry.outputHeight * $0.geometry.outputWidth >= 16 }
        XCTAssertGreaterThan(taken.count, 30)
        for c in cases {
            let channelsLast = outputs(c, channelsLast: true), planes = outputs(c, channelsLast: false)
            let portable = Int8DepthwiseWidenedTests.outputs(c, path: .portable)
            XCTAssertEqual(channelsLast.keys.sorted(), portable.keys.sorted())
            for (name, value) in portable {
                XCTAssertEqual(channelsLast[name], value, "\(name) \(c.geometry) channels last vs portable")
                XCTAssertEqual(channelsLast[name], planes[name], "\(name) \(c.geometry) channels last vs plane kernels")
            }
        }
    }

    /// Accumulators at the ends of int32 (all codes −128 against weights −128, and +127 against
    /// −128) and a zero point at either end: the sums wrap as the other paths' do.
    func testExtremeCodesAndZeroPoints() {
        guard Int8Kernels.isSupported(.avx2) else { return }
        var rng = SeededGenerator(seed: 43)
        let g = Int8ConvGeometry(batch: 2, channels: 32, height: 7, width: 7, outputChannels: 32, kernelHeight: 3, kernelWidth: 3,
                                 strideHeight: 1, strideWidth: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 32)
        for (code, weight, zero) in [(Int8(-128), Int8(-128), Int8(127)), (127, -128, -128), (-128, 127, 0)] {
            var c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            c.x = c.x.map { _ in code }
            c.weights = c.weights.map { _ in weight }
            c.zero = zero
            let channelsLast = outputs(c, channelsLast: true), portable = Int8DepthwiseWidenedTests.outputs(c, path: .portable)
            for (name, value) in portable { XCTAssertEqual(channelsLast[name], value, "\(name) code \(code) weight \(weight)") }
        }
    }
}
