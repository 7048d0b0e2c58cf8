import Dispatch
import QATCore
import QATData
import QATModel

/// Loss and top-1 accuracy on a dataset.
public struct Evaluation: Sendable {
    /// Mean softmax cross-entropy over the samples.
    public var loss: Double
    public var accuracy: Double
    public var count: Int
    /// Samples whose largest logit is their label (the first one on ties).
    public var correct: Int
    /// Wall time spent in the forward passes alone (0 where nobody measured it).
    public var forwardSeconds: Double

    /// From Σ (batch loss · batch size), summed in Double in batch order, and the correct count.
    public init(lossSum: Double, correct: Int, count: Int, forwardSeconds: Double = 0) {
        loss = lossSum / Double(max(count, 1))
        accuracy = Double(correct) / Double(max(count, 1))
        self.count = count
        self.correct = correct
        self.forwardSeconds = forwardSeconds
    }
}

/// Anything that turns a batch of images [B, C, H, W] into logits [B, K] in inference mode.
public protocol Classifier {
    func logits(for images: Tensor) -> Tensor
}

extension Model: Classifier {
    /// Eval mode: BatchNorm uses its running statistics, nothing is recorded.
    public func logits(for images: Tensor) -> Tensor { forward(images, training: false, tape: nil).value }
}

/// The evaluation loop: batches in dataset order, a forward pass, loss and accuracy summed per
/// batch. Every evaluation (float, fake quant, INT8, verify, compare, sensitivity, the lr = 0
/// check, the epoch summary) runs here, so accuracy is counted in one place.
public enum Evaluator {
    /// Evaluates `classifier` on `data`, `batchSize` samples at a time. `eachBatch` sees every
    /// batch with its logits [B, K] after they are scored.
    public static func evaluate(_ classifier: some Classifier, on data: Dataset, batchSize: Int = 256,
                                eachBatch: (Batch, Tensor) -> Void = { _, _ in }) -> Evaluation {
        evaluate([classifier.logits(for:)], on: data, batchSize: batchSize) { eachBatch($0, $1[0]) }[0]
    }

    /// Runs several forward functions side by side on the same batches (one evaluation each, in
    /// the order given); `eachBatch` sees every batch with all their logits. Each forward runs to
    /// completion before the next starts, so a forward may collect what it observes for `eachBatch`.
    public static func evaluate(_ forwards: [(Tensor) -> Tensor], on data: Dataset, batchSize: Int = 256,
                                eachBatch: (Batch, [Tensor]) -> Void = { _, _ in }) -> [Evaluation] {
        var lossSums = [Double](repeating: 0, count: forwards.count)
        var correct = [Int](repeating: 0, count: forwards.count)
        var seconds = [Double](repeating: 0, count: forwards.count)
        for batch in data.batches(size: batchSize) {
            var logits: [Tensor] = []
            for (i, forward) in forwards.enumerated() {
                let clock = DispatchTime.now().uptimeNanoseconds
                logits.append(forward(batch.images))
                seconds[i] += Double(DispatchTime.now().uptimeNanoseconds - clock) / 1e9
                let (loss, right) = softmaxCrossEntropy(Variable(logits[i]), labels: batch.labels, tape: nil)
                lossSums[i] += Double(loss.value.storage[0]) * Double(batch.count)
                correct[i] += right
            }
            eachBatch(batch, logits)
        }
        return forwards.indices.map {
            Evaluation(lossSum: lossSums[$0], correct: correct[$0], count: data.count, forwardSeconds: seconds[$0])
        }
    }
}

/// The predicted class of each row of logits [N, K]: the index of the largest value, the first
/// one on ties (the rule `softmaxCrossEntropy` counts accuracy with).
package func argmaxRows(_ logits: Tensor) -> [Int] {
    let (n, k) = (logits.shape[0], logits.shape[1])
    return (0..<n).map { r in
        var best = 0
        for c in 1..<k where logits.storage[r * k + c] > logits.storage[r * k + best] { best = c }
        return best
    }
}
