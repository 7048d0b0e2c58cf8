import Foundation
import QAT

/// Progress within an epoch: a live line (step, loss, accuracy, img/s, ETA) redrawn in place on
/// a terminal; in a pipe or log file, the same text as a plain line four times an epoch.
struct ProgressLine {
    static let isTerminal = isatty(STDOUT_FILENO) == 1
    let epochs: Int
    private var epochStart = Date()
    private var startSeen = 0
    private var currentEpoch = -1

    init(epochs: Int) { self.epochs = epochs }

    mutating func update(epoch: Int, progress: EpochProgress, batches: Int) {
        if epoch != currentEpoch {
            currentEpoch = epoch
            epochStart = Date()
            startSeen = progress.seen - (progress.seen / max(progress.batch, 1))   // samples before this session's first step
        }
        let batch = progress.batch
        if ProgressLine.isTerminal {
            if batch == batches { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)); return }
            guard batch % 20 == 0 else { return }
        } else {
            guard batch < batches, batch % max(batches / 4, 1) == 0 else { return }
        }
        let elapsed = Date().timeIntervalSince(epochStart)
        let rate = Double(progress.seen - startSeen) / max(elapsed, 1e-9)
        let eta = Double(batches - batch) * Double(progress.seen) / Double(max(batch, 1)) / max(rate, 1e-9)
        let text = String(format: "epoch %d/%d  step %d/%d  loss %.4f  acc %.2f%%  %.0f img/s  ETA %.0f s",
                          epoch + 1, epochs, batch, batches, progress.lossSum / Double(max(progress.seen, 1)),
                          100 * Double(progress.correct) / Double(max(progress.seen, 1)), rate, eta)
        if ProgressLine.isTerminal {
            FileHandle.standardOutput.write(Data(("\r" + text + " ").utf8))
        } else {
            print(text)
        }
    }
}
