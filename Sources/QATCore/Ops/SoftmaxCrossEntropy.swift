import Foundation
import QATIO

/// Mean softmax cross-entropy of logits [N, K] against integer labels in 0..<K.
///
/// loss = −(1/N) Σₙ log softmax(zₙ)[yₙ]; d loss / d zₙ = (softmax(zₙ) − onehot(yₙ)) / N.
/// Returns the scalar loss and how many rows have their label as the arg-max.
public func softmaxCrossEntropy(_ logits: Variable, labels: [Int32], tape: Tape?) -> (loss: Variable, correct: Int) {
    precondition(logits.value.rank == 2 && logits.shape[0] == labels.count,
                 "softmaxCrossEntropy: logits \(logits.shape) vs \(labels.count) labels")
    let (n, k) = (logits.shape[0], logits.shape[1])
    var probabilities = [Float](repeating: 0, count: n * k)
    var total = 0.0
    var correct = 0
    logits.value.storage.withUnsafeBufferPointer { z in
        probabilities.withUnsafeMutableBufferPointer { p in
            for r in 0..<n {
                let row = z.baseAddress! + r * k
                var best = 0
                for j in 1..<k where row[j] > row[best] { best = j }
                if best == Int(labels[r]) { correct += 1 }
                // Shift by the max so exp never overflows.
                let shift = row[best]
                var sum: Float = 0
                for j in 0..<k { let e = expf(row[j] - shift); p[r * k + j] = e; sum += e }
                for j in 0..<k { p[r * k + j] /= sum }
                total -= Double(row[Int(labels[r])] - shift - logf(sum))
            }
        }
    }
    let loss = Variable(.scalar(Float(total / Double(n))), requiresGrad: needsPullback(tape, logits))
    guard loss.requiresGrad, let tape else { return (loss, correct) }
    tape.record {
        guard let gl = loss.grad else { return }
        let scale = gl.storage[0] / Float(n)
        logits.withGradient { gz in
            for r in 0..<n {
                for j in 0..<k {
                    let target: Float = j == Int(labels[r]) ? 1 : 0
                    gz[r * k + j] += (probabilities[r * k + j] - target) * scale
                }
            }
        }
    }
    return (loss, correct)
}
