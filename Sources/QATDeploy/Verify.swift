import Foundation
import QATCore
import QATData
import QATIO
import QATModel
import QATTrain

/// Fake quant vs the INT8 engine on the same images (docs/ALGORITHMS.md §5, the deployment contract).
public struct DeployVerification: Sendable {
    /// Agreement of the input codes of one quantized layer.
    public struct Layer: Sendable {
        public var name: String
        public var count = 0
        public var equal = 0
        public var maxDifference = 0
        /// The same comparison with every integer layer of the engine fed the fake-quant model's
        /// input codes: each layer alone, without the differences of the layers before it.
        public var equalAlone = 0
        public var maxDifferenceAlone = 0
        public var equalFraction: Double { count == 0 ? 1 : Double(equal) / Double(count) }
        public var equalFractionAlone: Double { count == 0 ? 1 : Double(equalAlone) / Double(count) }
        /// The per-layer clauses of the contract, on the layer alone.
        public var meetsContract: Bool {
            equalFractionAlone >= DeployVerification.minimumEqualCodes && maxDifferenceAlone <= DeployVerification.maximumCodeDifference
        }
    }

    public var layers: [Layer]
    public var samples = 0
    public var equalPredictions = 0
    public var fakeQuantCorrect = 0
    public var int8Correct = 0

    /// The contract's thresholds.
    public static let minimumEqualCodes = 0.999
    public static let maximumCodeDifference = 1
    public static let minimumEqualPredictions = 0.999

    public var predictionAgreement: Double { samples == 0 ? 1 : Double(equalPredictions) / Double(samples) }
    public var fakeQuantAccuracy: Double { samples == 0 ? 0 : Double(fakeQuantCorrect) / Double(samples) }
    public var int8Accuracy: Double { samples == 0 ? 0 : Double(int8Correct) / Double(samples) }

    /// Every layer, fed the fake-quant input codes, ≥ 99.9 % equal codes and never more than one
    /// code apart; end to end ≥ 99.9 % equal predictions (ALGORITHMS.md §5 says why the per-layer
    /// clauses are taken layer by layer: end to end they measure depth, not the lowering).
    public var passed: Bool {
        layers.allSatisfy(\.meetsContract) && predictionAgreement >= Self.minimumEqualPredictions
    }

    public func table() -> String {
        // Imported models have long layer names (`blocks_blocks_3_block_block_6_reduce_Conv`): the
        // first column is as wide as the longest, so the others stay aligned.
        let nameWidth = max(16, (layers.map(\.name.count).max() ?? 0) + 2)
        var lines = ["layer".padded(to: nameWidth) + "input codes".padded(to: 14) + "end to end".padded(to: 12) + "max diff".padded(to: 10)
                     + "alone: equal".padded(to: 14) + "max diff"]
        for l in layers {
            let ok = l.meetsContract
            lines.append(l.name.padded(to: nameWidth) + "\(l.count)".padded(to: 14)
                         + String(format: "%.4f%%", 100 * l.equalFraction).padded(to: 12) + "\(l.maxDifference)".padded(to: 10)
                         + String(format: "%.4f%%", 100 * l.equalFractionAlone).padded(to: 14) + "\(l.maxDifferenceAlone)"
                         + (ok ? "" : "   FAIL"))
        }
        lines.append("(alone: each integer layer fed the fake-quant input codes, the contract's per-layer clauses; end to end: both models run whole, "
                     + "where rare one-code differences carry over and can grow with depth, for information)")
        lines.append(String(format: "predictions equal: %.3f%% of %d images%@", 100 * predictionAgreement, samples,
                            predictionAgreement >= Self.minimumEqualPredictions ? "" : "   FAIL"))
        lines.append(String(format: "accuracy: fake quant %.2f%%, INT8 %.2f%% (%+.2f pp)",
                            100 * fakeQuantAccuracy, 100 * int8Accuracy, 100 * (int8Accuracy - fakeQuantAccuracy)))
        lines.append(passed ? "PASS: within the fake-quant ≡ INT8 contract"
                            : "FAIL: outside the contract (per layer alone ≥ 99.9 % equal codes, never > 1 code apart; ≥ 99.9 % equal predictions)")
        return lines.joined(separator: "\n")
    }
}

extension DeployVerification {
    /// Runs `model` (fake quant, eval mode) and `engine` side by side over `data`.
    /// The fake-quant codes of layer L are clamp(round(x/s_d) + o_d) of the float input its
    /// quantizer sees, with the (s_d, o_d) that forward used.
    public static func run(model: Model, engine: Int8Model, data: Dataset, batchSize: Int = 256) -> DeployVerification {
        let quantizers = model.fakeQuantizers
        // Adds under joint_quant: both operands' codes on the shared grid (first operand, then second);
        // max pools and adds under tensor_quantize: the codes of the one input on the layer's grid.
        let adds = model.tensorQuantizers
        let compared = engine.file.nodes.filter { $0.isInteger || $0.sharedInputGrid != nil }.map(\.name)
        var report = DeployVerification(layers: compared.map { Layer(name: $0) })
        let layerIndex = Dictionary(uniqueKeysWithValues: report.layers.enumerated().map { ($1.name, $0) })
        var collected: [String: [Float]] = [:]
        for q in quantizers { q.collectInput = { collected[q.layerName, default: []].append(contentsOf: $0.storage) } }
        for q in adds { q.collectInput = { collected[q.layerName, default: []].append(contentsOf: $0.storage) } }
        defer {
            for q in quantizers { q.collectInput = nil }
            for q in adds { q.collectInput = nil }
        }

        let fakeQuant = { (images: Tensor) -> Tensor in
            collected = [:]
            return model.logits(for: images)
        }
        var engineCodes: [String: [Int8]] = [:]
        let int8 = { (images: Tensor) -> Tensor in
            engineCodes = [:]
            return engine.forward(images, observeInputCodes: { engineCodes[$0] = $1 })
        }
        /// Equal codes and the largest difference.
        func agreement(_ ours: [Int8], _ theirs: [Int8]) -> (equal: Int, maxDifference: Int) {
            var equal = 0, maxDifference = 0
            for i in ours.indices {
                let d = abs(Int(ours[i]) - Int(theirs[i]))
                if d == 0 { equal += 1 } else { maxDifference = max(maxDifference, d) }
            }
            return (equal, maxDifference)
        }
        let evaluations = Evaluator.evaluate([fakeQuant, int8], on: data, batchSize: batchSize) { batch, logits in
            var fakeQuantCodes: [String: [Int8]] = [:]
            let grids = quantizers.map { ($0.layerName, $0.activation.grid) } + adds.map { ($0.layerName, $0.activation.grid) }
            for (name, grid) in grids {
                guard let index = layerIndex[name], let theirs = engineCodes[name] else { continue }
                let ours = Int8Kernels.quantize(collected[name] ?? [], grid)
                precondition(ours.count == theirs.count, "verify: \(name) has \(ours.count) fake-quant codes, \(theirs.count) INT8 codes")
                fakeQuantCodes[name] = ours
                let (equal, maxDifference) = agreement(ours, theirs)
                report.layers[index].count += ours.count
                report.layers[index].equal += equal
                report.layers[index].maxDifference = max(report.layers[index].maxDifference, maxDifference)
            }
            // Again, each integer layer running on the fake-quant codes of its input.
            var aloneCodes: [String: [Int8]] = [:]
            _ = engine.forward(batch.images, observeInputCodes: { aloneCodes[$0] = $1 }, substituteInputCodes: { fakeQuantCodes[$0] })
            for (name, ours) in fakeQuantCodes {
                guard let index = layerIndex[name], let theirs = aloneCodes[name] else { continue }
                let (equal, maxDifference) = agreement(ours, theirs)
                report.layers[index].equalAlone += equal
                report.layers[index].maxDifferenceAlone = max(report.layers[index].maxDifferenceAlone, maxDifference)
            }
            report.equalPredictions += zip(argmaxRows(logits[0]), argmaxRows(logits[1])).filter { $0 == $1 }.count
        }
        report.samples = data.count
        report.fakeQuantCorrect = evaluations[0].correct
        report.int8Correct = evaluations[1].correct
        return report
    }

    /// Loads both files and verifies on `data`.
    public static func run(checkpoint: String, deployFile: String, data: Dataset, batchSize: Int = 256) throws -> DeployVerification {
        let (model, _) = try Model.load(checkpoint: checkpoint)
        let engine = try Int8Model.load(deployFile: deployFile)
        guard Array(model.spec.inputShape) == engine.inputShape, model.numberOfClasses == engine.numberOfClasses else {
            throw InputError(file: deployFile, message: "does not match \(checkpoint): input \(engine.inputShape) vs \(model.spec.inputShape)")
        }
        // INT16 and weight-only layers run in float on the engine (they have no int8 input codes to compare).
        let missing = model.fakeQuantizers.filter(\.isInteger).map(\.layerName)
            .filter { !engine.quantizedLayerNames.contains($0) }
        guard missing.isEmpty else {
            throw InputError(file: deployFile, message: "has no integer layer for the quantized layer(s) \(missing.joined(separator: ", ")) of \(checkpoint)")
        }
        return run(model: model, engine: engine, data: data, batchSize: batchSize)
    }
}

extension Int8Model: Classifier {
    public func logits(for images: Tensor) -> Tensor { forward(images) }
}
