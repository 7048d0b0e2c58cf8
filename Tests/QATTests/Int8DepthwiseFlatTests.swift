import XCTest
@testable import QATCore
@testable import QATDeploy

/// The VBMI depthwise kernel's flat form for small output planes (Sources/CInt8/depthwise_flat.c:
/// outputs across row ends in one vector) gives the bytes of its row form: codes (requantized in
/// registers, by float multiplier or by shift), accumulators, floats and the fused max pool, on odd
/// small planes; and its packed plane copy (several rows per vector) the bytes of the row copy.
/// Int8ConvTests compares both with the Int64 reference (smallPlaneCases);
/// Int8FusionTests checks mobilenetv2-tiny's logits with and without it, at 1 and 2 threads.
final class Int8DepthwiseFlatTests: XCTestCase {
    override func tearDown() {
        Int8Kernels.allowFlatDepthwise(true)
        super.tearDown()
    }

    /// Everything the kernel can write for case `c` on the VNNI path.
    func outputs(_ c: Int8ConvTests.Case, flat: Bool) -> [String: [Int64]] {
        Int8Kernels.allowFlatDepthwise(flat)
        let g = c.geometry
        let shifts = (0..<g.outputChannels).map { Float(sign: .plus, exponent: -(5 + $0 % 4), significand: 1) }
        let byShift = Int8Kernels.Requantization(multipliers: shifts, zeroPoint: c.requantization.zeroPoint, relu: false)
        XCTAssertTrue(byShift.isByShift)
        var result: [String: [Int64]] = [:]
        result["codes"] = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                             requantize: c.requantization, path: .vnni, algorithm: .depthwiseDirect).map(Int64.init)
        result["codes by shift"] = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      requantize: byShift, path: .vnni, algorithm: .depthwiseDirect).map(Int64.init)
        result["accumulators"] = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                path: .vnni, algorithm: .depthwiseDirect).map(Int64.init)
        result["floats"] = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         scales: c.scales, offsets: c.offsets, path: .vnni,
                                                         algorithm: .depthwiseDirect).map { Int64($0.bitPattern) }
        if g.outputHeight >= 2 && g.outputWidth >= 2 {
            result["pooled"] = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         requantize: c.requantization, poolKernel: 2, poolStride: 2,
                                                         path: .vnni, algorithm: .depthwiseDirect).map(Int64.init)
        }
        return result
    }

    func testFlatKernelEqualsRowKernel() {
        guard Int8Kernels.isSupported(.vnni) else { return }
        for c in Int8ConvTests.smallPlaneCases() + Int8ConvTests.depthwiseCases() {
            let flat = outputs(c, flat: true), rows = outputs(c, flat: false)
            XCTAssertEqual(flat.keys.sorted(), rows.keys.sorted())
            for (name, value) in rows { XCTAssertEqual(flat[name], value, "\(name) \(c.geometry)") }
        }
    }

    /// The padded input planes copied several rows per vector (padded width ≤ 64) give the bytes of
    /// the row-by-row copy, with the flat and the row kernel.
    func testPackedPlaneCopyEqualsRowCopy() {
        guard Int8Kernels.isSupported(.vnni) else { return }
        defer { Int8Kernels.allowPackedPlaneCopy(true) }
        for c in Int8ConvTests.smallPlaneCases() + Int8ConvTests.depthwiseCases() {
            for flat in [true, false] {
                Int8Kernels.allowPackedPlaneCopy(false)
                let rows = outputs(c, flat: flat)
                Int8Kernels.allowPackedPlaneCopy(true)
                let packed = outputs(c, flat: flat)
                XCTAssertEqual(packed.keys.sorted(), rows.keys.sorted())
                for (name, value) in rows { XCTAssertEqual(packed[name], value, "\(name) \(c.geometry) flat \(flat)") }
            }
        }
    }

    /// A batch run whole gives the bytes of its images run one at a time (what a thread split does).
    func testBatchEqualsImagesOneAtATime() {
        guard Int8Kernels.isSupported(.vnni) else { return }
        for c in Int8ConvTests.smallPlaneCases() {
            let g = c.geometry
            let whole = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, path: .vnni, algorithm: .depthwiseDirect)
            var single = g
            single.batch = 1
            let inputCodes = g.channels * g.height * g.width
            var pieces: [Int8] = []
            for image in 0..<g.batch {
                let x = Array(c.x[(image * inputCodes)..<((image + 1) * inputCodes)])
                pieces += Int8Kernels.conv2d(x, single, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                             requantize: c.requantization, path: .vnni, algorithm: .depthwiseDirect)
            }
            XCTAssertEqual(whole, pieces, "\(g)")
        }
    }
}
