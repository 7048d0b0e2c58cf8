import XCTest
import CKernels
@testable import QATCore

/// The vector paths of the ULQ passes (CKernels/fake_quant.c) against the Swift loops whose bits
/// they must keep: the forward against `clampAndRound` element by element, the backward's block
/// sums and dL/dx against `ulqBlockSums`, on every path this CPU has.
final class FakeQuantKernelTests: XCTestCase {
    private var paths: [Int32] { (0...qat_ulq_force_isa(-1)).map { $0 } }

    override func tearDown() {
        qat_ulq_force_isa(-1)
        super.tearDown()
    }

    private let grid = QuantizationGrid(bits: 8, clipMax: 2.5, clipMin: -1.25)

    /// Random values over and beyond the grid, with ties, the bounds, zeros, infinities and NaN.
    private func values(_ count: Int, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        let specials: [Float] = [grid.lower, grid.upper, 0, -0.0, .infinity, -.infinity, .nan,
                                 grid.scale * 3.5, grid.scale * -2.5, grid.upper.nextUp, grid.lower.nextDown]
        return (0..<count).map { i in
            i % 7 == 3 ? specials[(i / 7) % specials.count] : (generator.nextUnitFloat() * 2 - 1) * 4
        }
    }

    private func assertSameBits(_ a: [Float], _ b: [Float], _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        for i in 0..<min(a.count, b.count) where a[i].bitPattern != b[i].bitPattern && !(a[i].isNaN && b[i].isNaN) {
            XCTFail("\(message): element \(i): \(a[i]) vs \(b[i])", file: file, line: line)
            return
        }
    }

    func testForwardKeepsTheBitsOfClampAndRoundOnEveryPath() {
        let (s, low, high) = (grid.scale, Float(grid.qmin - grid.offset), Float(grid.qmax - grid.offset))
        for count in [0, 1, 7, 8, 15, 16, 17, 31, 33, 1000, 4109] {
            let x = values(count, seed: UInt64(count) + 1)
            let expected = x.map { QuantizationGrid.clampAndRound($0 / s, low: low, high: high) * s }
            for path in paths {
                XCTAssertEqual(qat_ulq_force_isa(path), path)
                var y = [Float](repeating: 99, count: count)
                grid.fakeQuantize(x, into: &y, count: count)
                assertSameBits(y, expected, "path \(path), \(count) values")
                var inPlace = x
                grid.fakeQuantize(&inPlace)
                assertSameBits(inPlace, expected, "path \(path), \(count) values in place")
            }
        }
    }

    func testBackwardBlockKeepsTheSumsAndGradientOfTheSwiftLanesOnEveryPath() {
        for count in [1, 5, 8, 13, 16, 24, 31, 1024, 1000] {
            let x = values(count, seed: UInt64(count) * 31 + 7)
            var generator = SeededGenerator(seed: UInt64(count))
            let g = (0..<count).map { _ in generator.nextUnitFloat() * 2 - 1 }
            let start = (0..<count).map { Float($0 % 5) - 2.25 }
            for overwrite in [false, true] {
                var expectedGradient = start
                let expected = x.withUnsafeBufferPointer { xs in
                    g.withUnsafeBufferPointer { gs in
                        expectedGradient.withUnsafeMutableBufferPointer { gx in
                            ulqBlockSums(x: xs.baseAddress!, upstream: gs.baseAddress!, inputGradient: gx.baseAddress!,
                                         overwrite: overwrite, count: count, grid: grid)
                        }
                    }
                }
                for path in paths {
                    qat_ulq_force_isa(path)
                    var gradient = overwrite ? [Float](repeating: .nan, count: count) : start
                    var sums = [Double](repeating: -1, count: 3)
                    qat_ulq_backward_block(x, g, &gradient, count, grid.scale, grid.lower, grid.upper, overwrite ? 1 : 0, &sums)
                    let label = "path \(path), \(count) values, overwrite \(overwrite)"
                    assertSameBits(gradient, expectedGradient, label)
                    // NaN inputs make the residual sum NaN on every path alike.
                    XCTAssertEqual(sums[0].isNaN, expected.insideResidual.isNaN, label)
                    if !sums[0].isNaN { XCTAssertEqual(sums[0].bitPattern, expected.insideResidual.bitPattern, label) }
                    XCTAssertEqual(sums[1].bitPattern, expected.above.bitPattern, label)
                    XCTAssertEqual(sums[2].bitPattern, expected.below.bitPattern, label)
                    var none = [Double](repeating: -1, count: 3)
                    qat_ulq_backward_block(x, g, nil, count, grid.scale, grid.lower, grid.upper, 0, &none)
                    XCTAssertEqual(none[1].bitPattern, sums[1].bitPattern, label)
                }
            }
        }
    }

    func testBackwardSumsWithoutNaNAreBitIdentical() {
        let count = 1021
        let x = values(count, seed: 5).map { $0.isNaN ? 0.5 : $0 }
        let g = (0..<count).map { Float(($0 * 37) % 101) / 50 - 1 }
        var expectedGradient = [Float](repeating: 0, count: count)
        let expected = x.withUnsafeBufferPointer { xs in
            g.withUnsafeBufferPointer { gs in
                expectedGradient.withUnsafeMutableBufferPointer { gx in
                    ulqBlockSums(x: xs.baseAddress!, upstream: gs.baseAddress!, inputGradient: gx.baseAddress!,
                                 overwrite: false, count: count, grid: grid)
                }
            }
        }
        XCTAssertFalse(expected.insideResidual.isNaN)
        for path in paths {
            qat_ulq_force_isa(path)
            var gradient = [Float](repeating: 0, count: count)
            var sums = [Double](repeating: 0, count: 3)
            qat_ulq_backward_block(x, g, &gradient, count, grid.scale, grid.lower, grid.upper, 0, &sums)
            XCTAssertEqual(sums[0].bitPattern, expected.insideResidual.bitPattern, "path \(path)")
            assertSameBits(gradient, expectedGradient, "path \(path)")
        }
    }
}
