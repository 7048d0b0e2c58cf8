import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
import QAT

/// Random crop with zero padding and horizontal flip, counter-based: each sample's transform is a
/// hash of (seed, epoch, index), so a resumed run augments exactly as an uninterrupted one.
final class DataAugmentationTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    /// One 3×3 image 1…9 (floats, no normalisation), padding 1.
    let image = Dataset(images: (1...9).map(Float.init), labels: [0], sampleShape: [1, 3, 3])

    func crop(top: Int, left: Int, flip: Bool) -> [Float] {
        image.batch([0], transforms: [SampleTransform(padding: 1, top: top, left: left, flip: flip)]).images.storage
    }

    /// Hand-computed windows of the zero-padded image
    ///     0 0 0 0 0
    ///     0 1 2 3 0
    ///     0 4 5 6 0
    ///     0 7 8 9 0
    ///     0 0 0 0 0
    func testCropWindowsAndFlipsOfThePaddedImage() {
        XCTAssertEqual(crop(top: 1, left: 1, flip: false), [1, 2, 3, 4, 5, 6, 7, 8, 9])
        XCTAssertEqual(crop(top: 0, left: 0, flip: false), [0, 0, 0, 0, 1, 2, 0, 4, 5])
        XCTAssertEqual(crop(top: 2, left: 2, flip: false), [5, 6, 0, 8, 9, 0, 0, 0, 0])
        XCTAssertEqual(crop(top: 1, left: 1, flip: true), [3, 2, 1, 6, 5, 4, 9, 8, 7])
        // Crop first, then mirror the crop (RandomCrop, then RandomHorizontalFlip).
        XCTAssertEqual(crop(top: 0, left: 2, flip: true), [0, 0, 0, 0, 3, 2, 0, 6, 5])
    }

    /// The padding is pixel 0 before normalisation (torchvision pads the raw image): with
    /// mean 0.5 and std 0.5 it becomes −1, and an NHWC source crops the same as NCHW.
    func testPaddingIsTheNormalisedZeroPixelInEitherLayout() {
        let norm = Normalization(mean: [0.5], standardDeviation: [0.5])
        let pixels: [UInt8] = [255, 255, 255, 255]
        let nchw = Dataset(stored: .bytes(pixels), labels: [0], sampleShape: [1, 2, 2], normalization: norm)
        var nhwc = nchw
        nhwc.layout = .nhwc
        let t = SampleTransform(padding: 1, top: 0, left: 1, flip: false)
        XCTAssertEqual(nchw.batch([0], transforms: [t]).images.storage, [-1, -1, 1, 1])
        XCTAssertEqual(nhwc.batch([0], transforms: [t]).images.storage, [-1, -1, 1, 1])

        // Two channels NHWC [[[10, 20], [30, 40]], [[50, 60], [70, 80]]] with a flip and no shift.
        let two = Dataset(stored: .floats([10, 20, 30, 40, 50, 60, 70, 80]), labels: [0], sampleShape: [2, 2, 2],
                          layout: .nhwc, normalization: .identity)
        XCTAssertEqual(two.batch([0], transforms: [SampleTransform(padding: 0, top: 0, left: 0, flip: true)]).images.storage,
                       [30, 10, 70, 50, 40, 20, 80, 60])
    }

    /// A pure function of (seed, epoch, index), uniform enough: every offset 0…2P occurs, flips
    /// are about half, and changing any of the three changes the draws.
    func testTransformsAreAPureFunctionOfSeedEpochAndIndex() {
        let a = Augmentation(cropPadding: 4, horizontalFlip: true)
        let draws = (0..<4000).map { a.transform(seed: 1, epoch: 0, index: $0) }
        XCTAssertEqual(draws, (0..<4000).map { a.transform(seed: 1, epoch: 0, index: $0) })
        XCTAssertEqual(Set(draws.map(\.top)), Set(0...8))
        XCTAssertEqual(Set(draws.map(\.left)), Set(0...8))
        let flips = draws.filter(\.flip).count
        XCTAssertTrue((1800...2200).contains(flips), "\(flips) flips in 4000")
        XCTAssertNotEqual(draws, (0..<4000).map { a.transform(seed: 2, epoch: 0, index: $0) })
        XCTAssertNotEqual(draws, (0..<4000).map { a.transform(seed: 1, epoch: 1, index: $0) })
        XCTAssertFalse(Augmentation(cropPadding: 4).transform(seed: 1, epoch: 0, index: 5).flip)
        XCTAssertTrue(Augmentation().isIdentity)
    }

    /// Only training batches are augmented: evaluation and calibration see the images as stored.
    func testEvaluationAndCalibrationAreNotAugmented() throws {
        var settings = RunSettings()
        settings.data.augmentation = Augmentation(cropPadding: 2, horizontalFlip: true)
        settings.batchSize = 4
        let data = try fashionMNIST(.train, count: 8)
        let calibration = Trainer.calibrationBatches(from: data, count: 1, settings: settings)
        let plain = data.batch(Array(BatchOrder.shuffled(seed: settings.seed, epoch: 0).indices(count: 8)[0..<4])[...]).images
        XCTAssertEqual(calibration[0].storage, plain.storage)
        let augmented = Array(data.batches(size: 4, order: .shuffled(seed: settings.seed, epoch: 0), augmentation: settings.data.augmentation))
        XCTAssertNotEqual(augmented[0].images.storage, plain.storage)
    }

    /// A QAT run with augmentation, resumed from its step-2 checkpoint mid-epoch, ends with the
    /// same checkpoint as the uninterrupted run.
    func testResumedAugmentedRunIsBitIdenticalToTheUninterruptedOne() throws {
        var s = RunSettings()
        s.modelSpec = repositoryPath("Configs/models/lenet5.json")
        s.initCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
        s.trainLimit = 320
        s.testLimit = 64
        s.batchSize = 64
        s.learningRate = 0.01
        s.setEpochs(2)
        s.saveEvery = 2
        s.data.augmentation = Augmentation(cropPadding: 3, horizontalFlip: true)
        s.checkpointDirectory = folder + "/run"
        let lenet = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: lenet).utf8), file: "retrain.json"))
        let train = try fashionMNIST(.train, count: 320), test = try fashionMNIST(.test, count: 64)

        let fresh = try TrainingRun(configFile: "retrain.json", config: config, settings: s)
        fresh.log = { _ in }
        try fresh.prepareFreshStart(train: train)
        let uninterrupted = try Data(contentsOf: URL(fileURLWithPath: fresh.train(on: train, test: test)!))

        for point in ["step-2.h5", "step-6.h5"] {   // mid-epoch 1 and mid-epoch 2 (5 steps per epoch)
            var r = s
            r.checkpointDirectory = folder + "/resumed-" + point
            let saved = folder + "/saved-" + point
            try FileManager.default.copyItem(atPath: s.checkpointDirectory! + "/" + point, toPath: saved)
            let resumed = try TrainingRun(configFile: "retrain.json", config: config, settings: r)
            resumed.log = { _ in }
            try resumed.resume(from: saved, force: false)
            let final = try Data(contentsOf: URL(fileURLWithPath: resumed.train(on: train, test: test)!))
            XCTAssertEqual(final, uninterrupted, "resumed from \(point)")
        }

        // The augmentation is part of the run's record: resuming without it is refused.
        var plain = s
        plain.data.augmentation = Augmentation()
        let refused = try TrainingRun(configFile: "retrain.json", config: config, settings: plain)
        XCTAssertThrowsError(try refused.resume(from: s.checkpointDirectory! + "/step-2.h5", force: false)) {
            XCTAssertTrue("\($0)".contains("data.augment"), "\($0)")
        }
    }
}
