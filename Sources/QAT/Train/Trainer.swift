import Foundation

public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(epoch: Int, step: Int, value: Float)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(epoch, step, value):
            return "training stopped: the loss became \(value) at epoch \(epoch + 1), step \(step) (try a lower learning rate)"
        }
    }
}

public struct Evaluation: Sendable {
    public var loss: Double
    public var accuracy: Double
    public var count: Int
}

public struct EpochSummary: Sendable {
    public var epoch: Int
    public var learningRate: Float
    public var train: Evaluation
    public var test: Evaluation
    public var imagesPerSecond: Double
    public var seconds: Double
}

/// The training loop: shuffled mini-batches, forward on a fresh tape, backward, optimizer step.
///
/// The order of epoch e comes from (seed, e) alone, so a run resumed at an epoch boundary sees
/// exactly the batches the uninterrupted run would have.
public final class Trainer {
    public let model: Model
    public let optimizer: any Optimizer
    public let settings: RunSettings
    /// Completed epochs and optimizer steps.
    public private(set) var epoch = 0
    public private(set) var step = 0

    public init(model: Model, settings: RunSettings) {
        self.model = model
        self.settings = settings
        switch settings.optimizer {
        case .sgd: optimizer = SGD(learningRate: settings.learningRate, momentum: settings.momentum, weightDecay: settings.weightDecay)
        case .adam: optimizer = Adam(learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        }
    }

    /// The sample order of one epoch.
    public func order(epoch: Int, count: Int) -> [Int] {
        var generator = SeededGenerator(seed: settings.seed &* 0x2545_F491_4F6C_DD1D &+ UInt64(epoch))
        return generator.permutation(count)
    }

    /// One optimizer step on one batch; returns the batch loss and the number of correct predictions.
    /// With `timing`, each layer's forward and backward time is recorded (profiling).
    public func trainStep(images: Tensor, labels: [Int32], timing: StepTiming? = nil) throws -> (loss: Float, correct: Int) {
        let tape = Tape()
        let logits = model.forward(images, training: true, tape: tape, timing: timing)
        tape.currentLabel = "loss"
        let (loss, correct) = timing.map { $0.measure("loss") { softmaxCrossEntropy(logits, labels: labels, tape: tape) } }
            ?? softmaxCrossEntropy(logits, labels: labels, tape: tape)
        let value = loss.value.storage[0]
        guard value.isFinite else { throw TrainingError.nonFiniteLoss(epoch: epoch, step: step, value: value) }
        tape.backward(from: loss, timing: timing)
        if let timing {
            timing.measure("optimizer") { optimizer.step(model.parameters) }
        } else {
            optimizer.step(model.parameters)
        }
        step += 1
        return (value, correct)
    }

    /// Trains one epoch, then evaluates on `test`. `progress` sees (batch, batches, running loss).
    public func trainEpoch(on train: Dataset, test: Dataset,
                           progress: ((Int, Int, Double) -> Void)? = nil) throws -> EpochSummary {
        optimizer.learningRate = settings.schedule.rate(base: settings.learningRate, epoch: epoch)
        let order = self.order(epoch: epoch, count: train.count)
        let batches = (train.count + settings.batchSize - 1) / settings.batchSize
        var lossSum = 0.0, correct = 0
        let start = Date()
        for b in 0..<batches {
            let indices = order[(b * settings.batchSize)..<min((b + 1) * settings.batchSize, train.count)]
            let batch = train.batch(indices)
            let result = try trainStep(images: batch.images, labels: batch.labels)
            lossSum += Double(result.loss) * Double(indices.count)
            correct += result.correct
            progress?(b + 1, batches, lossSum / Double(min((b + 1) * settings.batchSize, train.count)))
        }
        let seconds = Date().timeIntervalSince(start)
        let trainEvaluation = Evaluation(loss: lossSum / Double(train.count),
                                         accuracy: Double(correct) / Double(train.count), count: train.count)
        let testEvaluation = evaluate(test)
        epoch += 1
        return EpochSummary(epoch: epoch, learningRate: optimizer.learningRate, train: trainEvaluation,
                            test: testEvaluation, imagesPerSecond: Double(train.count) / seconds, seconds: seconds)
    }

    /// Loss and accuracy in eval mode (BN running statistics, no tape).
    public func evaluate(_ data: Dataset) -> Evaluation {
        Trainer.evaluate(model, on: data, batchSize: settings.evalBatchSize)
    }

    public static func evaluate(_ model: Model, on data: Dataset, batchSize: Int = 256) -> Evaluation {
        var lossSum = 0.0, correct = 0
        var start = 0
        while start < data.count {
            let end = min(start + batchSize, data.count)
            let batch = data.batch(Array(start..<end)[...])
            let logits = model.forward(batch.images, training: false, tape: nil)
            let (loss, right) = softmaxCrossEntropy(logits, labels: batch.labels, tape: nil)
            lossSum += Double(loss.value.storage[0]) * Double(end - start)
            correct += right
            start = end
        }
        return Evaluation(loss: lossSum / Double(max(data.count, 1)),
                          accuracy: Double(correct) / Double(max(data.count, 1)), count: data.count)
    }
}
