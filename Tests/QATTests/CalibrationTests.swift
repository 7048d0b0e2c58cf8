import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// IFMR and HFMG, the calibrations that give ULQ its starting clip bounds (docs/ALGORITHMS.md §2).
final class CalibrationTests: XCTestCase {

    private func normalValues(_ count: Int, sigma: Float, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in generator.nextNormal() * sigma }
    }

    /// IFMR by brute force, written from the contract: sort for the order statistics, then try
    /// every ratio 0.7, 0.71, …, 1.3 and keep the first smallest loss.
    private func bruteForceIFMR(_ x: [Float], k: Int, asymmetric: Bool)
        -> (index: Int, scale: Float, offset: Int, loss: Double) {
        let sorted = x.sorted()
        let maxV = max(sorted[x.count - k], 0)
        let minV = min(sorted[k - 1], 0)
        var best = (index: -1, scale: Float(0), offset: 0, loss: Double.infinity)
        for i in 0...60 {
            let r = 0.7 + 0.01 * Double(i)
            let lower: Float, upper: Float, s: Float
            if asymmetric {
                upper = Float(r * Double(maxV)); lower = minV; s = (upper - minV) / 255
            } else {
                let a = max(abs(maxV), abs(minV))
                upper = Float(r * Double(a)); lower = -upper
                s = upper / (abs(minV) > abs(maxV) ? 128 : 127)
            }
            var loss = 0.0
            for v in x {
                let q = (min(max(v, lower), upper) / s).rounded(.toNearestOrEven) * s
                loss += Double(q - v) * Double(q - v)
            }
            loss /= Double(x.count)
            if loss < best.loss {
                let offset = asymmetric ? -Int((minV / s).rounded(.toNearestOrEven)) - 128 : 0
                best = (i, s, offset, loss)
            }
        }
        return best
    }

    // MARK: IFMR settings

    func testDefaultSearchHas61Candidates() {
        let ratios = IFMRParameters().candidateRatios
        XCTAssertEqual(ratios.count, 61)
        XCTAssertEqual(ratios.first!, 0.7)
        XCTAssertEqual(ratios.last!, 1.3, accuracy: 1e-12)
        XCTAssertEqual(ratios[37], 0.7 + 37 * 0.01, "r_i by multiplication, not accumulation")
        XCTAssertEqual(IFMRParameters(searchRangeStart: 0.5, searchRangeEnd: 1.0, searchStep: 0.1)
            .candidateRatios.count, 6)
        XCTAssertEqual(IFMRParameters(searchRangeStart: 1, searchRangeEnd: 1, searchStep: 0.1)
            .candidateRatios, [1])
    }

    func testPercentileRank() {
        XCTAssertEqual(percentileRank(count: 10, percentile: 0.999999), 1)
        XCTAssertEqual(percentileRank(count: 1_000_000, percentile: 0.999999), 1)
        XCTAssertEqual(percentileRank(count: 2_000_000, percentile: 0.999999), 2)
        XCTAssertEqual(percentileRank(count: 3_500_000, percentile: 0.999999), 4)   // floor(3499996.5)
        XCTAssertEqual(percentileRank(count: 1000, percentile: 0.99), 10)
        XCTAssertEqual(percentileRank(count: 100, percentile: 0.9), 10)
        XCTAssertEqual(percentileRank(count: 500, percentile: 1 - 1e-8), 1, "1 − p < EPS gives k = 1")
        XCTAssertEqual(percentileRank(count: 5, percentile: 0.1), 5)
        // 0.57 · 100 is 56.99999999999999 in binary: without the tolerance k would be 44.
        XCTAssertEqual(percentileRank(count: 100, percentile: 0.57), 43)
    }

    func testOrderStatisticMatchesSorting() {
        var generator = SeededGenerator(seed: 9)
        // Many repeated values, as after a ReLU.
        let values: [Float] = (0..<3001).map { _ in
            let v = Float(Int(generator.next() % 40)) - 15
            return max(v, 0)
        }
        let sorted = values.sorted()
        for index in [0, 1, 17, 1500, 2999, 3000] {
            var work = values
            XCTAssertEqual(orderStatistic(&work, index: index), sorted[index], "index \(index)")
        }
    }

    // MARK: IFMR

    func testSymmetricIFMRMatchesBruteForce() throws {
        var x = normalValues(4000, sigma: 1, seed: 42)
        x += [5.5, -4.25]   // outliers set max_v; N = 4002 gives k = 1
        let result = try ifmr(x, layer: "conv1")
        let expected = bruteForceIFMR(x, k: 1, asymmetric: false)
        XCTAssertEqual(result.ratio, 0.7 + 0.01 * Double(expected.index), accuracy: 1e-12)
        XCTAssertEqual(result.scale, expected.scale)
        XCTAssertEqual(result.offset, 0)
        XCTAssertEqual(result.loss, expected.loss, accuracy: 1e-12 * expected.loss)
        XCTAssertEqual(result.clipMax, Float(result.ratio * 5.5))
        XCTAssertEqual(result.clipMin, -result.clipMax)
        XCTAssertEqual(result.scale, result.clipMax / 127, "|max_v| > |min_v| → D = 127")
        XCTAssertLessThan(result.ratio, 1.29, "the search should not sit at the top of the range")
    }

    func testSymmetricIFMRUses128WhenMinDominates() throws {
        var x = normalValues(2000, sigma: 0.5, seed: 43)
        x += [-3, 2]
        let result = try ifmr(x, layer: "fc1")
        XCTAssertEqual(result.scale, Float(result.ratio * 3) / 128)
        XCTAssertEqual(result.scale, bruteForceIFMR(x, k: 1, asymmetric: false).scale)
    }

    func testIFMRPercentileSkipsTopOutliers() throws {
        // N = 1000, p = 0.99 → k = 10: the 10th largest is the smallest outlier, 100.
        var x = (0..<990).map { Float($0) / 990 - 0.5 }
        x += (0..<10).map { Float(100 + $0) }
        let parameters = IFMRParameters(maxPercentile: 0.99, minPercentile: 0.99)
        let result = try ifmr(x, parameters: parameters, layer: "conv2")
        XCTAssertEqual(result.clipMax, Float(result.ratio * 100))
        let expected = bruteForceIFMR(x, k: 10, asymmetric: false)
        XCTAssertEqual(result.scale, expected.scale)
    }

    func testAsymmetricIFMRMatchesBruteForceWithOffset() throws {
        // Skewed data in [−1, 3]: the lower bound stays at min_v, only the upper is searched.
        var generator = SeededGenerator(seed: 44)
        var x = (0..<3000).map { _ -> Float in
            let u = generator.nextUnitFloat()
            return u * u * 4 - 1
        }
        x += [-1, 3]
        let result = try ifmr(x, parameters: IFMRParameters(asymmetric: true), layer: "conv3")
        let expected = bruteForceIFMR(x, k: 1, asymmetric: true)
        XCTAssertEqual(result.scale, expected.scale)
        XCTAssertEqual(result.offset, expected.offset)
        XCTAssertEqual(result.clipMin, -1)
        XCTAssertEqual(result.clipMax, Float(result.ratio * 3))
        // s = (c + 1)/255 with c in [2.1, 3.9], so 1/s is in [52, 82] and o in [−76, −46].
        XCTAssertEqual(result.offset, -Int((Float(-1) / result.scale).rounded(.toNearestOrEven)) - 128)
        XCTAssertTrue((-76)...(-46) ~= result.offset, "offset \(result.offset)")
    }

    func testIFMRAllZeroGivesUnitScale() throws {
        let result = try ifmr([Float](repeating: 0, count: 10), layer: "relu1")
        XCTAssertEqual(result.scale, 1)
    }

    func testIFMRRejectsNonFiniteDataNamingTheLayer() {
        for bad in [Float.nan, .infinity, -.infinity] {
            XCTAssertThrowsError(try ifmr([1, bad, 2], layer: "layer3.conv2")) { error in
                XCTAssertEqual(error as? CalibrationError, .nonFiniteValue(layer: "layer3.conv2"))
                XCTAssertTrue("\(error)".contains("layer3.conv2"))
            }
        }
        XCTAssertThrowsError(try ifmr([], layer: "x"))
    }

    func testStartingClipRangeFromSymmetricScale() throws {
        let (clipMax, clipMin) = startingClipRange(fromSymmetricScale: 0.5)
        XCTAssertEqual(clipMax, 63.5)
        XCTAssertEqual(clipMin, -64)
        // Those bounds reproduce the symmetric grid in ULQ: s = 255·s*/255, o = 0.
        let result = try ifmr(normalValues(1000, sigma: 1, seed: 45), layer: "conv1")
        let start = result.startingClipRange
        let state = ActivationQuantizerState(fixedMin: false, clipMax: start.clipMax, clipMin: start.clipMin)
        _ = ulqFakeQuantize(Variable(.scalar(0)), state: state, tape: nil)
        XCTAssertEqual(state.scale, result.scale, accuracy: result.scale * 1e-6)
        XCTAssertEqual(state.offset, 0)
    }

    // MARK: HFMG

    /// The documented error: each bin's mass at its centre, snapped to the 256-level grid of [a, b].
    private func reconstructionError(_ counts: [Double], lower: Double, width: Double,
                                     a: Double, b: Double) -> Double {
        let step = (b - a) / 255
        var total = 0.0
        for (j, c) in counts.enumerated() where c > 0 {
            let centre = lower + (Double(j) + 0.5) * width
            let level = min(max(((centre - a) / step).rounded(.toNearestOrEven), 0), 255)
            total += c * (centre - (a + level * step)) * (centre - (a + level * step))
        }
        return total
    }

    func testHFMGRejectsBadBinCount() {
        XCTAssertThrowsError(try hfmg([0, 1], numberOfBins: 1000, layer: "conv4")) { error in
            XCTAssertEqual(error as? CalibrationError, .invalidBinCount(1000, layer: "conv4"))
        }
        XCTAssertThrowsError(try hfmg([0, .nan], numberOfBins: 1024, layer: "conv4")) { error in
            XCTAssertEqual(error as? CalibrationError, .nonFiniteValue(layer: "conv4"))
        }
        XCTAssertNoThrow(try hfmg([0, 1], numberOfBins: 2048, layer: "conv4"))
    }

    func testHFMGExcludesFarOutlier() {
        // Heavy block in bins 0..<200 of [0, 1024), one count in the last bin.
        var counts = [Double](repeating: 0, count: 1024)
        for j in 0..<200 { counts[j] = 1e6 }
        counts[1023] = 1
        let result = hfmgSearch(Histogram(counts: counts, lowerEdge: 0, upperEdge: 1024))
        XCTAssertEqual(result.clipMin, 0)
        XCTAssertEqual(result.startBin, 0)
        XCTAssertLessThan(result.clipMax, 300, "the range should drop the outlier")
        XCTAssertGreaterThanOrEqual(result.clipMax, 200, "the block can only shrink by a quarter of the bins")
        let full = reconstructionError(counts, lower: 0, width: 1, a: 0, b: 1024)
        let chosen = reconstructionError(counts, lower: 0, width: 1, a: 0, b: Double(result.clipMax))
        XCTAssertEqual(result.error, chosen, accuracy: 1e-9 * chosen)
        XCTAssertLessThan(chosen, full)
        // It is the best of every range [0, E) reachable here (the greedy path trims only the right).
        let bestOfPath = (256...1024).map {
            reconstructionError(counts, lower: 0, width: 1, a: 0, b: Double($0))
        }.min()!
        XCTAssertEqual(result.error, bestOfPath, accuracy: 1e-9 * bestOfPath)
    }

    func testHFMGTrimsTheSparserSide() {
        // Mirror image: the outlier is on the left, so the left end must move.
        var counts = [Double](repeating: 0, count: 1024)
        for j in 824..<1024 { counts[j] = 1e6 }
        counts[0] = 1
        let result = hfmgSearch(Histogram(counts: counts, lowerEdge: -1024, upperEdge: 0))
        XCTAssertEqual(result.endBin, 1024)
        XCTAssertEqual(result.clipMax, 0)
        XCTAssertGreaterThan(result.clipMin, -300)
        XCTAssertLessThanOrEqual(result.clipMin, -200)
    }

    /// Symmetric HFMG: a block of 200 bins around 0 in [−512, 512) and one far outlier. The half
    /// width b it picks has the least error of all candidates [−512 + i, 512 − i] (i ≤ 384),
    /// computed here directly with levels k·b/127, k = −128…127.
    func testSymmetricHFMGExcludesAFarOutlierAndIsTheBestCandidate() {
        var counts = [Double](repeating: 0, count: 1024)
        for j in 412..<612 { counts[j] = 1e6 }
        counts[1023] = 1
        let b = hfmgSymmetricSearch(Histogram(counts: counts, lowerEdge: -512, upperEdge: 512))
        func error(_ half: Double) -> Double {
            let step = half / 127
            var sum = 0.0
            for (j, mass) in counts.enumerated() where mass > 0 {
                let centre = -512 + Double(j) + 0.5
                let level = min(max((centre / step).rounded(.toNearestOrEven), -128), 127)
                sum += mass * (centre - level * step) * (centre - level * step)
            }
            return sum
        }
        let candidates = (0...384).map { 512 - Double($0) }
        let best = candidates.min { error($0) < error($1) }!
        XCTAssertEqual(Double(b), best)
        XCTAssertLessThan(b, 200, "the outlier at 511.5 should be clipped")
        XCTAssertGreaterThanOrEqual(b, 128, "a quarter of the bins remain at least")
    }

    /// HFMG with asymmetric false gives (b, −128·b/127): a grid with zero point 0.
    func testSymmetricHFMGStartsOnAZeroPointZeroGrid() throws {
        let x = (0..<20_000).map { Float($0 % 2000) / 1000 - 0.7 }
        let (clipMax, clipMin) = try HFMGParameters(binCount: 1024, asymmetric: false)
            .startingClipRange(batches: [Tensor(shape: [x.count], storage: x)], layer: "conv1")
        XCTAssertEqual(clipMin, -128 * (clipMax / 127))
        XCTAssertGreaterThan(clipMax, 1.2)
        XCTAssertEqual(QuantizationGrid(bits: 8, clipMax: clipMax, clipMin: clipMin).offset, 0)
        XCTAssertEqual(try HFMGParameters(binCount: 1024).startingClipRange(batches: [Tensor(shape: [x.count], storage: x)], layer: "c").clipMin,
                       -0.7, accuracy: 0.01, "asymmetric (the default) keeps HFMG's own lower bound")
    }

    func testHFMGOnUniformDataKeepsNearlyTheFullRange() throws {
        let x = (0..<100_000).map { Float($0) / 100_000 }
        let result = try hfmg(x, numberOfBins: 1024, layer: "conv1")
        XCTAssertLessThan(result.clipMin, 0.02)
        XCTAssertGreaterThan(result.clipMax, 0.98)
        XCTAssertLessThanOrEqual(result.clipMax, x.last!)
    }

    func testHistogramFromValues() {
        let h = Histogram(values: [0, 0.5, 1, 1, 0.25], binCount: 4)
        XCTAssertEqual(h.counts, [1, 1, 1, 2])   // edges go up; the max goes to the last bin
        XCTAssertEqual(h.lowerEdge, 0)
        XCTAssertEqual(h.upperEdge, 1)
    }
}
