import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

// The comparison as text (terminal) and as one self-contained HTML file (inline CSS and SVG,
// nothing fetched from the network).

/// Fixed-width table: the `leftAligned` columns (the first by default) left-aligned, the others right-aligned.
func textTable(_ rows: [[String]], leftAligned: Set<Int> = [0]) -> String {
    guard let header = rows.first else { return "" }
    let widths = header.indices.map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max()! }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { c, cell in
            let pad = String(repeating: " ", count: max(widths[c] - cell.count, 0))
            return leftAligned.contains(c) ? cell + pad : pad + cell
        }.joined(separator: "  ")
    }
    var lines = [line(header), line(widths.map { String(repeating: "-", count: $0) })]
    lines += rows.dropFirst().map(line)
    return lines.map { $0.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) }.joined(separator: "\n")
}

/// %.Ng, with "nan"/"inf" spelled plainly.
func formatNumber(_ v: Double, digits: Int = 4) -> String {
    if v.isNaN { return "nan" }
    if v.isInfinite { return v > 0 ? "inf" : "-inf" }
    return String(format: "%.\(digits)g", v)
}

func formatPercent(_ v: Double) -> String { String(format: "%.2f%%", 100 * v) }

extension LayerComparisonRow {
    /// "INT8 s=0.0123 [L, U]" or "-".
    var quantizerText: String {
        guard let c = clipping else { return "-" }
        let q = c.quantization
        return "INT\(q.bits) s=\(formatNumber(Double(q.scale))) [\(formatNumber(Double(q.lower))), \(formatNumber(Double(q.upper)))]"
    }

    var sqnrText: String {
        metrics.sqnrDB >= ComparisonMetrics.sqnrCapDB ? "≥\(Int(ComparisonMetrics.sqnrCapDB))" : String(format: "%.2f", metrics.sqnrDB)
    }
}

extension ComparisonReport {
    var summaryLines: [String] {
        var lines = ["Layer-by-layer comparison of model \(model): a = \(sides[0]), b = \(sides[1]); "
                     + "\(samples) samples in \(batches) batch(es)"]
        if let accuracy {
            lines.append(String(format: "top-1 accuracy: %@ %.2f%%, %@ %.2f%%; the sides agree on %.2f%% of samples",
                                sides[0], 100 * accuracy[0], sides[1], 100 * accuracy[1], 100 * agreement))
        } else {
            lines.append(String(format: "the sides agree on %.2f%% of samples", 100 * agreement))
        }
        return lines
    }

    var errorRows: [[String]] {
        var rows = [["layer", "type", "input quantizer", "cosine", "MSE", "L1", "KL", "SQNR dB", "max|a-b|", "clip<L", "clip>U"]]
        for r in self.rows {
            let m = r.metrics
            rows.append([r.layer, r.kind, r.quantizerText, String(format: "%.6f", m.cosine), formatNumber(m.mse), formatNumber(m.l1),
                         formatNumber(m.kl), r.sqnrText, formatNumber(Double(m.maxAbsDifference)),
                         r.clipping.map { formatPercent($0.fractionBelow) } ?? "-",
                         r.clipping.map { formatPercent($0.fractionAbove) } ?? "-"])
        }
        return rows
    }

    var rangeRows: [[String]] {
        var rows = [["layer", "a min", "b min", "a max", "b max", "a mean", "b mean", "a var", "b var"]]
        for r in self.rows {
            let (a, b) = (r.metrics.a, r.metrics.b)
            rows.append([r.layer, formatNumber(Double(a.min)), formatNumber(Double(b.min)), formatNumber(Double(a.max)),
                         formatNumber(Double(b.max)), formatNumber(a.mean), formatNumber(b.mean),
                         formatNumber(a.variance), formatNumber(b.variance)])
        }
        return rows
    }

    /// The terminal report: summary, error metrics, value ranges, notes.
    public func textReport() -> String {
        var text = summaryLines.joined(separator: "\n") + "\n\n"
        text += textTable(errorRows) + "\n\n"
        text += "value ranges (a = \(sides[0]), b = \(sides[1])):\n" + textTable(rangeRows) + "\n\n"
        if !unmatchedLayers.isEmpty {
            text += "not compared (reported by one side only): \(unmatchedLayers.joined(separator: ", "))\n\n"
        }
        text += notes.map { "- \($0)" }.joined(separator: "\n") + "\n"
        return text
    }

    // MARK: HTML

    /// One HTML file with inline CSS and an inline SVG chart of cosine and SQNR per layer.
    public func htmlReport() -> String {
        func table(_ rows: [[String]]) -> String {
            var html = "<table>\n<tr>" + rows[0].map { "<th>\(markupEscaped($0))</th>" }.joined() + "</tr>\n"
            for row in rows.dropFirst() {
                html += "<tr>" + row.enumerated().map { c, cell in
                    "<td\(c == 0 ? " class=\"name\"" : "")>\(markupEscaped(cell))</td>"
                }.joined() + "</tr>\n"
            }
            return html + "</table>\n"
        }
        var html = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <title>qat compare: \(markupEscaped(model)) (\(markupEscaped(sides[0])) vs \(markupEscaped(sides[1])))</title>
            <style>
            body { font-family: sans-serif; margin: 24px; color: #222; }
            h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
            table { border-collapse: collapse; font-size: 13px; }
            th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; font-variant-numeric: tabular-nums; }
            th { background: #f0f0f0; } td.name { text-align: left; font-weight: bold; }
            ul.notes { font-size: 13px; color: #444; }
            </style>
            </head>
            <body>
            <h1>Layer-by-layer comparison: \(markupEscaped(sides[0])) (a) vs \(markupEscaped(sides[1])) (b)</h1>

            """
        html += summaryLines.map { "<p>\(markupEscaped($0))</p>\n" }.joined()
        html += "<h2>Cosine similarity and SQNR per layer</h2>\n" + chartSVG() + "\n"
        html += "<h2>Error metrics</h2>\n" + table(errorRows)
        html += "<h2>Value ranges</h2>\n" + table(rangeRows)
        if !unmatchedLayers.isEmpty {
            html += "<p>Not compared (reported by one side only): \(markupEscaped(unmatchedLayers.joined(separator: ", ")))</p>\n"
        }
        html += "<h2>Definitions</h2>\n<ul class=\"notes\">\n" + notes.map { "<li>\(markupEscaped($0))</li>\n" }.joined() + "</ul>\n"
        html += "</body>\n</html>\n"
        return html
    }

    /// Two bar panels sharing the layer axis: cosine (top) and SQNR in dB (bottom).
    func chartSVG() -> String {
        let n = max(rows.count, 1)
        let left = 70.0, right = 20.0, barSlot = 64.0, panelHeight = 170.0, gap = 70.0, top = 44.0, bottomLabels = 80.0
        let width = left + right + barSlot * Double(n)
        let height = top + panelHeight * 2 + gap + bottomLabels
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        svg += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>\n"

        /// One panel: axis [lower, upper] with ticks every `step`, bars from `baseline` to the value.
        func panel(title: String, y0: Double, values: [Double], lower: Double, upper: Double, step: Double, baseline: Double,
                   color: String, label: (Double) -> String) -> String {
            var s = "<text x=\"\(left)\" y=\"\(y0 - 24)\" font-size=\"13\" font-weight=\"bold\">\(markupEscaped(title))</text>\n"
            let span = max(upper - lower, 1e-12)
            func y(_ v: Double) -> Double { y0 + panelHeight * (1 - (min(max(v, lower), upper) - lower) / span) }
            for i in 0...Int(((upper - lower) / step + 1e-6).rounded(.down)) {
                let tick = lower + Double(i) * step
                s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", left, y(tick), width - right, y(tick))
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%@</text>\n", left - 6, y(tick) + 4, label(tick))
            }
            let base = y(min(max(baseline, lower), upper))
            s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\"/>\n", left, base, width - right, base)
            for (i, v) in values.enumerated() {
                let x = left + barSlot * Double(i) + barSlot * 0.2
                let end = y(v.isNaN ? baseline : v)
                let (top, bottom) = (min(end, base), max(end, base))
                s += String(format: "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>%@: %@</title></rect>\n",
                            x, top, barSlot * 0.6, max(bottom - top, 1), color, markupEscaped(rows[i].layer), label(v))
                let labelY = end <= base ? top - 4 : bottom + 12
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#222\">%@</text>\n",
                            x + barSlot * 0.3, labelY, label(v))
            }
            return s
        }
        /// 1, 2 or 5 times a power of ten, at least `rough`.
        func niceStep(_ rough: Double) -> Double {
            let power = pow(10, (log10(max(rough, 1e-12))).rounded(.down))
            return [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= rough } ?? 10 * power
        }
        let cosines = rows.map(\.metrics.cosine)
        let minCosine = cosines.filter { !$0.isNaN }.min() ?? 1
        let cosineLower = max(-1, min(0.9, (minCosine * 10).rounded(.down) / 10))
        svg += panel(title: "cosine similarity (a vs b)", y0: top, values: cosines, lower: cosineLower, upper: 1,
                     step: niceStep((1 - cosineLower) / 5), baseline: cosineLower, color: "#4a7fb5",
                     label: { $0.isNaN ? "nan" : String(format: $0 >= 0.9995 && $0 < 1 ? "%.5f" : "%.3g", $0) })
        let sqnrs = rows.map(\.metrics.sqnrDB)
        let finite = sqnrs.filter { !$0.isNaN && $0 < ComparisonMetrics.sqnrCapDB }
        let roughTop = max(finite.max() ?? 40, 10), roughBottom = min(finite.min() ?? 0, 0)
        let step = niceStep((roughTop - roughBottom) / 5)
        let sqnrUpper = ((roughTop / step).rounded(.down) + 1) * step
        let sqnrLower = (roughBottom / step).rounded(.down) * step
        svg += panel(title: "SQNR in dB (a bar at the top with ≥\(Int(ComparisonMetrics.sqnrCapDB)): identical outputs)",
                     y0: top + panelHeight + gap, values: sqnrs, lower: sqnrLower, upper: sqnrUpper, step: step, baseline: 0,
                     color: "#d08a2e",
                     label: { $0.isNaN ? "nan" : $0 >= ComparisonMetrics.sqnrCapDB ? "≥\(Int(ComparisonMetrics.sqnrCapDB))" : String(format: "%.1f", $0) })
        let labelY = top + panelHeight * 2 + gap + 16
        for (i, row) in rows.enumerated() {
            let x = left + barSlot * Double(i) + barSlot * 0.5
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" transform=\"rotate(-35 %.1f %.1f)\">%@</text>\n",
                          x, labelY, x, labelY, markupEscaped(row.layer))
        }
        return svg + "</svg>"
    }
}
