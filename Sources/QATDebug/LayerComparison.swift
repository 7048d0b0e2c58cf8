import Foundation
import QATCore
import QATData
import QATDeploy
import QATIO
import QATModel
import QATTrain

/// Clipping of one quantized layer's input against its [L, U] bounds: the part of the
/// quantization error that comes from the range, as opposed to rounding inside it.
public struct ClippingStatistics: Equatable, Sendable, Codable {
    /// Which side's quantizer and input were measured ("fakequant", "int8").
    public var side: String
    public var quantization: QuantizationGrid
    /// Values of the layer's input seen.
    public var count: Int
    /// Values x < L and x > U (x == L or x == U is inside).
    public var below: Int
    public var above: Int

    public var fractionBelow: Double { count > 0 ? Double(below) / Double(count) : 0 }
    public var fractionAbove: Double { count > 0 ? Double(above) / Double(count) : 0 }

    enum CodingKeys: String, CodingKey {
        case side, quantization, count, below, above, fractionBelow = "fraction_below", fractionAbove = "fraction_above"
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(side, forKey: .side)
        try c.encode(quantization, forKey: .quantization)
        try c.encode(count, forKey: .count)
        try c.encode(below, forKey: .below)
        try c.encode(above, forKey: .above)
        try c.encode(fractionBelow, forKey: .fractionBelow)
        try c.encode(fractionAbove, forKey: .fractionAbove)
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        side = try c.decode(String.self, forKey: .side)
        quantization = try c.decode(QuantizationGrid.self, forKey: .quantization)
        count = try c.decode(Int.self, forKey: .count)
        below = try c.decode(Int.self, forKey: .below)
        above = try c.decode(Int.self, forKey: .above)
    }
    init(side: String, quantization: QuantizationGrid) {
        self.side = side
        self.quantization = quantization
        count = 0
        below = 0
        above = 0
    }
}

/// One row of the comparison: a layer's output, side a against side b.
public struct LayerComparisonRow: Equatable, Sendable, Codable {
    public var layer: String
    public var kind: String
    /// One sample's output shape.
    public var shape: [Int]
    public var metrics: PairMetrics
    /// Present for a layer whose input is quantized on one of the sides.
    public var clipping: ClippingStatistics?
}

/// The whole comparison, as printed, written to JSON and rendered to HTML.
public struct ComparisonReport: Equatable, Sendable, Codable {
    public var model: String
    /// The two sides, reference first.
    public var sides: [String]
    public var batches: Int
    public var samples: Int
    public var rows: [LayerComparisonRow]
    /// Top-1 accuracy of each side on the compared samples (nil when none was compared).
    public var accuracy: [Double]?
    /// Fraction of samples where both sides predict the same class.
    public var agreement: Double
    /// Layers only one side reported (not compared).
    public var unmatchedLayers: [String]
    /// How clipping, KL and SQNR are measured, for readers of the JSON.
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case model, sides, batches, samples, rows = "layers", accuracy, agreement
        case unmatchedLayers = "unmatched_layers", notes
    }
}

/// Runs two sides on the same batches and accumulates per-layer metrics, one batch at a time:
/// at any moment it holds only the current batch's layer outputs of both sides, plus a fixed
/// set of scalars and two `bins`-bin histograms per layer.
public final class LayerComparison {
    public let spec: ModelSpec
    public let reference: any LayerOutputSource
    public let candidate: any LayerOutputSource
    public let bins: Int
    private var accumulators: [String: PairAccumulator] = [:]
    private var clipping: [String: ClippingStatistics] = [:]
    private var unmatched = Set<String>()
    private var batches = 0, samples = 0, agreeing = 0
    private var correct = [0, 0]
    /// Who feeds each layer, and the shapes; nil for a spec whose shapes do not fit (the report
    /// then shows no shapes and no clipping).
    private let graph: ModelGraph?

    public init(spec: ModelSpec, reference: any LayerOutputSource, candidate: any LayerOutputSource, bins: Int = 512) {
        self.spec = spec
        self.reference = reference
        self.candidate = candidate
        self.bins = bins
        graph = try? ModelGraph(spec)
    }

    /// Runs both sides over `data` in order, `batchSize` samples at a time, and folds every
    /// batch's outputs into the statistics (the evaluation loop counts each side's accuracy).
    public func add(_ data: Dataset, batchSize: Int) {
        var outputsA: [String: Tensor] = [:], outputsB: [String: Tensor] = [:]
        let sides = [
            { (images: Tensor) -> Tensor in outputsA = [:]; return self.reference.run(images) { outputsA[$0] = $1 } },
            { (images: Tensor) -> Tensor in outputsB = [:]; return self.candidate.run(images) { outputsB[$0] = $1 } },
        ]
        let evaluations = Evaluator.evaluate(sides, on: data, batchSize: batchSize) { batch, logits in
            fold(batch: batch.images, outputsA, outputsB)
            agreeing += zip(argmaxRows(logits[0]), argmaxRows(logits[1])).filter { $0 == $1 }.count
            batches += 1
            samples += batch.count
        }
        for side in 0..<2 { correct[side] += evaluations[side].correct }
    }

    /// Folds one batch's layer outputs of both sides into the per-layer statistics.
    private func fold(batch: Tensor, _ outputsA: [String: Tensor], _ outputsB: [String: Tensor]) {
        for (index, layer) in spec.layers.enumerated() {
            guard let a = outputsA[layer.name], let b = outputsB[layer.name], a.count == b.count else {
                unmatched.insert(layer.name)
                continue
            }
            accumulators[layer.name, default: PairAccumulator(bins: bins)].add(a.storage, b.storage)
            // Clipping is a property of the quantized side's own input to this layer: the side
            // under test if it quantizes the layer, else the reference.
            for (side, outputs) in [(candidate, outputsB), (reference, outputsA)] {
                guard let q = side.quantization(ofLayer: layer.name) else { continue }
                guard let producer = graph?.sources[index][0],
                      let input = producer < 0 ? batch : outputs[spec.layers[producer].name] else { break }
                var stats = clipping[layer.name] ?? ClippingStatistics(side: side.name, quantization: q)
                stats.quantization = q
                let clipped = input.storage.withUnsafeBufferPointer { q.clippedCounts($0) }
                stats.below += clipped.below
                stats.above += clipped.above
                stats.count += input.count
                clipping[layer.name] = stats
                break
            }
        }
    }

    public func report() -> ComparisonReport {
        let shapes = graph?.outputShapes ?? []
        var rows: [LayerComparisonRow] = []
        for (i, layer) in spec.layers.enumerated() {
            guard let accumulator = accumulators[layer.name] else { continue }
            rows.append(LayerComparisonRow(layer: layer.name, kind: layer.kind.typeName,
                                           shape: i < shapes.count ? shapes[i] : [],
                                           metrics: accumulator.metrics, clipping: clipping[layer.name]))
        }
        return ComparisonReport(
            model: spec.name, sides: [reference.name, candidate.name], batches: batches, samples: samples, rows: rows,
            accuracy: samples > 0 ? correct.map { Double($0) / Double(samples) } : nil,
            agreement: samples > 0 ? Double(agreeing) / Double(samples) : 1,
            unmatchedLayers: spec.layers.map(\.name).filter { unmatched.contains($0) && accumulators[$0] == nil },
            notes: ComparisonReport.standardNotes(bins: bins))
    }
}

extension LayerComparison {
    /// `qat compare`: builds the two sides of `subject`, runs them on the first
    /// `batches` × `batchSize` test images and returns the report. The INT8 side is built first:
    /// it is the one that can be unavailable, so it fails before any calibration. `note` gets a
    /// line when a config's layer rules give way to a QAT checkpoint's own quantizers.
    public static func run(_ subject: DebugSubject, sides: (reference: ComparisonSide, candidate: ComparisonSide),
                           deployFile: String?, batches: Int, batchSize: Int, bins: Int = 512,
                           note: (String) -> Void = { _ in }) throws -> ComparisonReport {
        let plan = try subject.plan()
        var built: [ComparisonSide: any LayerOutputSource] = [:]
        for side in [sides.reference, sides.candidate].sorted(by: { $0 == .int8 && $1 != .int8 }) {
            built[side] = try DebugModels.source(side, checkpoint: subject.checkpoint, deployFile: deployFile, plan: plan,
                                                 calibration: subject.calibrationBatches)
        }
        if [sides.reference, sides.candidate].contains(.fakequant), let line = subject.ignoredConfigNote(what: "used") { note(line) }
        let test = try subject.testImages(limit: batches * batchSize)
        let comparison = LayerComparison(spec: subject.spec, reference: built[sides.reference]!,
                                         candidate: built[sides.candidate]!, bins: bins)
        comparison.add(test, batchSize: batchSize)
        return comparison.report()
    }
}

extension ComparisonReport {
    static func standardNotes(bins: Int) -> [String] {
        [
            "metrics compare each layer's OUTPUT, reference side a against side b: cosine = Σab/(‖a‖‖b‖), "
                + "MSE = mean (a−b)², L1 = mean |a−b|, max_abs_diff = max |a−b|",
            "SQNR = 10·log10(Σa² / Σ(a−b)²) dB, clamped to ±\(Int(ComparisonMetrics.sqnrCapDB)) dB "
                + "(+\(Int(ComparisonMetrics.sqnrCapDB)) means identical outputs)",
            "KL = Σ p·ln(p / max(q, 1e-10)) in nats over histograms of a (p) and b (q) with min(\(bins), max(16, first-batch values/8)) bins "
                + "spanning both sides' range on the first batch ±10 %; later values outside are counted in the end bins",
            "clipping is measured on a quantized layer's INPUT, on the side that quantizes it (b if it does, else a), "
                + "against the grid-aligned bounds [L, U] of its input quantizer (the 'input quantizer' column): "
                + "clip<L and clip>U are the fractions outside (clipping error); the rest of the layer's error is rounding inside [L, U]",
        ]
    }

    /// The report as pretty-printed JSON (non-finite numbers as the strings "nan", "inf", "-inf").
    public func jsonString() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
