import Foundation

/// A live "epoch e/E  step k/n  loss  img/s  ETA" line on a terminal; silent when stdout is a
/// file or pipe, where the per-epoch summary lines are the record.
struct ProgressLine {
    static let isTerminal = isatty(STDOUT_FILENO) == 1
    let epochs: Int
    private var epochStart = Date()
    private var currentEpoch = -1

    init(epochs: Int) { self.epochs = epochs }

    mutating func update(epoch: Int, batch: Int, batches: Int, loss: Double) {
        guard ProgressLine.isTerminal else { return }
        if epoch != currentEpoch { currentEpoch = epoch; epochStart = Date() }
        if batch == batches { FileHandle.standardOutput.write("\r\u{1B}[K".data(using: .utf8)!); return }
        guard batch % 25 == 0 else { return }
        let elapsed = Date().timeIntervalSince(epochStart)
        let eta = elapsed / Double(batch) * Double(batches - batch)
        let text = String(format: "\repoch %d/%d  step %d/%d  loss %.4f  ETA %.0f s ", epoch + 1, epochs, batch, batches, loss, eta)
        FileHandle.standardOutput.write(text.data(using: .utf8)!)
    }
}
