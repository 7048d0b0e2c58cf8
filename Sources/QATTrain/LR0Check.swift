import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// The lr = 0 sanity check: after calibration, N fake-quant fine-tune steps with learning rate 0
/// must change nothing. If they do, something outside the optimizer moves state (a quantizer
/// that rewrites its bounds, BN statistics, a stateful op), and QAT is not aligned with float.
///
/// BN running statistics are frozen during the check (momentum 0): they are an EMA, i.e. learned
/// state, and with every rate at zero nothing may learn. Any movement of them is then a failure.
public struct LR0Report {
    public struct Row {
        public var check: String
        public var detail: String
        public var passed: Bool
    }
    public var rows: [Row] = []
    public var passed: Bool { rows.allSatisfy(\.passed) }

    public func table() -> String {
        let width = max(10, rows.map(\.check.count).max() ?? 0)
        var lines = ["check".padded(to: width) + "  result  detail"]
        for row in rows { lines.append(row.check.padded(to: width) + "  " + (row.passed ? "pass  " : "FAIL  ") + "  " + row.detail) }
        lines.append(passed ? "lr0 check passed: the QAT pipeline leaves the model unchanged at lr = 0"
                            : "lr0 check FAILED: state changed although nothing should learn")
        return lines.joined(separator: "\n")
    }
}

extension TrainingRun {
    /// Runs the check on `train` (for the steps) and `evaluation` (for the metric).
    /// `perturb` runs after each step; tests use it to simulate a broken pipeline.
    public func lr0Check(train: Dataset, evaluation: Dataset, steps: Int,
                         perturb: ((Model, Int) -> Void)? = nil) throws -> LR0Report {
        try prepareFreshStart(train: train)
        for bn in model.batchNormLayers { bn.updatesRunningStatistics = false }
        defer { for bn in model.batchNormLayers { bn.updatesRunningStatistics = true } }
        let before = trainer.evaluate(evaluation)   // also sets every quantizer's scales
        let parameters = model.parameters.map { ($0.name, $0.variable.value) }
        let scales = model.fakeQuantizers.map { ($0.layerName, $0.weight.scales, $0.activation.scale, $0.activation.offset) }
        let statistics = model.buffers

        trainer.optimizer.learningRate = 0
        for batch in train.cyclingBatches(size: settings.batchSize, order: trainer.order(epoch: 0), count: steps) {
            _ = try trainer.trainStep(images: batch.images, labels: batch.labels)
            perturb?(model, batch.index)
        }
        let after = trainer.evaluate(evaluation)

        var report = LR0Report()
        func compare(_ check: String, _ old: [(String, Tensor)], _ new: [(String, Tensor)]) {
            var worst = (name: "", change: Float(0))
            for ((name, a), (_, b)) in zip(old, new) {
                let change = zip(a.storage, b.storage).map { $0 == $1 ? 0 : abs($0 - $1) }.max() ?? 0
                let differs = zip(a.storage, b.storage).contains { $0.bitPattern != $1.bitPattern }
                if differs && (change > worst.change || worst.name.isEmpty) { worst = (name, change.isNaN ? .infinity : max(change, .leastNonzeroMagnitude)) }
            }
            report.rows.append(.init(check: check, detail: worst.name.isEmpty ? "\(old.count) tensors bit-identical"
                                        : "\(worst.name) moved by \(worst.change)", passed: worst.name.isEmpty))
        }
        let isBound = { (name: String) in name.hasSuffix("." + FakeQuantizer.clipMaxName) || name.hasSuffix("." + FakeQuantizer.clipMinName) }
        compare("weights", parameters.filter { !isBound($0.0) }, model.parameters.filter { !isBound($0.name) }.map { ($0.name, $0.variable.value) })
        compare("clip bounds", parameters.filter { isBound($0.0) }, model.parameters.filter { isBound($0.name) }.map { ($0.name, $0.variable.value) })
        let scalesNow = model.fakeQuantizers.map { ($0.layerName, $0.weight.scales, $0.activation.scale, $0.activation.offset) }
        let movedScales = zip(scales, scalesNow).filter { $0.0.1 != $0.1.1 || $0.0.2 != $0.1.2 || $0.0.3 != $0.1.3 }.map(\.0.0)
        report.rows.append(.init(check: "quantizer scales",
                                 detail: movedScales.isEmpty ? "weight and activation scales of \(scales.count) layers unchanged"
                                     : "changed in \(movedScales.joined(separator: ", "))", passed: movedScales.isEmpty))
        if statistics.isEmpty {
            report.rows.append(.init(check: "BN statistics", detail: "model has no BatchNorm", passed: true))
        } else {
            compare("BN statistics", statistics.map { ($0.name, $0.tensor) }, model.buffers.map { ($0.name, $0.tensor) })
        }
        let metricEqual = before.accuracy == after.accuracy && before.loss == after.loss
        report.rows.append(.init(check: "fake-quant eval",
                                 detail: String(format: "accuracy %.2f%% → %.2f%%, loss %.6f → %.6f (%d images, %d steps)",
                                                100 * before.accuracy, 100 * after.accuracy, before.loss, after.loss, evaluation.count, steps),
                                 passed: metricEqual))
        return report
    }
}
