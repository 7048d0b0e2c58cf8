import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// Every comparison metric on hand-computed vectors (docs/DEBUGGING.md gives the definitions).
final class DebugMetricsTests: XCTestCase {
    let a: [Float] = [1, 2, 3, 4]
    let b: [Float] = [1, 2, 3, 5]

    func testEveryMetricOnAHandComputedPair() {
        let m = ComparisonMetrics.compare(a, b)
        // Σab = 34, Σa² = 30, Σb² = 39.
        XCTAssertEqual(m.cosine, 34 / (30.0.squareRoot() * 39.0.squareRoot()), accuracy: 1e-12)
        XCTAssertEqual(m.cosine, 0.993999, accuracy: 1e-6)
        // a − b = [0, 0, 0, −1].
        XCTAssertEqual(m.mse, 0.25)
        XCTAssertEqual(m.l1, 0.25)
        XCTAssertEqual(m.maxAbsDifference, 1)
        XCTAssertEqual(m.sqnrDB, 10 * log10(30.0), accuracy: 1e-12)   // 14.771 dB
        XCTAssertEqual(m.sqnrDB, 14.7712, accuracy: 1e-4)
        XCTAssertEqual(m.count, 4)
        XCTAssertEqual(m.a.min, 1); XCTAssertEqual(m.a.max, 4)
        XCTAssertEqual(m.a.mean, 2.5); XCTAssertEqual(m.a.variance, 1.25, accuracy: 1e-12)
        XCTAssertEqual(m.b.min, 1); XCTAssertEqual(m.b.max, 5)
        XCTAssertEqual(m.b.mean, 2.75); XCTAssertEqual(m.b.variance, 2.1875, accuracy: 1e-12)
    }

    func testCosineEdgeCases() {
        XCTAssertEqual(ComparisonMetrics.compare([1, 0], [0, 1]).cosine, 0)
        XCTAssertEqual(ComparisonMetrics.compare([1, -2], [-1, 2]).cosine, -1, accuracy: 1e-12)
        XCTAssertEqual(ComparisonMetrics.compare([0, 0], [0, 0]).cosine, 1)
        XCTAssertEqual(ComparisonMetrics.compare([0, 0], [0, 3]).cosine, 0)
        XCTAssertEqual(ComparisonMetrics.compare([2, 4], [1, 2]).cosine, 1, accuracy: 1e-12)   // scale-invariant
    }

    func testSQNRIsCappedBothWays() {
        XCTAssertEqual(ComparisonMetrics.compare(a, a).sqnrDB, ComparisonMetrics.sqnrCapDB)
        XCTAssertEqual(ComparisonMetrics.compare([0, 0], [0, 1]).sqnrDB, -ComparisonMetrics.sqnrCapDB)
        XCTAssertEqual(ComparisonMetrics.compare([0, 0], [0, 0]).sqnrDB, ComparisonMetrics.sqnrCapDB)
        // Σa² = 100, Σ(a−b)² = 1 → 20 dB; Σa² = 1, Σ(a−b)² = 10 → −10 dB.
        XCTAssertEqual(ComparisonMetrics.compare([10], [9]).sqnrDB, 20, accuracy: 1e-12)
        XCTAssertEqual(ComparisonMetrics.sqnr(signal: 1, noise: 10), -10, accuracy: 1e-12)
    }

    func testKLOnHandComputedHistograms() {
        // P = [1/2, 1/2], Q = [3/4, 1/4]: ½ ln(2/3) + ½ ln 2 = 0.143841.
        XCTAssertEqual(ComparisonMetrics.klDivergence(p: [1, 1], q: [3, 1]), 0.5 * log(2.0 / 3) + 0.5 * log(2.0), accuracy: 1e-12)
        XCTAssertEqual(ComparisonMetrics.klDivergence(p: [1, 1], q: [3, 1]), 0.143841, accuracy: 1e-6)
        // Counts are normalised; identical distributions give 0.
        XCTAssertEqual(ComparisonMetrics.klDivergence(p: [2, 6, 0], q: [1, 3, 0]), 0, accuracy: 1e-15)
        // Mass where Q has none costs ln(p / 1e-10).
        XCTAssertEqual(ComparisonMetrics.klDivergence(p: [1, 0], q: [0, 1]), log(1 / ComparisonMetrics.klFloor), accuracy: 1e-9)
        XCTAssertEqual(ComparisonMetrics.klDivergence(p: [0, 0], q: [1, 1]), 0)
    }

    func testKLThroughTheFirstBatchHistogram() {
        // First batch spans [0, 1] → bins over [−0.1, 1.1]; 4 values → the 16-bin minimum.
        // 0 lands in bin 1, 1 in bin 14: P = {½, ½}, Q = {¾, ¼}, the case above.
        let m = ComparisonMetrics.compare([0, 0, 1, 1], [0, 0, 0, 1], bins: 512)
        XCTAssertEqual(m.kl, 0.143841, accuracy: 1e-6)
        XCTAssertEqual(m.histogramOutOfRange, 0)
        var histogram = [Float]([0, 1]).withUnsafeBufferPointer { a in
            PairHistogram(bins: 512, firstA: a, firstB: a)
        }
        XCTAssertEqual(histogram.countsA.count, 16)
        XCTAssertEqual(histogram.lower, -0.1, accuracy: 1e-6)
        XCTAssertEqual(histogram.upper, 1.1, accuracy: 1e-6)
        // Later values outside the span go to the end bins and are counted.
        [Float]([5, -3]).withUnsafeBufferPointer { v in histogram.add(a: v, b: v) }
        XCTAssertEqual(histogram.outOfRange, 4)
        XCTAssertEqual(histogram.countsA[15], 1)
        XCTAssertEqual(histogram.countsA[0], 1)
    }

    func testStreamingOverBatchesEqualsOnePass() {
        var generator = SeededGenerator(seed: 7)
        let x = (0..<1000).map { _ in Float.random(in: -3...5, using: &generator) }
        let y = x.map { $0 + Float.random(in: -0.1...0.1, using: &generator) }
        var streamed = PairAccumulator(bins: 64)
        for start in stride(from: 0, to: 1000, by: 128) {
            streamed.add(Array(x[start..<min(start + 128, 1000)]), Array(y[start..<min(start + 128, 1000)]))
        }
        let whole = ComparisonMetrics.compare(x, y, bins: 64)
        let s = streamed.metrics
        XCTAssertEqual(s.count, 1000)
        XCTAssertEqual(s.cosine, whole.cosine, accuracy: 1e-12)
        XCTAssertEqual(s.mse, whole.mse, accuracy: 1e-12)
        XCTAssertEqual(s.l1, whole.l1, accuracy: 1e-12)
        XCTAssertEqual(s.sqnrDB, whole.sqnrDB, accuracy: 1e-9)
        XCTAssertEqual(s.maxAbsDifference, whole.maxAbsDifference)
        XCTAssertEqual(s.a.mean, whole.a.mean, accuracy: 1e-12)
        XCTAssertEqual(s.a.variance, whole.a.variance, accuracy: 1e-9)
        XCTAssertEqual(s.b.min, whole.b.min)
        XCTAssertEqual(s.b.max, whole.b.max)
        XCTAssertGreaterThan(s.kl, 0)
        XCTAssertLessThan(s.kl, 0.1)
    }

    func testNaNIsReportedNotHidden() {
        let m = ComparisonMetrics.compare([1, .nan], [1, 2])
        XCTAssertTrue(m.maxAbsDifference.isNaN)
        XCTAssertTrue(m.mse.isNaN)
        XCTAssertTrue(m.a.min.isNaN)
    }
}
