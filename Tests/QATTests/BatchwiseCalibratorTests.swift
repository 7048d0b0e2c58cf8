import Foundation
import XCTest
@testable import QATCore
@testable import QATModel

/// The calibrators Vitis AI names (maxmin, percentile, entropy, mse) and `calib_statistic_method`,
/// each against a hand-computed case (docs/ALGORITHMS.md §2).
final class BatchwiseCalibratorTests: XCTestCase {
    func batch(_ values: [Float]) -> Tensor { Tensor(shape: [values.count], storage: values) }

    /// The symmetric start of threshold T: s = T/127, (127·s, −128·s).
    func symmetric(_ threshold: Float) -> (Float, Float) {
        let s = threshold / 127
        return (127 * s, -128 * s)
    }

    func assertRange(_ actual: (clipMax: Float, clipMin: Float), _ expected: (Float, Float), line: UInt = #line) {
        XCTAssertEqual(actual.clipMax, expected.0, line: line)
        XCTAssertEqual(actual.clipMin, expected.1, line: line)
    }

    // MARK: calib_statistic_method

    func testStatisticsCombinePerBatchValues() {
        XCTAssertEqual(BatchStatistic.max.combine([3, 4, 1], widerIsLarger: true), 4)
        XCTAssertEqual(BatchStatistic.max.combine([-3, -4, -1], widerIsLarger: false), -4)
        XCTAssertEqual(BatchStatistic.mean.combine([3, 4, 5, 8], widerIsLarger: true), 5)
        XCTAssertEqual(BatchStatistic.median.combine([5, 3, 4], widerIsLarger: true), 4)
        XCTAssertEqual(BatchStatistic.median.combine([8, 3, 4, 5], widerIsLarger: true), 4.5, "even count: mean of the middle two")
        XCTAssertEqual(BatchStatistic.modal.combine([3, 4, 3, 5], widerIsLarger: true), 3)
        XCTAssertEqual(BatchStatistic.modal.combine([3, 4, 4, 3], widerIsLarger: true), 4, "tie: the wider")
        XCTAssertEqual(BatchStatistic.modal.combine([-3, -4, -4, -3], widerIsLarger: false), -4, "tie: the wider")
    }

    // MARK: maxmin

    func testMaxMinCoversEveryValueWithStatisticMax() throws {
        let batches = [batch([1, -3, 2]), batch([0.5, 4])]
        assertRange(try MaxMinCalibrator().startingClipRange(batches: batches, layer: "x"), symmetric(4))
        assertRange(try MaxMinCalibrator(asymmetric: true).startingClipRange(batches: batches, layer: "x"), (4, -3))
        // Per batch thresholds 3 and 4; ranges [−3, 2] and [0, 4].
        assertRange(try MaxMinCalibrator(asymmetric: false, statistic: .mean).startingClipRange(batches: batches, layer: "x"),
                    symmetric(3.5))
        assertRange(try MaxMinCalibrator(asymmetric: true, statistic: .mean).startingClipRange(batches: batches, layer: "x"),
                    (3, -1.5))
        // Non-negative data: the asymmetric range starts at 0.
        assertRange(try MaxMinCalibrator(asymmetric: true).startingClipRange(batches: [batch([1, 2])], layer: "x"), (2, 0))
        XCTAssertThrowsError(try MaxMinCalibrator().startingClipRange(batches: [], layer: "conv9")) { error in
            XCTAssertEqual("\(error)", "layer conv9: no calibration data was collected")
        }
        XCTAssertThrowsError(try MaxMinCalibrator().startingClipRange(batches: [batch([1, .nan])], layer: "conv9")) { error in
            XCTAssertEqual("\(error)", "layer conv9: calibration data contains NaN or infinity")
        }
    }

    // MARK: percentile

    func testPercentileTakesTheKthLargest() throws {
        let ramp = batch((1...1000).map { Float($0) })
        // k = 1000 − floor(0.999·1000) = 1: the largest; k = 10 at 99 %: the 10th largest, 991.
        assertRange(try PercentileCalibrator(percentage: 99.9).startingClipRange(batches: [ramp], layer: "x"), symmetric(1000))
        assertRange(try PercentileCalibrator(percentage: 99).startingClipRange(batches: [ramp], layer: "x"), symmetric(991))
        let negative = batch((1...1000).map { -Float($0) })
        assertRange(try PercentileCalibrator(percentage: 99).startingClipRange(batches: [negative], layer: "x"), symmetric(991))
        // −500…499: the 10th largest is 490, the 10th smallest −491.
        let centred = batch((-500..<500).map { Float($0) })
        assertRange(try PercentileCalibrator(percentage: 99, asymmetric: true).startingClipRange(batches: [centred], layer: "x"),
                    (490, -491))
        // Two batches with statistic median: thresholds 991 and 9.91·… → the mean of the two.
        let tenth = batch((1...1000).map { Float($0) / 10 })
        assertRange(try PercentileCalibrator(percentage: 99, statistic: .median).startingClipRange(batches: [ramp, tenth], layer: "x"),
                    symmetric(Float((991.0 + Double(Float(99.1))) / 2)))
    }

    // MARK: entropy

    func testKLDivergenceOfHandComputedHistograms() {
        // 128 bins kept: one bin per level, Q = P.
        XCTAssertEqual(EntropyCalibrator.klDivergence([Double](repeating: 1, count: 128), keeping: 128), 0)
        // Pairs (1, 3) merged into one level of mass 4 spread as (2, 2): KL = ¼·ln(½) + ¾·ln(3/2).
        let pairs = (0..<128).flatMap { _ in [1.0, 3.0] }
        XCTAssertEqual(EntropyCalibrator.klDivergence(pairs, keeping: 256), 0.25 * log(0.5) + 0.75 * log(1.5), accuracy: 1e-12)
        // 128 ones, 127 empty bins, then 128 in bin 255. Keeping 128 bins folds the 128 outliers
        // into bin 127: p = 1/256 (127 bins) and 129/256, q = 1/128 everywhere.
        let outlier = [Double](repeating: 1, count: 128) + [Double](repeating: 0, count: 127) + [128]
        let expected = 127.0 / 256 * log(0.5) + 129.0 / 256 * log(129.0 / 2)
        XCTAssertEqual(EntropyCalibrator.klDivergence(outlier, keeping: 128), expected, accuracy: 1e-12)
        // Keeping 200 bins ends in an empty bin holding the outliers: Q is 0 where P is not.
        XCTAssertEqual(EntropyCalibrator.klDivergence(outlier, keeping: 200), .infinity)
        // Keeping all 256: pairs merge to (1, 1) and (0, 128), Q = P.
        XCTAssertEqual(EntropyCalibrator.klDivergence(outlier, keeping: 256), 0)
        XCTAssertEqual(EntropyCalibrator.klSearch(outlier), 256)
    }

    /// The zeros of a ReLU do not move the threshold: bin 0 takes bin 1's count. Without that,
    /// 80 % zeros made the search keep the narrowest candidate (128 of 2048 bins).
    func testEntropyThresholdIgnoresTheZerosOfAReLU() throws {
        var generator = SeededGenerator(seed: 7)
        let positive = (0..<20_000).map { _ in Float(-log(Double.random(in: 1e-9..<1, using: &generator))) }
        let withZeros = positive + [Float](repeating: 0, count: 80_000)
        let plain = try EntropyCalibrator().threshold(positive, layer: "x")
        XCTAssertEqual(try EntropyCalibrator().threshold(withZeros, layer: "x"), plain)
        let largest = positive.max()!
        XCTAssertGreaterThan(plain, largest * 128 / 2048 * 1.5, "not the narrowest candidate")
    }

    func testEntropyThresholdIsABinEdge() throws {
        // 2048 bins over [0, 100]: ten thousand values below 1 sit in bins 0…20 and 100 in bin 2047.
        // Every candidate but 2048 ends in an empty bin holding the outlier (KL = ∞): T = 100.
        let values = (0..<10_000).map { Float($0) / 10_000 } + [100]
        assertRange(try EntropyCalibrator().startingClipRange(batches: [batch(values)], layer: "x"), symmetric(100))
        // The same with −100: the histogram is of |x|.
        let mirrored = (0..<10_000).map { Float($0) / 10_000 } + [-100]
        assertRange(try EntropyCalibrator().startingClipRange(batches: [batch(mirrored)], layer: "x"), symmetric(100))
        // Bins of width 1 (max|x| = 2048): bins 0…127 hold x = j + 0.5, 1 value in even bins and
        // 100 in odd ones, and one outlier sits in bin 2047. Candidate 128 keeps one level per bin
        // and only folds the outlier into bin 127 (KL tiny); 2048 keeps the outlier but merges 16
        // bins per level, flattening the alternation (KL ≈ that of the pairs above); candidates in
        // between end in an empty bin (KL = ∞). So T = 128.
        var bump: [Float] = [2048]
        for j in 0..<128 {
            let count = j % 2 == 0 ? 1 : 100
            bump += [Float](repeating: Float(j) + 0.5, count: count)
        }
        XCTAssertLessThan(EntropyCalibrator.klDivergence(histogramOfMagnitudes(bump), keeping: 128),
                          EntropyCalibrator.klDivergence(histogramOfMagnitudes(bump), keeping: 2048))
        assertRange(try EntropyCalibrator().startingClipRange(batches: [batch(bump)], layer: "x"), symmetric(128))
        XCTAssertEqual(EntropyCalibrator().with(["asymmetric": .flag(true)]).conflict()?.key, "asymmetric")
    }

    func histogramOfMagnitudes(_ values: [Float]) -> [Double] {
        let width = Double(values.map { abs($0) }.max()!) / 2048
        var histogram = [Double](repeating: 0, count: 2048)
        for v in values { histogram[min(Int(Double(abs(v)) / width), 2047)] += 1 }
        return histogram
    }

    // MARK: mse

    func testMSEPicksTheThresholdWithTheSmallestError() throws {
        // Values on the grid of T = A = 1.27 (s = 0.01): only k = 100 reconstructs them exactly.
        let onGrid = (-127...127).map { Float($0) / 100 }
        assertRange(try MSECalibrator().startingClipRange(batches: [batch(onGrid)], layer: "x"), symmetric(Float(1.27)))
        // 10 000 values spread over [−1, 1] and one outlier at 50: the reference below (Double,
        // same candidates) picks the threshold, and clipping the outlier wins.
        var values = (0..<10_000).map { Float(($0 % 2001) - 1000) / 1000 }
        values.append(50)
        var best = (k: 0, error: Double.infinity)
        for k in 1...100 {
            let t = Float(50 * Double(k) / 100), s = t / 127
            var sum = 0.0
            for x in values {
                let code = min(max((x / s).rounded(.toNearestOrEven), -128), 127)
                sum += pow(Double(code * s - x), 2)
            }
            if sum / Double(values.count) < best.error { best = (k, sum / Double(values.count)) }
        }
        XCTAssertLessThan(best.k, 100)
        assertRange(try MSECalibrator().startingClipRange(batches: [batch(values)], layer: "x"),
                    symmetric(Float(50 * Double(best.k) / 100)))
        XCTAssertEqual(MSECalibrator().with(["asymmetric": .flag(true)]).conflict()?.key, "asymmetric")
        XCTAssertNil(MSECalibrator(statistic: .modal).conflict(), "the manual allows modal with mse")
    }

    // MARK: diffs

    func testDiffsPicksThePowerOfTwoGridWithTheSmallestError() throws {
        XCTAssertEqual(DiffsCalibrator.coveringExponent(127), 0)
        XCTAssertEqual(DiffsCalibrator.coveringExponent(127.0001), 1)
        XCTAssertEqual(DiffsCalibrator.coveringExponent(63.5), -1)
        XCTAssertEqual(DiffsCalibrator.coveringExponent(1e-3), -16)   // 127·2⁻¹⁶ ≈ 0.00194, 127·2⁻¹⁷ < 1e-3
        // Three values 1.25 and one 130: A = 130, k₀ = 1 (127·2 ≥ 130 > 127).
        // s = 2: 1.25 → code 1 → 2 (error 0.5625 each), 130 exact: mean 1.6875/4 = 0.421875.
        // s = 1: 1.25 → 1 (0.0625 each), 130 → 127 (9): mean 9.1875/4 = 2.296875. s = 2 wins: T = 254.
        let few = [Float](repeating: 1.25, count: 3) + [130]
        assertRange(try DiffsCalibrator().startingClipRange(batches: [batch(few)], layer: "x"), (254, -256))
        // Forty values 1.25: s = 2 costs 40·0.5625/41 = 0.549, s = 1 (40·0.0625 + 9)/41 = 0.280,
        // s = 0.5 clips 130 to 63.5 (4422.25/41 alone): s = 1 wins, T = 127.
        let many = [Float](repeating: 1.25, count: 40) + [130]
        assertRange(try DiffsCalibrator().startingClipRange(batches: [batch(many)], layer: "x"), (127, -128))
        // modal over batches: two batches give T = 127, one gives 254.
        assertRange(try DiffsCalibrator().startingClipRange(batches: [batch(many), batch(few), batch(many)], layer: "x"), (127, -128))
        XCTAssertEqual(DiffsCalibrator().with(["asymmetric": .flag(true)]).conflict()?.key, "asymmetric")
        XCTAssertNil(DiffsCalibrator().conflict(), "the manual pairs diffs with modal")
    }

    /// maxmin with modal: each batch gives its covering power-of-two position 127·2^k (the smallest
    /// k with 127·2^k ≥ max |x|), and the most frequent wins.
    func testMaxMinModalTakesTheMostFrequentPowerOfTwoPosition() throws {
        let modal = MaxMinCalibrator(asymmetric: false, statistic: .modal)
        // max |x| 100 → 127 (k 0), 200 → 254 (k 1), 90 → 127, 127 → 127 exactly, 127.5 → 254.
        XCTAssertEqual(try modal.threshold([1, -100], layer: "x"), 127)
        XCTAssertEqual(try modal.threshold([200], layer: "x"), 254)
        XCTAssertEqual(try modal.threshold([-127], layer: "x"), 127)
        XCTAssertEqual(try modal.threshold([127.5], layer: "x"), 254)
        XCTAssertEqual(try modal.threshold([0.3], layer: "x"), 0.49609375, "127·2⁻⁸")
        XCTAssertEqual(try modal.threshold([0, 0], layer: "x"), 0)
        assertRange(try modal.startingClipRange(batches: [batch([100]), batch([-200]), batch([90])], layer: "x"), (127, -128))
        // Two positions once each: the widest.
        assertRange(try modal.startingClipRange(batches: [batch([100]), batch([-200])], layer: "x"), (254, -256))
        // Statistic max keeps the raw max |x|.
        XCTAssertEqual(try MaxMinCalibrator().threshold([1, -100], layer: "x"), 100)
    }

    // MARK: the manual's conflicts, and the config mapping

    func testModalIsRefusedWhereTheManualRefusesIt() {
        // maxmin takes modal on symmetric power-of-two positions only (the DPU's pair).
        XCTAssertNil(MaxMinCalibrator(asymmetric: false, statistic: .modal).conflict())
        XCTAssertEqual(MaxMinCalibrator(asymmetric: true, statistic: .modal).conflict()?.key, "calib_statistic_method")
        XCTAssertEqual(PercentileCalibrator(percentage: 99, statistic: .modal).conflict()?.key, "calib_statistic_method")
        XCTAssertEqual(EntropyCalibrator(statistic: .modal).conflict()?.key, "calib_statistic_method")
        XCTAssertNil(MaxMinCalibrator(asymmetric: true, statistic: .median).conflict())
    }

    func testSettingsRoundTripThroughConfigValues() {
        let method = PercentileCalibrator(percentage: 99.5, asymmetric: true, statistic: .median)
        let values = Dictionary(uniqueKeysWithValues: method.settingValues.map { ($0.key, $0.value) })
        XCTAssertEqual(values["calib_statistic_method"], .name("median"))
        XCTAssertEqual(values["percentage"], .number(99.5))
        XCTAssertEqual(PercentileCalibrator().with(values), method)
        XCTAssertEqual(CalibrationMethod.known.map { $0.name }, ["ifmr", "hfmg", "maxmin", "percentile", "entropy", "mse", "diffs"])
    }
}
