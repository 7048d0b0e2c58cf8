import Foundation
import QATCore
import QATData
import QATIO
import QATModel

// Checks a run makes before any work (docs/CHECKPOINT.md "What is validated on load",
// docs/CONFIG.md "Ranges"): every value read from a checkpoint against the model and the run,
// the data against the model, output folders, and the memory the settings ask for.

extension TrainingRun {
    /// The run position a checkpoint records, each counter in range: 0 ≤ epoch ≤ epochs,
    /// step ≥ 0, progress_batch ≥ 0, 0 ≤ progress_correct ≤ progress_seen, a finite loss sum.
    /// The bounds that need the dataset are checked by `checkPosition(trainCount:)`.
    static func readPosition(_ checkpoint: CheckpointFile, file: String, epochs: Int) throws -> (epoch: Int, step: Int, progress: EpochProgress) {
        let c = checkpoint.counters
        func counter(_ key: String, in range: ClosedRange<Int64>) throws -> Int {
            let value = c[key] ?? 0
            guard range.contains(value) else {
                throw InputError(file: file, keyPath: key, message: "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return Int(value)
        }
        let limit = Int64(Int32.max)
        let epoch = try counter(CheckpointFile.RunKey.epoch, in: 0...Int64(epochs))
        let step = try counter(CheckpointFile.RunKey.step, in: 0...limit)
        var progress = EpochProgress()
        progress.batch = try counter("progress_batch", in: 0...limit)
        progress.seen = try counter("progress_seen", in: 0...limit)
        progress.correct = try counter("progress_correct", in: 0...Int64(progress.seen))
        progress.lossSum = Double(bitPattern: UInt64(bitPattern: c["progress_loss_sum_bits"] ?? 0))
        guard progress.lossSum.isFinite, progress.lossSum >= 0 else {
            throw InputError(file: file, keyPath: "progress_loss_sum_bits", message: "the running loss sum \(progress.lossSum) is not a finite number ≥ 0")
        }
        return (epoch, step, progress)
    }

    /// The metric history: one row of 7 values per finished epoch, so shape [epoch, 7].
    static func readHistory(_ checkpoint: CheckpointFile, file: String, epoch: Int) throws -> [[Float]] {
        guard let rows = checkpoint.extra["metrics/history"] else {
            guard epoch == 0 else {
                throw InputError(file: file, keyPath: "/state/metrics/history", message: "missing, but the checkpoint is at epoch \(epoch)")
            }
            return []
        }
        guard rows.shape == [epoch, 7] else {
            throw InputError(file: file, keyPath: "/state/metrics/history",
                             message: "has shape \(rows.shape), expected [\(epoch), 7] (one row per finished epoch)")
        }
        return (0..<epoch).map { Array(rows.storage[($0 * 7)..<(($0 + 1) * 7)]) }
    }

    /// Optimizer state: `<parameter>.momentum`, `<parameter>.adam_m` with its `.adam_v`, and the
    /// scalar `adam.step`. Every tensor must name a parameter of the model, have its shape and be
    /// finite (a wrong shape would otherwise index past the parameter's storage).
    static func checkOptimizerState(_ state: [String: Tensor], parameters: [NamedVariable], file: String) throws {
        let shapes = Dictionary(parameters.map { ($0.name, $0.variable.value.shape) }, uniquingKeysWith: { a, _ in a })
        for (key, tensor) in state.sorted(by: { $0.key < $1.key }) {
            let keyPath = "/state/" + CheckpointFile.RunKey.optimizerGroup + key
            func fail(_ message: String) -> InputError { InputError(file: file, keyPath: keyPath, message: message) }
            guard tensor.storage.allSatisfy(\.isFinite) else { throw fail("holds a value that is not finite") }
            if key == "adam.step" {
                let v = tensor.count == 1 ? tensor.storage[0] : -1
                guard v >= 0, v <= Float(1 << 24), v == v.rounded() else { throw fail("must be one integer step count ≥ 0") }
                continue
            }
            guard let dot = key.lastIndex(of: "."), ["momentum", "adam_m", "adam_v"].contains(key[key.index(after: dot)...]) else {
                throw fail("is not optimizer state this qat knows (<parameter>.momentum, .adam_m, .adam_v, adam.step)")
            }
            let name = String(key[..<dot])
            guard let shape = shapes[name] else { throw fail("names no parameter of the model (\(name))") }
            guard tensor.shape == shape else { throw fail("has shape \(tensor.shape), the parameter \(name) has \(shape)") }
            if key.hasSuffix(".adam_m") != key.hasSuffix(".adam_v"), state[name + (key.hasSuffix(".adam_m") ? ".adam_v" : ".adam_m")] == nil {
                throw fail("comes without its Adam partner (.adam_m and .adam_v go together)")
            }
        }
    }

    /// The position restored from a checkpoint, against this run's data: progress_batch in
    /// [0, batches per epoch), step ≤ epochs × batches per epoch, progress_seen ≤ batch × batch size.
    func checkPosition(trainCount: Int, file: String) throws {
        let batchesPerEpoch = (trainCount + settings.batchSize - 1) / settings.batchSize
        let (maxSteps, overflow) = settings.epochs.multipliedReportingOverflow(by: batchesPerEpoch)
        let p = trainer.progress
        if p.batch >= max(batchesPerEpoch, 1) {
            throw InputError(file: file, keyPath: "progress_batch", message: "\(p.batch) is outside [0, \(batchesPerEpoch)), the batches of one epoch")
        }
        if !overflow && trainer.step > maxSteps {
            throw InputError(file: file, keyPath: CheckpointFile.RunKey.step,
                             message: "\(trainer.step) is more than the run's \(settings.epochs) epochs × \(batchesPerEpoch) batches")
        }
        if p.seen > p.batch * settings.batchSize {
            throw InputError(file: file, keyPath: "progress_seen",
                             message: "\(p.seen) samples cannot have been seen in \(p.batch) batches of \(settings.batchSize)")
        }
    }
}
