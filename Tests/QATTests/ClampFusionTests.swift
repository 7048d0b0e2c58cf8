import Foundation
import XCTest
import CKernels
@testable import QATCore
@testable import QATModel
@testable import QATONNX
@testable import QATData
import QAT

/// `batchNorm2d(fusedClamp:)` with ReLU6 and Clip(+0, b) is `relu6` / `clip` after
/// `batchNorm2d(…)` bit for bit (forward, dx, dγ, dβ), on every BatchNorm path, in training and
/// eval, at 1 and 2 threads, with the mask folded in or as its own pass; the models fuse the pairs
/// and train to the same bits. (ReLU itself: ReLUFusionTests.)
final class ClampFusionTests: XCTestCase {
    private enum Activation: CustomStringConvertible {
        case relu6, clip(Float, Float)

        var clamp: FusedClamp? {
            switch self {
            case .relu6: return .relu6
            case .clip(let low, let high): return FusedClamp.clip(min: low, max: high)
            }
        }

        func apply(_ v: Variable, tape: Tape) -> Variable {
            switch self {
            case .relu6: return QATCore.relu6(v, tape: tape)
            case .clip(let low, let high): return QATCore.clip(v, min: low, max: high, tape: tape)
            }
        }

        var description: String {
            switch self {
            case .relu6: return "relu6"
            case .clip(let low, let high): return "clip(\(low), \(high))"
            }
        }
    }

    private static let activations: [Activation] = [.relu6, .clip(0, 6), .clip(0, 1.5), .clip(0, .infinity), .clip(0, -0.0)]

    /// Odd channel counts and planes of 1, 4, 6, 16, 25, 63, 196 and 1,600 positions (the small-plane
    /// blocks, masked tails, several mask-pass blocks).
    private static let shapes: [[Int]] = [[5, 2, 1, 1], [2, 3, 2, 3], [3, 4, 2, 2], [4, 3, 4, 4], [3, 7, 5, 5],
                                          [3, 5, 7, 9], [4, 8, 14, 14], [6, 4, 40, 40], [2, 70, 4, 4]]

    private struct Run: Equatable { var y, dx, dGamma, dBeta: [UInt32] }

    private func run(_ shape: [Int], seed: UInt64, training: Bool, activation: Activation, fused: Bool) -> Run {
        var rng = SeededGenerator(seed: seed)
        let c = shape[1]
        let x = Variable(Tensor.uniform(shape, bound: 2, using: &rng), requiresGrad: true)
        // γ up to 4.5 and β in ±2, so that BatchNorm's output crosses both 0 and 6.
        let gamma = Variable(Tensor(shape: [c], storage: (0..<c).map { _ in 0.5 + 4 * rng.nextUnitFloat() }), requiresGrad: true)
        let beta = Variable(Tensor.uniform([c], bound: 2, using: &rng), requiresGrad: true)
        let statistics = BatchNormStatistics(channels: c)
        for ch in 0..<c { statistics.mean.storage[ch] = 0.2 * Float(ch) - 0.3 }
        // Gradients already there, so the pullbacks must add into them.
        x.grad = Tensor.uniform(shape, bound: 1, using: &rng)
        gamma.grad = Tensor.uniform([c], bound: 1, using: &rng)
        let upstream = Tensor.uniform(shape, bound: 1, using: &rng)
        let tape = Tape()
        // h = x·1 makes BatchNorm's input an intermediate value, as a conv output is.
        let h = multiply(x, Variable(Tensor(shape: [1], storage: [1])), tape: tape)
        let y = fused
            ? batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training,
                          fusedClamp: activation.clamp!, tape: tape)
            : activation.apply(batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training, tape: tape),
                               tape: tape)
        let values = y.value.storage.map(\.bitPattern)
        y.grad = upstream
        tape.backward(from: Variable(.scalar(0)))
        return Run(y: values, dx: x.grad!.storage.map(\.bitPattern), dGamma: gamma.grad!.storage.map(\.bitPattern),
                   dBeta: beta.grad!.storage.map(\.bitPattern))
    }

    func testFusedEqualsActivationAfterBatchNormOnEveryPathAndThreadCount() {
        let saved = (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass)
        defer {
            (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass) = saved
            _ = qat_bn_force_isa(-1)
        }
        for isa in [0, 1, 2] where qat_bn_force_isa(Int32(isa)) == isa {
            for activation in Self.activations {
                var seen = (zero: false, six: false, between: false)
                defer {
                    if case .relu6 = activation {
                        XCTAssertTrue(seen.zero && seen.six && seen.between, "ReLU6 cuts at both ends and passes some")
                    }
                }
                for (index, shape) in Self.shapes.enumerated() {
                    for training in [true, false] {
                        let seed = 1_300 + UInt64(index)
                        Parallel.threads = 1
                        let reference = run(shape, seed: seed, training: training, activation: activation, fused: false)
                        for separate in [false, true] {
                            for threads in [1, 2] {
                                (BatchNormReLUBackward.usesSeparateMaskPass, Parallel.threads) = (separate, threads)
                                XCTAssertEqual(run(shape, seed: seed, training: training, activation: activation, fused: true),
                                               reference, "isa \(isa) \(activation) \(shape) training \(training) separate mask \(separate) \(threads) threads")
                            }
                        }
                        let values = reference.y.map { Float(bitPattern: $0) }
                        seen.zero = seen.zero || values.contains(0)
                        seen.six = seen.six || values.contains(6)
                        seen.between = seen.between || values.contains { $0 > 0 && $0 < 6 }
                    }
                }
            }
        }
    }

    /// BatchNorm outputs exactly at the bounds and around them (γ = 0 makes the output β):
    /// 0, −0, 6, the floats next to 6, ± the least subnormal, 1.5 (clip's top), NaN, ±∞.
    func testBoundsNaNAndSignedZeroFollowTheActivationsRules() {
        let betas: [Float] = [6, 0, -0.0, Float(6).nextDown, Float(6).nextUp, .leastNonzeroMagnitude,
                              -.leastNonzeroMagnitude, 1.5, 0, -0.0, 3]
        let gammas: [Float] = [0, 0, 0, 0, 0, 0, 0, 0, 1, -0.0, 1]
        let c = betas.count, plane = 4
        let shape = [2, c, 1, plane]
        var xs = [Float](repeating: 0.25, count: 2 * c * plane)
        // Channel 8 (γ 1, β 0): NaN, ±∞ and signed zeros in x; channel 10 finite values.
        for (k, v) in [Float.nan, .infinity, -.infinity, -0.0, 0, 1, -1, 2].enumerated() { xs[(k / plane) * c * plane + 8 * plane + k % plane] = v }
        for (k, v) in [Float(-3), 7, 0.5, 3, -1, 8, 2, 4].enumerated() { xs[(k / plane) * c * plane + 10 * plane + k % plane] = v }
        let upstream = (0..<xs.count).map { i -> Float in i % 5 == 0 ? -0.0 : Float(i % 7) - 2.5 }
        func bits(_ activation: Activation, training: Bool, fused: Bool) -> [[UInt32]] {
            let x = Variable(Tensor(shape: shape, storage: xs), requiresGrad: true)
            let gamma = Variable(Tensor(shape: [c], storage: gammas), requiresGrad: true)
            let beta = Variable(Tensor(shape: [c], storage: betas), requiresGrad: true)
            let statistics = BatchNormStatistics(channels: c)
            let tape = Tape()
            let h = multiply(x, Variable(Tensor(shape: [1], storage: [1])), tape: tape)
            let y = fused
                ? batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training,
                              fusedClamp: activation.clamp!, tape: tape)
                : activation.apply(batchNorm2d(h, gamma: gamma, beta: beta, statistics: statistics, training: training,
                                               tape: tape), tape: tape)
            let values = y.value.storage
            y.grad = Tensor(shape: shape, storage: upstream)
            tape.backward(from: Variable(.scalar(0)))
            return [values.map(\.bitPattern), x.grad!.storage.map(\.bitPattern), gamma.grad!.storage.map(\.bitPattern),
                    beta.grad!.storage.map(\.bitPattern)]
        }
        let saved = (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass)
        defer {
            (Parallel.threads, BatchNormReLUBackward.usesSeparateMaskPass) = saved
            _ = qat_bn_force_isa(-1)
        }
        for isa in [0, 1, 2] where qat_bn_force_isa(Int32(isa)) == isa {
            for activation in Self.activations {
                for training in [false, true] {
                    let reference = bits(activation, training: training, fused: false)
                    for separate in [false, true] {
                        for threads in [1, 2] {
                            (BatchNormReLUBackward.usesSeparateMaskPass, Parallel.threads) = (separate, threads)
                            XCTAssertEqual(bits(activation, training: training, fused: true), reference,
                                           "isa \(isa) \(activation) training \(training) separate mask \(separate) \(threads) threads")
                        }
                    }
                }
            }
            // The cases differ where they should: at exactly 6 (channel 0) and 0 (channel 1) ReLU6
            // passes no gradient and Clip(0, 6) does; dβ of those channels is Σ of the passed g.
            let relu6Bits = bits(.relu6, training: false, fused: true), clipBits = bits(.clip(0, 6), training: false, fused: true)
            for channel in [0, 1, 2] {
                XCTAssertEqual(relu6Bits[3][channel], 0, "relu6: no gradient at β = \(betas[channel])")
                XCTAssertNotEqual(clipBits[3][channel], 0, "clip(0, 6): gradient at β = \(betas[channel])")
            }
            XCTAssertNotEqual(relu6Bits[3][3], 0, "relu6 passes just below 6")
            XCTAssertEqual(clipBits[3][4], 0, "clip(0, 6) blocks just above 6")
            XCTAssertTrue(Float(bitPattern: relu6Bits[0][8 * plane]).isNaN, "NaN passes the forward")
        }
    }

    /// Clip is fused only where it is the fused clamp bit for bit: min +0 (not −0, whose forward
    /// writes −0 below it), max not NaN.
    func testOnlyIdenticalClipsAreFused() throws {
        XCTAssertNotNil(FusedClamp.clip(min: 0, max: 3))
        XCTAssertNil(FusedClamp.clip(min: -0.0, max: 6))
        XCTAssertNil(FusedClamp.clip(min: -1, max: 2))
        XCTAssertNil(FusedClamp.clip(min: 0, max: .nan))
        let model = try Model(spec: Self.smallSpec())
        let names = Set(model.fusedClamps().map { "\(model.layers[$0.key].name)→\(model.layers[$0.value.activation].name)" })
        XCTAssertEqual(names, ["stem_bn→stem_act", "dw_bn→dw_act", "pw_bn→pw_act", "add→add_relu"])
        XCTAssertEqual(model.fusedClamps()[1]?.clamp, .relu6)
    }

    /// conv → BN → ReLU6, depthwise → BN → Clip(0, 3), 1×1 → BN → ReLU, 1×1 → BN → Clip(−1, 2)
    /// (not fused), a residual add → ReLU (fused) and add → ReLU6 (not: only ReLU after an add).
    static func smallSpec() throws -> ModelSpec {
        try ModelSpec.parse(JSONObject.parse(Data(#"""
            {"name": "clamp-fusion", "input": [1, 28, 28], "layers": [
              {"name": "stem", "type": "conv2d", "in_channels": 1, "out_channels": 7, "kernel_size": 3, "stride": 2, "padding": 1, "bias": false},
              {"name": "stem_bn", "type": "batchnorm2d", "num_features": 7},
              {"name": "stem_act", "type": "relu6"},
              {"name": "dw", "type": "conv2d", "in_channels": 7, "out_channels": 7, "kernel_size": 3, "padding": 1, "groups": 7, "bias": false},
              {"name": "dw_bn", "type": "batchnorm2d", "num_features": 7},
              {"name": "dw_act", "type": "clip", "min": 0, "max": 3},
              {"name": "pw", "type": "conv2d", "in_channels": 7, "out_channels": 7, "kernel_size": 1, "bias": false},
              {"name": "pw_bn", "type": "batchnorm2d", "num_features": 7},
              {"name": "pw_act", "type": "relu"},
              {"name": "pw2", "type": "conv2d", "in_channels": 7, "out_channels": 7, "kernel_size": 1, "bias": false},
              {"name": "pw2_bn", "type": "batchnorm2d", "num_features": 7},
              {"name": "pw2_act", "type": "clip", "min": -1, "max": 2},
              {"name": "add", "type": "add", "inputs": ["pw2_act", "stem_act"]},
              {"name": "add_relu", "type": "relu"},
              {"name": "add2", "type": "add", "inputs": ["add_relu", "pw_act"]},
              {"name": "add2_act", "type": "relu6"},
              {"name": "pool", "type": "global_avgpool2d"},
              {"name": "flatten", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 7, "out_features": 10}
            ]}
            """#.utf8), file: "clamp-fusion.json"))
    }

    /// Logits and every parameter's gradient of two SGD steps, the running variances after them,
    /// and an eval forward's logits, as bit patterns.
    private func twoSteps(_ model: Model, _ x: Tensor, _ labels: [Int32]) -> [[UInt32]] {
        var bits: [[UInt32]] = []
        for _ in 0..<2 {
            for p in model.parameters { p.variable.zeroGradient() }
            let tape = Tape()
            let logits = model.forward(x, training: true, tape: tape)
            let (loss, _) = softmaxCrossEntropy(logits, labels: labels, tape: tape)
            bits.append(logits.value.storage.map(\.bitPattern))
            tape.backward(from: loss)
            for p in model.parameters {
                guard let g = p.variable.grad else { bits.append([]); continue }   // frozen (QAT bounds not learnt)
                bits.append(g.storage.map(\.bitPattern))
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    for i in 0..<w.count { w[i] -= 0.05 * g.storage[i] }
                }
            }
        }
        for layer in model.batchNormLayers { bits.append(layer.statistics.variance.storage.map(\.bitPattern)) }
        bits.append(model.forward(x, training: false, tape: nil).value.storage.map(\.bitPattern))
        return bits
    }

    func testSmallGraphFusesAndTrainsToTheSameBits() throws {
        let count = 5
        let batch = try fashionMNIST(.train, count: count).batch(Array(0..<count)[...])
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        func steps(fusing: Bool, threads: Int) throws -> [[UInt32]] {
            Parallel.threads = threads
            let model = try Model(spec: Self.smallSpec(), seed: 4)
            model.fusesReLU = fusing
            return twoSteps(model, batch.images, batch.labels)
        }
        let reference = try steps(fusing: false, threads: 1)
        XCTAssertEqual(try steps(fusing: true, threads: 1), reference)
        XCTAssertEqual(try steps(fusing: true, threads: 2), reference)
    }

    /// mobilenetv2-tiny (ONNX Clip(0, 6) imported as ReLU6) fuses every BatchNorm → ReLU6 and trains
    /// to the same bits, float and QAT (where a ReLU6 with an input quantizer stays apart).
    func testMobileNetV2TinyFusesAndTrainsToTheSameBits() throws {
        let imported = try ImportedModel.load(onnxFile: repositoryPath("examples/onnx-models/mobilenetv2-tiny.onnx"))
        let spec = imported.spec
        let count = 6
        let batch = try fashionMNIST(.train, count: count).batch(Array(0..<count)[...])
        let probe = try Model(spec: spec)
        let relu6Pairs = probe.fusedClamps().values.filter { $0.clamp == .relu6 }
        XCTAssertGreaterThan(relu6Pairs.count, 5, "mobilenetv2-tiny fuses its BatchNorm → ReLU6 pairs")
        for quantized in [false, true] {
            func steps(fusing: Bool) throws -> [[UInt32]] {
                let model = try Model(spec: spec, seed: 3)
                if quantized {
                    let json = createDefaultConfig(for: spec).replacingOccurrences(of: "\"learn_clip\": false", with: "\"learn_clip\": true")
                    let config = try RetrainConfig.parse(JSONObject.parse(Data(json.utf8), file: "test.json"))
                    model.applyQuantization(try config.resolve(for: spec))
                    _ = try model.calibrate(on: [batch.images])
                }
                model.fusesReLU = fusing
                return twoSteps(model, batch.images, batch.labels)
            }
            XCTAssertEqual(try steps(fusing: true), try steps(fusing: false), "quantized \(quantized)")
        }
    }
}
