import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// The run's record: `metrics.csv` (one row every `interval` steps and one per epoch) and
/// `metrics.svg`, a plot of loss, accuracy and clip bounds that any browser opens.
public final class MetricsLog {
    public struct Row: Equatable {
        public var epoch: Int, step: Int
        public var kind: String          // "step": running training figures; "epoch": with evaluation
        public var loss: Double, trainAccuracy: Double
        public var testLoss: Double?, testAccuracy: Double?
        public var learningRate: Float
        public var clipBounds: [Float]   // clip_min, clip_max per quantized layer, in layer order
    }

    public let folder: String
    /// File name without extension: "metrics" in a run's checkpoint folder, or "<output>-metrics".
    public let name: String
    public let layerNames: [String]
    public let interval: Int
    public private(set) var rows: [Row] = []

    public init(folder: String, name: String = "metrics", layerNames: [String], interval: Int = 50) {
        self.folder = folder
        self.name = name
        self.layerNames = layerNames
        self.interval = interval
    }

    public var csvPath: String { "\(folder)/\(name).csv" }
    public var svgPath: String { "\(folder)/\(name).svg" }

    public var header: String {
        (["epoch", "step", "kind", "loss", "train_acc", "test_loss", "test_acc", "lr"]
            + layerNames.flatMap { ["\($0).clip_min", "\($0).clip_max"] }).joined(separator: ",")
    }

    /// Keeps earlier rows up to `step` (a resumed run continues the same file).
    public func restore(upTo step: Int) {
        guard let text = try? String(contentsOfFile: csvPath, encoding: .utf8) else { return }
        rows = text.split(separator: "\n").dropFirst().compactMap { parse(String($0)) }.filter { $0.step <= step }
    }

    public func append(_ row: Row) throws {
        rows.append(row)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let lines = [header] + rows.map(format)
        try AtomicFile.write(Data((lines.joined(separator: "\n") + "\n").utf8), to: csvPath)
        if row.kind == "epoch" { try AtomicFile.write(Data(svg().utf8), to: svgPath) }
    }

    private func format(_ r: Row) -> String {
        let optional = { (v: Double?) in v.map { String(format: "%.6f", $0) } ?? "" }
        return ([String(r.epoch), String(r.step), r.kind, String(format: "%.6f", r.loss), String(format: "%.6f", r.trainAccuracy),
                 optional(r.testLoss), optional(r.testAccuracy), String(r.learningRate)] + r.clipBounds.map { String($0) })
            .joined(separator: ",")
    }

    private func parse(_ line: String) -> Row? {
        let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard f.count >= 8, let epoch = Int(f[0]), let step = Int(f[1]), let loss = Double(f[3]),
              let accuracy = Double(f[4]), let lr = Float(f[7]) else { return nil }
        return Row(epoch: epoch, step: step, kind: f[2], loss: loss, trainAccuracy: accuracy,
                   testLoss: Double(f[5]), testAccuracy: Double(f[6]), learningRate: lr,
                   clipBounds: f.dropFirst(8).compactMap { Float($0) })
    }

    // MARK: Plot

    /// Three panels against the step: loss, accuracy, and each layer's clip range.
    public func svg() -> String {
        let width = 900.0, panelHeight = 220.0, left = 60.0, right = 170.0
        let maxStep = Double(max(rows.map(\.step).max() ?? 1, 1))
        var body = ""
        func panel(_ index: Int, title: String, series: [(name: String, color: String, points: [(Double, Double)])]) {
            let top = 30 + Double(index) * (panelHeight + 40)
            let values = series.flatMap { $0.points.map(\.1) }.filter(\.isFinite)
            var low = values.min() ?? 0, high = values.max() ?? 1
            if high - low < 1e-9 { high += 0.5; low -= 0.5 }
            let x = { (s: Double) in left + (width - left - right) * s / maxStep }
            let y = { (v: Double) in top + panelHeight * (1 - (v - low) / (high - low)) }
            body += "<text x='\(left)' y='\(top - 8)' font-size='14' font-weight='bold'>\(markupEscaped(title))</text>\n"
            body += "<rect x='\(left)' y='\(top)' width='\(width - left - right)' height='\(panelHeight)' fill='none' stroke='#999'/>\n"
            for tick in 0...4 {
                let v = low + (high - low) * Double(tick) / 4
                body += "<text x='\(left - 6)' y='\(y(v) + 4)' font-size='10' text-anchor='end'>\(String(format: "%.3g", v))</text>\n"
            }
            body += "<text x='\(width - right)' y='\(top + panelHeight + 14)' font-size='10' text-anchor='end'>step \(Int(maxStep))</text>\n"
            for (i, s) in series.enumerated() where !s.points.isEmpty {
                let path = s.points.filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", x($0.0), y($0.1)) }.joined(separator: " ")
                body += "<polyline fill='none' stroke='\(s.color)' stroke-width='1.5' points='\(path)'/>\n"
                body += "<text x='\(width - right + 10)' y='\(top + 14 + Double(i) * 14)' font-size='11' fill='\(s.color)'>\(markupEscaped(s.name))</text>\n"
            }
        }
        let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
        let epochRows = rows.filter { $0.kind == "epoch" }
        panel(0, title: "loss", series: [
            ("train (running)", palette[0], rows.filter { $0.kind == "step" }.map { (Double($0.step), $0.loss) }),
            ("test", palette[1], epochRows.compactMap { r in r.testLoss.map { (Double(r.step), $0) } })])
        panel(1, title: "accuracy", series: [
            ("train (running)", palette[0], rows.filter { $0.kind == "step" }.map { (Double($0.step), $0.trainAccuracy) }),
            ("test", palette[1], epochRows.compactMap { r in r.testAccuracy.map { (Double(r.step), $0) } })])
        panel(2, title: "clip bounds (clip_max solid; clip_min when it moves)", series: layerNames.enumerated().flatMap { i, name in
            let maxPoints = rows.filter { $0.clipBounds.count > 2 * i + 1 }.map { (Double($0.step), Double($0.clipBounds[2 * i + 1])) }
            let minPoints = rows.filter { $0.clipBounds.count > 2 * i }.map { (Double($0.step), Double($0.clipBounds[2 * i])) }
            let minValues = minPoints.map(\.1), maxScale = maxPoints.map { abs($0.1) }.max() ?? 1
            let minMoves = (minValues.max() ?? 0) - (minValues.min() ?? 0) > 1e-4 * max(maxScale, 1e-6)
            return [(name, palette[i % palette.count], maxPoints)] + (minMoves ? [("\(name) min", palette[i % palette.count], minPoints)] : [])
        })
        let height = 30 + 3 * (panelHeight + 40)
        return "<svg xmlns='http://www.w3.org/2000/svg' width='\(Int(width))' height='\(Int(height))' font-family='sans-serif'>\n"
            + "<rect width='100%' height='100%' fill='white'/>\n" + body + "</svg>\n"
    }
}
