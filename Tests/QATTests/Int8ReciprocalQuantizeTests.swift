import XCTest
@testable import QATCore
@testable import QATDeploy

/// The AVX2 quantize by a product with 1/scale (quantize_reciprocal.c) gives the codes of the
/// division it replaces, bit for bit, and those of QATCore's `QuantizationGrid.quantize` (fake
/// quant's), for quantize alone, after a residual add and after HardSwish. The inputs are mostly
/// the hard cases: floats within 128 ulps of a tie (k + ½)·s, where the product and the quotient
/// can round apart and the kernel must redo the block by division (with the fallback's margin
/// shrunk from 2^-12 to 2^-30, all three tests fail, 28 assertions), plus NaN,
/// ±∞, ±0, subnormals, values far outside the range, and arbitrary bit patterns; scales from powers
/// of two (exact reciprocals) to ones whose reciprocal is not a normal float (division kept).
final class Int8ReciprocalQuantizeTests: XCTestCase {
    static let grids: [QuantizationGrid] = [
        QuantizationGrid(bits: 8, scale: 0.037, offset: -11), QuantizationGrid(bits: 8, scale: 0.0123, offset: -128),
        QuantizationGrid(bits: 8, scale: 0.21, offset: 40, narrowRange: true), QuantizationGrid(bits: 8, scale: 0.125, offset: 0),
        QuantizationGrid(bits: 8, scale: 3.0e-7, offset: 127), QuantizationGrid(bits: 8, scale: 6.1, offset: -3),
        QuantizationGrid(bits: 8, scale: 1e-30, offset: 5), QuantizationGrid(bits: 8, scale: 3e37, offset: 0)]

    /// Values around each tie of the grid's range (and a little past it), specials, random floats.
    static func hardValues(_ grid: QuantizationGrid, _ rng: inout SeededGenerator) -> [Float] {
        var x: [Float] = []
        for k in -260...260 {
            let tie = (Float(k) + 0.5) * grid.scale
            guard tie.isFinite else { continue }
            for _ in 0..<24 {
                let step = Int32.random(in: -128...128, using: &rng)
                x.append(Float(bitPattern: UInt32(bitPattern: Int32(bitPattern: tie.bitPattern) &+ step)))
            }
            x.append(tie)
        }
        x += [.nan, -.nan, .infinity, -.infinity, 0, -0.0, .leastNonzeroMagnitude, -.leastNormalMagnitude,
              .greatestFiniteMagnitude, -3, 3]
        for _ in 0..<2000 { x.append(Float.random(in: -300...300, using: &rng) * grid.scale) }
        for _ in 0..<500 { x.append(Float(bitPattern: UInt32.random(in: .min ... .max, using: &rng))) }
        return x
    }

    /// `body` with the product on and off, on the AVX2 path, and on the portable path.
    func assertSameCodes(_ grid: QuantizationGrid, _ label: String, _ body: (Int8Kernels.Path) -> [Int8]) {
        let portable = body(.portable)
        XCTAssertEqual(body(.avx2), portable, "with 1/scale, \(label), grid \(grid)")
        Int8Kernels.allowReciprocalQuantize(false)
        defer { Int8Kernels.allowReciprocalQuantize(true) }
        XCTAssertEqual(body(.avx2), portable, "by division, \(label), grid \(grid)")
    }

    func testQuantizeGivesTheCodesOfTheDivision() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 1_201)
        for grid in Self.grids {
            let x = Self.hardValues(grid, &rng)
            assertSameCodes(grid, "quantize") { Int8Kernels.quantize(x, grid, path: $0) }
            // The contract: fake quant's codes (QATCore), value by value.
            let fakeQuant = x.map { Int8(grid.quantize($0)) }
            XCTAssertEqual(Int8Kernels.quantize(x, grid, path: .avx2), fakeQuant, "QATCore's codes, grid \(grid)")
        }
    }

    func testResidualAddQuantizeGivesTheCodesOfTheDivision() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 1_202)
        for grid in Self.grids {
            let sums = Self.hardValues(grid, &rng)
            // a + b == the hard value exactly when b is 0 or a is; mix both with plain sums.
            let a = sums.enumerated().map { $0.offset % 3 == 2 ? Float.random(in: -2...2, using: &rng) : $0.element }
            let b = sums.enumerated().map { $0.offset % 3 == 2 ? Float.random(in: -2...2, using: &rng) : 0 }
            assertSameCodes(grid, "add → quantize") { Int8Kernels.addQuantized(a, b, grid, path: $0) }
        }
    }

    func testHardSwishQuantizeGivesTheCodesOfTheDivisions() throws {
        try XCTSkipUnless(Int8Kernels.isSupported(.avx2), "no AVX2 on this CPU")
        var rng = SeededGenerator(seed: 1_203)
        for grid in Self.grids {
            // Inputs whose HardSwish lands near the grid's ties: solve x · (x + 3) / 6 ≈ t for
            // x in (−3, 3), and x ≈ t above 3 (the identity part); plus the hard values themselves.
            var x = Self.hardValues(grid, &rng)
            for t in Self.hardValues(grid, &rng) where t.isFinite && t >= -0.375 && t < 100 {
                x.append(t >= 3 ? t : (-3 + (9 + 24 * t).squareRoot()) / 2)
            }
            assertSameCodes(grid, "HardSwish → quantize") { Int8Kernels.hardSwishQuantized(x, grid, path: $0) }
            let fakeQuant = Int8Kernels.hardSwish(x, path: .portable).map { Int8(grid.quantize($0)) }
            XCTAssertEqual(Int8Kernels.hardSwishQuantized(x, grid, path: .avx2), fakeQuant, "QATCore's codes, grid \(grid)")
        }
    }
}
