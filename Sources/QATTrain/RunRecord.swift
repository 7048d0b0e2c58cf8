import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// The settings of a run that change its math, flattened to sorted `key = value` lines.
/// Checkpoints store it (attribute "config") with its hash; a resume compares key by key and
/// names what differs. Paths of outputs and the save cadence are not in it: they change no number.
public struct RunRecord: Equatable, Sendable {
    public var entries: [String: String]

    public init(entries: [String: String]) { self.entries = entries }

    public init(settings: RunSettings, spec: ModelSpec, plan: QuantizationPlan?, batchNum: Int) {
        var e: [String: String] = [:]
        e["model"] = spec.jsonString()
        e["data.path"] = settings.dataPath
        e["data.train_limit"] = settings.trainLimit.map(String.init) ?? "all"
        e["train.epochs"] = "\(settings.epochs)"
        e["train.batch_size"] = "\(settings.batchSize)"
        e["train.optimizer"] = settings.optimizer.rawValue
        e["train.learning_rate"] = "\(settings.learningRate)"
        e["train.momentum"] = "\(settings.momentum)"
        e["train.weight_decay"] = "\(settings.weightDecay)"
        e["train.schedule"] = "\(settings.schedule)"
        e["train.seed"] = "\(settings.seed)"
        // OpenBLAS splits sums differently per thread count, so the thread count changes the bits.
        e["train.threads"] = "\(settings.threads)"
        if let plan {
            e["batch_num"] = "\(batchNum)"
            e["calibration.ifmr"] = "\(settings.ifmr)"
            for layer in plan.layers where layer.isQuantized {
                e["quant.\(layer.name)"] = "\(layer.quantizer!)"
            }
        }
        entries = e
    }

    /// The record as text, one sorted `key = value` line each.
    public var text: String {
        entries.keys.sorted().map { "\($0) = \(entries[$0]!)" }.joined(separator: "\n")
    }

    public init(text: String) {
        var e: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let range = line.range(of: " = ") else { continue }
            e[String(line[..<range.lowerBound])] = String(line[range.upperBound...])
        }
        entries = e
    }

    /// FNV-1a over the text: a short fingerprint users can compare at a glance.
    public var hash: String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(format: "%016llx", h)
    }

    /// Keys whose values differ (or exist on one side only), sorted.
    public func differences(from other: RunRecord) -> [String] {
        Set(entries.keys).union(other.entries.keys).filter { entries[$0] != other.entries[$0] }.sorted()
    }
}
