import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

final class TrainingTests: XCTestCase {
    func lenet(seed: UInt64 = 1) throws -> Model {
        try Model(spec: ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json")), seed: seed)
    }

    /// One epoch on 4000 real images must clearly learn: a broken gradient or optimizer stays near 10 %.
    func testOneEpochOnFashionMNISTSliceLearns() throws {
        let train = try fashionMNIST(.train, count: 4000)
        let test = try fashionMNIST(.test, count: 1000)
        var settings = RunSettings()
        settings.epochs = 1
        settings.batchSize = 32
        settings.learningRate = 0.05
        settings.schedule = .constant
        let trainer = Trainer(model: try lenet(), settings: settings)
        let before = trainer.evaluate(test)
        let summary = try trainer.trainEpoch(on: train, test: test)
        XCTAssertLessThan(before.accuracy, 0.25)
        XCTAssertGreaterThan(summary.test.accuracy, 0.68, "accuracy floor after 1 epoch on 4000 images")
        XCTAssertLessThan(summary.test.loss, before.loss * 0.5)
    }

    func testSameSeedGivesIdenticalWeights() throws {
        let train = try fashionMNIST(.train, count: 256)
        var settings = RunSettings()
        settings.batchSize = 64
        func run(seed: UInt64) throws -> [Tensor] {
            settings.seed = seed
            let model = try lenet(seed: seed)
            let trainer = Trainer(model: model, settings: settings)
            _ = try trainer.trainEpoch(on: train, test: train.prefix(64))
            return model.parameters.map(\.variable.value)
        }
        XCTAssertEqual(try run(seed: 7), try run(seed: 7))
        XCTAssertNotEqual(try run(seed: 7), try run(seed: 8))
    }

    func testNonFiniteLossStopsTrainingAndNamesTheStep() throws {
        let train = try fashionMNIST(.train, count: 512)
        var settings = RunSettings()
        settings.learningRate = 1e12
        settings.momentum = 0
        settings.schedule = .constant
        let trainer = Trainer(model: try lenet(), settings: settings)
        XCTAssertThrowsError(try trainer.trainEpoch(on: train, test: train.prefix(64))) { error in
            guard case let TrainingError.nonFiniteLoss(_, step, _) = error else { return XCTFail("got \(error)") }
            XCTAssertGreaterThan(step, 0)
            XCTAssertTrue("\(error)".contains("step \(step)"))
        }
    }

    func testSGDMomentumAndWeightDecayMatchHandComputedSteps() {
        // w = 1, g = 0.5, lr 0.1, μ 0.9, λ 0.01: v1 = 0.51, w1 = 0.949; v2 = 0.9·0.51 + 0.5 + 0.00949 = 0.96849
        let w = Variable(.scalar(1), requiresGrad: true)
        let sgd = SGD(learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        w.grad = .scalar(0.5)
        sgd.step([NamedVariable("w", w)])
        XCTAssertEqual(w.value.storage[0], 0.949, accuracy: 1e-6)
        XCTAssertEqual(w.grad?.storage[0], 0, "the optimizer zeroes gradients")
        w.grad = .scalar(0.5)
        sgd.step([NamedVariable("w", w)])
        XCTAssertEqual(w.value.storage[0], 0.949 - 0.1 * 0.96849, accuracy: 1e-6)
    }

    /// CKernels/optimizer.c against the Swift loops it replaced (`SGD.usesReferenceLoops`): the
    /// same bits over several steps, with and without momentum, decayed or not (a quantizer
    /// bound), sizes that end in vector tails, and ±0, tiny and large values.
    func testSGDKernelGivesTheReferenceLoopsBits() {
        defer { SGD.usesReferenceLoops = false }
        let names = ["conv.weight", "conv.bias", "conv.act_quant.clip_max", "fc.weight"]
        let sizes = [37, 1, 1, 1003]
        func run(reference: Bool, momentum: Float) -> [[UInt32]] {
            SGD.usesReferenceLoops = reference
            var rng = SeededGenerator(seed: 31)
            let parameters = zip(names, sizes).map { name, size in
                NamedVariable(name, Variable(Tensor.uniform([size], bound: 3, using: &rng), requiresGrad: true))
            }
            parameters[3].variable.value.storage[0...3] = [0, -0.0, 1e-38, 3e38]
            let sgd = SGD(learningRate: 0.05, momentum: momentum, weightDecay: 5e-4)
            var bits: [[UInt32]] = []
            for step in 0..<4 {
                for p in parameters where step != 2 || p.name != "conv.bias" {   // one step on a zeroed gradient
                    p.variable.grad = Tensor.uniform(p.variable.shape, bound: 1, using: &rng)
                }
                sgd.step(parameters)
                for p in parameters {
                    bits.append(p.variable.value.storage.map(\.bitPattern))
                    bits.append(p.variable.grad!.storage.map(\.bitPattern))
                }
                bits += sgd.state.map { $0.tensor.storage.map(\.bitPattern) }
            }
            return bits
        }
        for momentum: Float in [0.9, 0] {
            let kernel = run(reference: false, momentum: momentum)
            XCTAssertEqual(kernel, run(reference: true, momentum: momentum), "momentum \(momentum)")
            XCTAssertTrue(kernel.count > 16)
        }
    }

    /// Tensor.isFinite (the trainer's per-step gradient check): false for NaN and ±∞ anywhere,
    /// vector tails included; true for ±0, subnormals and the largest floats.
    func testIsFiniteFindsEveryNonFiniteValue() {
        let finite: [Float] = [0, -0.0, .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
                               -.greatestFiniteMagnitude, 1, -3.5]
        XCTAssertTrue(Tensor(shape: [0], storage: []).isFinite)
        for count in [1, 7, 16, 33, 1000] {
            let values = (0..<count).map { finite[$0 % finite.count] }
            XCTAssertTrue(Tensor(shape: [count], storage: values).isFinite, "\(count)")
            for bad: Float in [.nan, -.nan, .signalingNaN, .infinity, -.infinity] {
                for position in Set([0, count / 2, count - 1]) {
                    var broken = values
                    broken[position] = bad
                    XCTAssertFalse(Tensor(shape: [count], storage: broken).isFinite, "\(bad) at \(position) of \(count)")
                }
            }
        }
    }

    func testAdamFirstStepMovesByLearningRate() {
        // After bias correction the first Adam step is lr · g/|g| (up to ε).
        let w = Variable(Tensor(shape: [2], storage: [1, -1]), requiresGrad: true)
        let adam = Adam(learningRate: 0.01)
        w.grad = Tensor(shape: [2], storage: [3, -0.2])
        adam.step([NamedVariable("w", w)])
        XCTAssertEqual(w.value.storage[0], 0.99, accuracy: 1e-6)
        XCTAssertEqual(w.value.storage[1], -0.99, accuracy: 1e-6)
    }

    func testSchedules() {
        XCTAssertEqual(LearningRateSchedule.step(every: 2, factor: 0.1).rate(base: 1, epoch: 3), 0.1, accuracy: 1e-7)
        XCTAssertEqual(LearningRateSchedule.cosine(epochs: 4, floor: 0).rate(base: 1, epoch: 2), 0.5, accuracy: 1e-6)
        XCTAssertEqual(LearningRateSchedule.cosine(epochs: 4, floor: 0.1).rate(base: 1, epoch: 0), 1, accuracy: 1e-6)
    }
}
