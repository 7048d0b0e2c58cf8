import Foundation
import QATCore
import QATData
import QATIO
import QATModel

public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(epoch: Int, step: Int, value: Float)
    case nonFiniteGradient(epoch: Int, step: Int, parameter: String)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(epoch, step, value):
            return "training stopped: the loss became \(value) at epoch \(epoch + 1), step \(step)"
        case let .nonFiniteGradient(epoch, step, parameter):
            return "training stopped: the gradient of \(parameter) is not finite at epoch \(epoch + 1), step \(step); no update was applied"
        }
    }
}

public struct EpochSummary: Sendable {
    public var epoch: Int
    public var learningRate: Float
    public var train: Evaluation
    public var test: Evaluation
    public var imagesPerSecond: Double
    public var seconds: Double
}

/// How far the current epoch has got: enough to resume it mid-way with identical results.
public struct EpochProgress: Equatable, Sendable {
    /// Batches of this epoch already trained.
    public var batch = 0
    public var lossSum = 0.0
    public var correct = 0
    public var seen = 0
    public init() {}
}

/// The training loop: shuffled mini-batches, forward on a fresh tape, backward, optimizer step.
///
/// The order of epoch e comes from (seed, e) alone, so a run resumed at any step sees exactly
/// the batches the uninterrupted run would have.
public final class Trainer {
    public let model: Model
    public let optimizer: any Optimizer
    public let settings: RunSettings
    /// Completed epochs and optimizer steps.
    public private(set) var epoch = 0
    public private(set) var step = 0
    public private(set) var progress = EpochProgress()
    /// The processes sharing each batch (data parallel, MPI.swift); one process by default.
    public let communicator: Communicator

    public init(model: Model, settings: RunSettings, communicator: Communicator = .single) {
        self.model = model
        self.settings = settings
        self.communicator = communicator
        // Synchronised BN: every rank normalises with the statistics of the whole global batch.
        if communicator.size > 1 && settings.batchNormSync == .global {
            BatchNormSync.combine = { [communicator] sums in communicator.sum(&sums) }
        }
        switch settings.optimizer {
        case .sgd: optimizer = SGD(learningRate: settings.learningRate, momentum: settings.momentum, weightDecay: settings.weightDecay)
        case .adam: optimizer = Adam(learningRate: settings.learningRate, weightDecay: settings.weightDecay)
        }
    }

    /// Puts the loop back where a checkpoint says it stopped.
    public func restore(epoch: Int, step: Int, progress: EpochProgress) {
        self.epoch = epoch
        self.step = step
        self.progress = progress
    }

    /// The sample order of one epoch.
    public func order(epoch: Int) -> BatchOrder {
        .shuffled(seed: settings.seed, epoch: epoch)
    }

    /// The first `count` training batches of epoch 0, the ones calibration looks at (not augmented).
    public func calibrationBatches(from train: Dataset, count: Int) -> [Tensor] {
        Self.calibrationBatches(from: train, count: count, settings: settings)
    }

    /// The first `count` training batches of epoch 0 under `settings` (seed, batch size).
    public static func calibrationBatches(from train: Dataset, count: Int, settings: RunSettings) -> [Tensor] {
        train.batches(size: settings.batchSize, order: .shuffled(seed: settings.seed, epoch: 0), limit: count).map(\.images)
    }

    /// One optimizer step on one global batch; returns the batch loss and the number of correct
    /// predictions. With several ranks each trains its shard (`Communicator.shard`) and the
    /// gradients are summed, so the update is that of one process on the whole batch.
    /// With `timing`, each layer's forward and backward time is recorded (profiling).
    public func trainStep(images: Tensor, labels: [Int32], timing: StepTiming? = nil) throws -> (loss: Float, correct: Int) {
        guard communicator.size > 1 else { return try trainStep(shard: images, labels: labels, globalCount: labels.count, timing: timing) }
        let part = communicator.shard(of: labels.count)
        let sample = images.count / max(labels.count, 1)
        let shard = Tensor(shape: [part.count] + images.shape.dropFirst(),
                           storage: Array(images.storage[(part.lowerBound * sample)..<(part.upperBound * sample)]))
        return try trainStep(shard: shard, labels: Array(labels[part]), globalCount: labels.count, timing: timing)
    }

    /// One optimizer step on `batch`, which may hold this rank's part only (drawn with
    /// `batchShard`, so each rank builds only its own images); otherwise as `trainStep(images:labels:)`.
    public func trainStep(_ batch: Batch, timing: StepTiming? = nil) throws -> (loss: Float, correct: Int) {
        guard batch.isPart else { return try trainStep(images: batch.images, labels: batch.labels, timing: timing) }
        precondition(batch.part == communicator.shard(of: batch.count), "a batch drawn for another rank")
        return try trainStep(shard: batch.images, labels: batch.labels, globalCount: batch.count, timing: timing)
    }

    /// The part of every training batch this process builds: its rank's under mpirun, else all.
    public var batchShard: BatchShard? { communicator.size > 1 ? communicator.batchShard : nil }

    /// Forward and backward on this rank's `shard` of a batch of `globalCount` samples, then the
    /// gradients summed over the ranks and one optimizer step.
    private func trainStep(shard images: Tensor, labels: [Int32], globalCount: Int,
                           timing: StepTiming?) throws -> (loss: Float, correct: Int) {
        let tape = Tape()
        let logits = model.forward(images, training: true, tape: tape, timing: timing)
        tape.currentLabel = "loss"
        var (loss, correct) = timing.map { $0.measure("loss") { softmaxCrossEntropy(logits, labels: labels, tape: tape) } }
            ?? softmaxCrossEntropy(logits, labels: labels, tape: tape)
        var value = loss.value.storage[0]
        if communicator.size > 1 {
            // The global loss is the mean over the whole batch: this shard's mean weighs
            // shard/global, so that the summed gradients are those of the global mean.
            let weight = Float(labels.count) / Float(globalCount)
            loss = multiply(loss, Variable(Tensor(shape: loss.shape, repeating: weight)), tape: tape)
            tape.backward(from: loss, timing: timing)
            // The loss and accuracy totals travel with the gradients: one exchange per step.
            var totals = [Double(value) * Double(labels.count), Double(correct)]
            if let timing { timing.measure("allreduce") { sumGradients(with: &totals) } } else { sumGradients(with: &totals) }
            value = Float(totals[0] / Double(globalCount))
            correct = Int(totals[1])
            // Every rank sees the same global loss and gradients, so all stop together.
            guard value.isFinite else {
                for p in model.parameters { p.variable.zeroGradient() }
                throw TrainingError.nonFiniteLoss(epoch: epoch, step: step, value: value)
            }
        } else {
            guard value.isFinite else { throw TrainingError.nonFiniteLoss(epoch: epoch, step: step, value: value) }
            tape.backward(from: loss, timing: timing)
        }
        // A NaN can reach the weights without touching the loss (a ReLU after it, a clamp):
        // checking every gradient before the update costs one pass over the parameters.
        for p in model.parameters where !(p.variable.grad?.isFinite ?? true) {
            for q in model.parameters { q.variable.zeroGradient() }
            throw TrainingError.nonFiniteGradient(epoch: epoch, step: step, parameter: p.name)
        }
        if let timing {
            timing.measure("optimizer") { optimizer.step(model.parameters) }
        } else {
            optimizer.step(model.parameters)
        }
        step += 1
        return (value, correct)
    }

    /// The parameters whose gradients are summed over the ranks after each backward: all of them,
    /// except under synchronised BN the BN layers' γ and β, whose gradients are sums over the
    /// global batch already (BatchNormSync), the same on every rank.
    public var summedParameters: [Variable] {
        var global = Set<ObjectIdentifier>()
        if communicator.size > 1 && settings.batchNormSync == .global {
            for layer in model.batchNormLayers { global.formUnion([ObjectIdentifier(layer.gamma), ObjectIdentifier(layer.beta)]) }
        }
        return model.parameters.map(\.variable).filter { !global.contains(ObjectIdentifier($0)) }
    }

    /// Sums the gradients of `summedParameters` and `totals` over the ranks, in one message.
    private func sumGradients(with totals: inout [Double]) {
        let local = summedParameters.filter { $0.grad != nil }
        var packed: [Float] = []
        packed.reserveCapacity(local.reduce(0) { $0 + $1.value.count })
        for variable in local { packed.append(contentsOf: variable.grad!.storage) }
        communicator.sum(&packed, &totals)
        var offset = 0
        packed.withUnsafeBufferPointer { sums in
            for variable in local {
                variable.grad!.storage.withUnsafeMutableBufferPointer { grad in
                    grad.baseAddress!.update(from: sums.baseAddress! + offset, count: grad.count)
                    offset += grad.count
                }
            }
        }
    }

    /// Trains the rest of the current epoch, then evaluates on `test`.
    /// `progress` sees the epoch's progress and its batch count after every step; `afterStep` runs
    /// after every step (for `--save-every` checkpoints and metrics) and may throw to stop the run.
    public func trainEpoch(on train: Dataset, test: Dataset,
                           progress report: ((EpochProgress, Int) -> Void)? = nil,
                           afterStep: ((Trainer) throws -> Void)? = nil) throws -> EpochSummary {
        optimizer.learningRate = settings.schedule.rate(base: settings.learningRate, epoch: epoch)
        let batches = train.batches(size: settings.batchSize, order: order(epoch: epoch), first: progress.batch,
                                    augmentation: settings.data.augmentation, shard: batchShard)
        let start = Date()
        var trained = 0
        for batch in batches {
            let result = try trainStep(batch)
            progress.lossSum += Double(result.loss) * Double(batch.count)
            progress.correct += result.correct
            progress.seen += batch.count
            progress.batch = batch.index + 1
            trained += batch.count
            report?(progress, batches.batchesPerPass)
            try afterStep?(self)
        }
        let seconds = Date().timeIntervalSince(start)
        let trainEvaluation = Evaluation(lossSum: progress.lossSum, correct: progress.correct, count: progress.seen)
        let testEvaluation = evaluate(test)
        epoch += 1
        progress = EpochProgress()
        return EpochSummary(epoch: epoch, learningRate: optimizer.learningRate, train: trainEvaluation,
                            test: testEvaluation, imagesPerSecond: Double(trained) / max(seconds, 1e-9), seconds: seconds)
    }

    /// Loss and accuracy in eval mode (BN running statistics, no tape).
    public func evaluate(_ data: Dataset) -> Evaluation {
        Evaluator.evaluate(model, on: data, batchSize: settings.evalBatchSize)
    }
}
extension TrainingError: UserFacingError {}
