import Foundation

/// A live "step k/n" line on a terminal; silent when stdout is a file or pipe, where the
/// per-epoch summary lines are the record.
struct ProgressLine {
    static let isTerminal = isatty(STDOUT_FILENO) == 1
    let epoch: Int
    let of: Int
    private let start = Date()

    func update(batch: Int, batches: Int, loss: Double) {
        guard ProgressLine.isTerminal, batch % 20 == 0 || batch == batches else { return }
        let elapsed = Date().timeIntervalSince(start)
        let eta = elapsed / Double(batch) * Double(batches - batch)
        let text = String(format: "\repoch %d/%d  step %d/%d  loss %.4f  ETA %.0f s ", epoch + 1, of, batch, batches, loss, eta)
        FileHandle.standardOutput.write(text.data(using: .utf8)!)
    }

    static func finish() {
        if isTerminal { FileHandle.standardOutput.write("\r\u{1B}[K".data(using: .utf8)!) }
    }
}
