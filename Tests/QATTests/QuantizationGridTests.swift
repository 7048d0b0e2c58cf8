import XCTest
@testable import QATCore
import QATDeploy

/// The one quantization grid (docs/ALGORITHMS.md "Notation", §1 step 3–4) and its clamp-and-round,
/// on hand-computed cases, and the vectorised rounding against Swift's scalar rule.
final class QuantizationGridTests: XCTestCase {

    private func randomValues(_ count: Int, bound: Float, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return Tensor.uniform([count], bound: bound, using: &generator).storage
    }

    // MARK: Rounding

    func testRoundHalfEvenMatchesSwiftRounding() {
        var samples: [Float] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, -128.5, 32767.5, -32768.5,
                                65535.5, 0.49999997, -0.49999997, 0, -0.0, 3.25]
        samples += randomValues(2000, bound: 70_000, seed: 7)
        for v in samples {
            XCTAssertEqual(roundHalfEven(v), v.rounded(.toNearestOrEven), "at \(v)")
            XCTAssertEqual(roundHalfEven(Double(v)), Double(v).rounded(.toNearestOrEven), "at \(v) in Double")
        }
        // Eight lanes at once (the ULQ backward) give the scalar result in every lane.
        for start in stride(from: 0, to: samples.count - 8, by: 8) {
            let lanes = SIMD8<Float>(samples[start..<(start + 8)])
            let rounded = roundHalfEven(lanes)
            for lane in 0..<8 { XCTAssertEqual(rounded[lane], roundHalfEven(lanes[lane]), "at \(lanes[lane])") }
        }
        // The one visible difference: a small negative value rounds to +0, not −0.
        XCTAssertEqual(roundHalfEven(Float(-0.25)).sign, .plus)
    }

    /// clampAndRound(x/s, qmin − o, qmax − o) equals the contract's clamp(round(x/s) + o, qmin, qmax) − o
    /// with Swift's scalar rounding, on ties and random values, INT8 and INT16.
    func testClampAndRoundEqualsContractFormula() {
        for bits in [8, 16] {
            let (qmin, qmax) = QuantizationGrid.codeBounds(bits: bits)
            for offset in [qmin, -7, 0, 5, qmax] {
                let low = Float(qmin - offset), high = Float(qmax - offset)
                var ts = randomValues(3000, bound: Float(4 * (qmax - qmin)), seed: UInt64(bits + offset + 40_000))
                ts += (-300...300).map { Float($0) + 0.5 }   // ties
                ts += [low - 0.5, low + 0.5, high - 0.5, high + 0.5, low, high]
                for t in ts {
                    let contract = min(max(t.rounded(.toNearestOrEven) + Float(offset), Float(qmin)), Float(qmax)) - Float(offset)
                    XCTAssertEqual(QuantizationGrid.clampAndRound(t, low: low, high: high), contract, "t \(t), INT\(bits), o \(offset)")
                }
            }
        }
    }

    // MARK: Hand-computed grids

    func testSymmetricINT8() {
        let grid = QuantizationGrid(bits: 8, scale: 0.5, offset: 0)
        XCTAssertEqual([grid.qmin, grid.qmax, grid.levels], [-128, 127, 255])
        XCTAssertEqual(grid.lower, -64)
        XCTAssertEqual(grid.upper, 63.5)
        // x/s: 0.5 → 0, 1.5 → 2, 2.5 → 2, −0.5 → 0, −1.5 → −2, −2.5 → −2 (half to even);
        // 127.5 and −128.5 clamp to the ends, and so does everything beyond.
        let x: [Float] = [0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 63.75, -64.25, 1000, -1000]
        XCTAssertEqual(x.map(grid.quantize), [0, 2, 2, 0, -2, -2, 127, -128, 127, -128])
        var y = x
        grid.fakeQuantize(&y)
        XCTAssertEqual(y, [0, 1, 1, 0, -1, -1, 63.5, -64, 63.5, -64])
        XCTAssertEqual([127, -128, 3].map(grid.dequantize), [63.5, -64, 1.5])
    }

    func testAsymmetricINT8() {
        // s = 1/4, o = −100: L = s·(−128 + 100) = −7, U = L + 255·s = 56.75.
        let grid = QuantizationGrid(bits: 8, scale: 0.25, offset: -100)
        XCTAssertEqual(grid.lower, -7)
        XCTAssertEqual(grid.upper, 56.75)
        // x/s: 0 → −100; 0.5 → 0 → −100; 1.5 → 2 → −98; −26.5 → −26 → −126; −27.5 → −28 → −128;
        // −28.5 clamps to −28 → −128; 227 → 127; 228 → clamped to 227 → 127.
        let x: [Float] = [0, 0.125, 0.375, -6.625, -6.875, -7.125, 56.75, 57]
        XCTAssertEqual(x.map(grid.quantize), [-100, -100, -98, -126, -128, -128, 127, 127])
        var y = x
        grid.fakeQuantize(&y)
        XCTAssertEqual(y, [0, 0, 0.5, -6.5, -7, -7, 56.75, 56.75])
        XCTAssertEqual(grid.dequantize(127), grid.upper)
        XCTAssertEqual(grid.dequantize(-128), grid.lower)
        XCTAssertEqual(grid.dequantize(-100), 0)
    }

    func testINT16() {
        // s = 1/16, o = 0: L = −2048, U = −2048 + 65535/16 = 2047.9375.
        let grid = QuantizationGrid(bits: 16, scale: 0.0625, offset: 0)
        XCTAssertEqual([grid.qmin, grid.qmax, grid.levels], [-32768, 32767, 65535])
        XCTAssertEqual(grid.lower, -2048)
        XCTAssertEqual(grid.upper, 2047.9375)
        // x/s: 16000.5 → 16000, 16001.5 → 16002, 32767.5 clamps to 32767, −32768.5 to −32768.
        let x: [Float] = [1000.03125, 1000.09375, 2047.96875, -2048.03125, -3000, 3000]
        XCTAssertEqual(x.map(grid.quantize), [16000, 16002, 32767, -32768, -32768, 32767])
        var y = x
        grid.fakeQuantize(&y)
        XCTAssertEqual(y, [1000, 1000.125, 2047.9375, -2048, -2048, 2047.9375])
        XCTAssertEqual(grid.dequantize(-1), -0.0625)
    }

    func testGridFromClipPair() {
        // M − m = 255/16, so s = 1/16 exactly; m/s = −64 → o = round(−128 + 64) = −64.
        let grid = QuantizationGrid(bits: 8, clipMax: 11.9375, clipMin: -4)
        XCTAssertEqual(grid.scale, 0.0625)
        XCTAssertEqual(grid.offset, -64)
        XCTAssertEqual(grid.lower, -4)
        XCTAssertEqual(grid.upper, 11.9375)
        // m/s = −63.5 exactly: o = round(−64.5) = −64, half to even.
        XCTAssertEqual(QuantizationGrid(bits: 8, clipMax: 11.96875, clipMin: -3.96875).offset, -64)
        // A range below EPS: s = 1, o = qmin, at either width.
        let tiny = QuantizationGrid(bits: 16, clipMax: 1e-6, clipMin: -1e-6)
        XCTAssertEqual(tiny.scale, 1)
        XCTAssertEqual(tiny.offset, -32768)
        XCTAssertEqual(tiny.lower, 0)
        XCTAssertEqual(tiny.upper, 65535)
        // Non-negative data (m' = 0): o = qmin, L = 0.
        let relu = QuantizationGrid(bits: 16, clipMax: 4, clipMin: 0)
        XCTAssertEqual(relu.offset, -32768)
        XCTAssertEqual(relu.scale, Float(4) / 65535)
        XCTAssertEqual(relu.lower, 0)
    }

    func testClippedCountsTreatBoundsAsInside() {
        let grid = QuantizationGrid(bits: 8, scale: 0.25, offset: -100)   // [−7, 56.75]
        let x: [Float] = [-7, 56.75, -7.0001, 56.76, 0, -100, 100, 100]
        let counts = x.withUnsafeBufferPointer { grid.clippedCounts($0) }
        XCTAssertEqual(counts.below, 2)
        XCTAssertEqual(counts.above, 3)
    }

    func testCodableKeepsTheReportKeys() throws {
        let grid = QuantizationGrid(bits: 16, scale: 0.0625, offset: -3)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(grid)) as! [String: Any]
        XCTAssertEqual(Set(json.keys), ["bits", "scale", "offset", "lower", "upper"])
        XCTAssertEqual(try JSONDecoder().decode(QuantizationGrid.self, from: JSONEncoder().encode(grid)), grid)
    }

    // MARK: The INT8 kernels follow the same rule

    /// Int8Kernels.quantize (C, every path) gives the grid's codes, ties, clamping and NaN included.
    func testInt8KernelQuantizeEqualsGrid() {
        var x = randomValues(4001, bound: 80, seed: 9)
        x += (-400...400).map { Float($0) * 0.125 }   // many exact ties at s = 0.25
        x += [.nan, .infinity, -.infinity, 1e30, -0.0]
        for grid in [QuantizationGrid(bits: 8, scale: 0.25, offset: -3), QuantizationGrid(bits: 8, clipMax: 6, clipMin: 0),
                     QuantizationGrid(bits: 8, clipMax: 1.7, clipMin: -0.9)] {
            let expected = x.map { Int8(grid.quantize($0)) }
            for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                XCTAssertEqual(Int8Kernels.quantize(x, grid, path: path), expected, "\(path) \(grid)")
            }
            let codes: [Int8] = [-128, -3, 0, 127]
            XCTAssertEqual(Int8Kernels.dequantize(codes, grid), codes.map { grid.dequantize(Int($0)) })
        }
    }
}
