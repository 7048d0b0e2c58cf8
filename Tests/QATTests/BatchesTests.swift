import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// The one batch iterator (`Dataset.batches`, `cyclingBatches`) and the one evaluation loop
/// (`Evaluator`), on hand-computed cases.
final class BatchesTests: XCTestCase {
    /// Sample i is the single pixel i, labelled i % 3, so a batch shows which samples it holds.
    func numbered(_ count: Int) -> Dataset {
        Dataset(images: (0..<count).map(Float.init), labels: (0..<count).map { Int32($0 % 3) }, sampleShape: [1])
    }

    func testAPassCutsTheOrderIntoBatchesWithAShortLastOne() {
        let batches = Array(numbered(7).batches(size: 3))
        XCTAssertEqual(batches.map { Array($0.indices) }, [[0, 1, 2], [3, 4, 5], [6]])
        XCTAssertEqual(batches.map(\.index), [0, 1, 2])
        XCTAssertEqual(batches.map(\.images.storage), [[0, 1, 2], [3, 4, 5], [6]])
        XCTAssertEqual(batches.map(\.images.shape), [[3, 1], [3, 1], [1, 1]])
        XCTAssertEqual(batches.map(\.labels), [[0, 1, 2], [0, 1, 2], [0]])
        XCTAssertEqual(numbered(7).batches(size: 3).batchesPerPass, 3)
        XCTAssertEqual(Array(numbered(6).batches(size: 3)).map(\.count), [3, 3])
        XCTAssertTrue(Array(numbered(0).batches(size: 3)).isEmpty)
    }

    func testAPassStartsAtALaterBatchAndStopsAfterALimit() {
        let data = numbered(7)
        XCTAssertEqual(Array(data.batches(size: 3, first: 1)).map { Array($0.indices) }, [[3, 4, 5], [6]])
        XCTAssertEqual(Array(data.batches(size: 3, first: 1)).map(\.index), [1, 2])
        XCTAssertEqual(Array(data.batches(size: 3, limit: 2)).map { Array($0.indices) }, [[0, 1, 2], [3, 4, 5]])
        XCTAssertEqual(Array(data.batches(size: 3, first: 2, limit: 5)).map { Array($0.indices) }, [[6]])
        XCTAssertTrue(Array(data.batches(size: 3, first: 3)).isEmpty)
        XCTAssertTrue(Array(data.batches(size: 3, limit: 0)).isEmpty)
    }

    /// The permutations are those of the training loop before the iterator existed (SplitMix64
    /// seeded with seed · 0x2545F4914F6CDD1D + epoch, Fisher-Yates from the end), computed
    /// independently in Python.
    func testTheShuffledOrderIsTheEpochPermutation() {
        XCTAssertEqual(BatchOrder.shuffled(seed: 42, epoch: 0).indices(count: 7), [4, 2, 3, 6, 0, 5, 1])
        XCTAssertEqual(BatchOrder.shuffled(seed: 42, epoch: 1).indices(count: 7), [0, 4, 1, 5, 3, 2, 6])
        XCTAssertEqual(BatchOrder.shuffled(seed: 0, epoch: 0).indices(count: 7), [6, 3, 1, 5, 4, 0, 2])
        XCTAssertEqual(BatchOrder.sequential.indices(count: 4), [0, 1, 2, 3])

        let batches = Array(numbered(7).batches(size: 3, order: .shuffled(seed: 42, epoch: 0)))
        XCTAssertEqual(batches.map { Array($0.indices) }, [[4, 2, 3], [6, 0, 5], [1]])
        XCTAssertEqual(batches.map(\.images.storage), [[4, 2, 3], [6, 0, 5], [1]])
        XCTAssertEqual(batches.map(\.labels), [[1, 2, 0], [0, 0, 2], [1]])

        var settings = RunSettings()
        settings.seed = 42
        XCTAssertEqual(Trainer(model: try! Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))),
                               settings: settings).order(epoch: 1), .shuffled(seed: 42, epoch: 1))
    }

    /// A resumed epoch draws exactly the batches the rest of the uninterrupted epoch would.
    func testResumingMidEpochDrawsTheRemainingBatchesOfTheSameOrder() {
        let data = numbered(7), order = BatchOrder.shuffled(seed: 42, epoch: 1)
        let whole = Array(data.batches(size: 2, order: order))
        let resumed = Array(data.batches(size: 2, order: order, first: 2))
        XCTAssertEqual(whole.map { Array($0.indices) }, [[0, 4], [1, 5], [3, 2], [6]])
        XCTAssertEqual(resumed.map { Array($0.indices) }, [[3, 2], [6]])
        XCTAssertEqual(resumed.map(\.index), [2, 3])
    }

    /// Calibration looks at the first batches of epoch 0 under the run's seed and batch size.
    func testCalibrationBatchesAreTheFirstBatchesOfEpochZero() {
        var settings = RunSettings()
        settings.seed = 42
        settings.batchSize = 3
        let batches = Trainer.calibrationBatches(from: numbered(7), count: 2, settings: settings)
        XCTAssertEqual(batches.map(\.storage), [[4, 2, 3], [6, 0, 5]])
        XCTAssertEqual(Trainer.calibrationBatches(from: numbered(7), count: 9, settings: settings).count, 3)
    }

    /// Window k starts at 3k mod (7 − 3 + 1) = 0, 3, 1, 4, 2, 0: always full, never past the end.
    func testCyclingBatchesAreFullWindowsThatWrap() {
        let data = numbered(7)
        XCTAssertEqual(Array(data.cyclingBatches(size: 3, count: 6)).map { Array($0.indices) },
                       [[0, 1, 2], [3, 4, 5], [1, 2, 3], [4, 5, 6], [2, 3, 4], [0, 1, 2]])
        XCTAssertEqual(Array(data.cyclingBatches(size: 3, count: 3)).map(\.index), [0, 1, 2])
        // In a shuffled order the windows are taken over the permutation [4, 2, 3, 6, 0, 5, 1].
        XCTAssertEqual(Array(data.cyclingBatches(size: 3, order: .shuffled(seed: 42, epoch: 0), count: 3)).map { Array($0.indices) },
                       [[4, 2, 3], [6, 0, 5], [2, 3, 6]])
        // Fewer samples than a batch: every window is the whole dataset.
        XCTAssertEqual(Array(data.cyclingBatches(size: 10, count: 2)).map { Array($0.indices) },
                       [Array(0..<7), Array(0..<7)])
    }

    /// Logits [x, 0] for pixel x over two classes: predictions 0, 1, 0 (a tie goes to the first).
    struct PixelClassifier: Classifier {
        func logits(for images: Tensor) -> Tensor {
            Tensor(shape: [images.shape[0], 2], storage: images.storage.flatMap { [$0, 0] })
        }
    }

    func testTheEvaluationLoopSumsLossAndCountsAccuracyPerBatch() {
        let data = Dataset(images: [1, -1, 0], labels: [0, 0, 1], sampleShape: [1])
        var seen: [[Int]] = []
        let result = Evaluator.evaluate(PixelClassifier(), on: data, batchSize: 2) { batch, logits in
            seen.append(Array(batch.indices))
            XCTAssertEqual(logits.shape, [batch.count, 2])
        }
        XCTAssertEqual(seen, [[0, 1], [2]])
        XCTAssertEqual(result.count, 3)
        XCTAssertEqual(result.correct, 1)
        XCTAssertEqual(result.accuracy, 1.0 / 3)
        // −log softmax of the label: ln(1 + e⁻¹), 1 + ln(1 + e⁻¹), ln 2.
        let expected = (2 * log(1 + exp(-1.0)) + 1 + log(2.0)) / 3
        XCTAssertEqual(result.loss, expected, accuracy: 1e-6)
        XCTAssertEqual(argmaxRows(PixelClassifier().logits(for: Tensor(shape: [3, 1], storage: [1, -1, 0]))), [0, 1, 0])
    }

    func testSideBySideEvaluationScoresEachForwardOnTheSameBatches() {
        let data = Dataset(images: [1, -1, 0], labels: [0, 0, 1], sampleShape: [1])
        let flipped = { (images: Tensor) -> Tensor in
            Tensor(shape: [images.shape[0], 2], storage: images.storage.flatMap { [0, $0] })
        }
        var batches = 0
        let results = Evaluator.evaluate([PixelClassifier().logits(for:), flipped], on: data, batchSize: 2) { _, logits in
            XCTAssertEqual(logits.count, 2)
            batches += 1
        }
        XCTAssertEqual(batches, 2)
        XCTAssertEqual(results.map(\.correct), [1, 1])   // flipped predicts 1, 0, 0: right on sample 1
        XCTAssertEqual(results[0].loss, Evaluator.evaluate(PixelClassifier(), on: data, batchSize: 2).loss)
    }
}
