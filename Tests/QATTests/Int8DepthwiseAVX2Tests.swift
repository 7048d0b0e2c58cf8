import XCTest
@testable import QATCore
@testable import QATDeploy

/// The AVX2 depthwise kernel that reads the padded plane directly (Sources/CInt8/depthwise_avx2_direct.c:
/// kernels up to 4 wide, column stride 1 or 2, no rows) gives the bytes of the AVX2 row kernel and of
/// the portable path: codes (requantized in registers, by float multiplier or by shift), accumulators,
/// floats and the fused max pool, on odd small planes, wide planes, strides, dilations and multipliers.
final class Int8DepthwiseAVX2Tests: XCTestCase {
    override func tearDown() {
        Int8Kernels.allowDirectDepthwiseAVX2(true)
        super.tearDown()
    }

    /// Everything the depthwise conv can write for case `c` on `path`.
    func outputs(_ c: Int8ConvTests.Case, path: Int8Kernels.Path, direct: Bool) -> [String: [Int64]] {
        Int8Kernels.allowDirectDepthwiseAVX2(direct)
        let g = c.geometry
        let shifts = (0..<g.outputChannels).map { Float(sign: .plus, exponent: -(5 + $0 % 4), significand: 1) }
        let byShift = Int8Kernels.Requantization(multipliers: shifts, zeroPoint: c.requantization.zeroPoint, relu: false)
        var result: [String: [Int64]] = [:]
        result["codes"] = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                             requantize: c.requantization, path: path, algorithm: .depthwiseDirect).map(Int64.init)
        result["codes by shift"] = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      requantize: byShift, path: path, algorithm: .depthwiseDirect).map(Int64.init)
        result["accumulators"] = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                path: path, algorithm: .depthwiseDirect).map(Int64.init)
        result["floats"] = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         scales: c.scales, offsets: c.offsets, path: path,
                                                         algorithm: .depthwiseDirect).map { Int64($0.bitPattern) }
        if g.outputHeight >= 2 && g.outputWidth >= 2 {
            result["pooled"] = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         requantize: c.requantization, poolKernel: 2, poolStride: 2,
                                                         path: path, algorithm: .depthwiseDirect).map(Int64.init)
        }
        return result
    }

    func testDirectKernelEqualsRowKernelAndPortable() {
        guard Int8Kernels.isSupported(.avx2) else { return }
        var directShapes = 0
        for c in Int8ConvTests.smallPlaneCases() + Int8ConvTests.depthwiseCases() {
            let g = c.geometry
            if g.kernelWidth <= 4 && g.dilationWidth == 1 && g.strideWidth <= 2 { directShapes += 1 }
            let direct = outputs(c, path: .avx2, direct: true), rows = outputs(c, path: .avx2, direct: false)
            let portable = outputs(c, path: .portable, direct: true)
            XCTAssertEqual(direct.keys.sorted(), rows.keys.sorted())
            for (name, value) in rows {
                XCTAssertEqual(direct[name], value, "\(name) \(g)")
                XCTAssertEqual(direct[name], portable[name], "\(name) \(g) portable")
            }
        }
        XCTAssertGreaterThan(directShapes, 40)  // the cases reach the kernel
    }
}
