import XCTest
@testable import QATDeploy

/// What an im2col + GEMM conv must give for a test case (Int8ConvTests.Case), from the Int64
/// reference: the accumulators, codes, codes by power-of-two multipliers (as the portable path
/// gives them), floats, and floats after ReLU. `assertMatched` checks one path's outputs against
/// them, for the tests that switch a kernel variant on and off (implicit GEMM, image columns,
/// placed stores, Winograd), each call given `cache` when one is (Int8ConvCacheTests).
struct Int8ConvReferenceOutputs {
    let accumulators: [Int64]
    let codes: [Int8]
    let shifts: Int8Kernels.Requantization
    let shifted: [Int8]
    let floats: [UInt32], relu: [UInt32]

    init(_ c: Int8ConvTests.Case) {
        let g = c.geometry, plane = g.outputHeight * g.outputWidth
        let expected = Int8ConvTests.referenceAccumulators(c)
        let channel = { (i: Int) in i / plane % g.outputChannels }
        accumulators = expected
        codes = expected.indices.map { Int8ConvTests.referenceCode(expected[$0], channel: channel($0), c.requantization) }
        floats = expected.indices.map { Int8ConvTests.referenceFloat(expected[$0], channel: channel($0), c).bitPattern }
        relu = floats.map { Float(bitPattern: $0) < 0 ? Float(0).bitPattern : $0 }
        shifts = Int8ImplicitGEMMTests.shiftRequantization(g)
        shifted = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: shifts,
                                     path: .portable, algorithm: .im2colGEMM)
    }

    func assertMatched(_ c: Int8ConvTests.Case, path: Int8Kernels.Path, _ label: String, cache: Int8ConvCache? = nil,
                       file: StaticString = #filePath, line: UInt = #line) {
        let g = c.geometry
        XCTAssertEqual(Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      cache: cache, path: path, algorithm: .im2colGEMM).map(Int64.init),
                       accumulators, "accumulators \(label)", file: file, line: line)
        XCTAssertEqual(Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                          requantize: c.requantization, cache: cache, path: path, algorithm: .im2colGEMM),
                       codes, "codes \(label)", file: file, line: line)
        XCTAssertEqual(Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                          requantize: shifts, cache: cache, path: path, algorithm: .im2colGEMM),
                       shifted, "codes by shifts \(label)", file: file, line: line)
        XCTAssertEqual(Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                     scales: c.scales, offsets: c.offsets, cache: cache, path: path,
                                                     algorithm: .im2colGEMM).map(\.bitPattern),
                       floats, "floats \(label)", file: file, line: line)
        XCTAssertEqual(Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                     scales: c.scales, offsets: c.offsets, relu: true, pool: nil,
                                                     cache: cache, path: path).map(\.bitPattern),
                       relu, "floats with ReLU \(label)", file: file, line: line)
    }
}
