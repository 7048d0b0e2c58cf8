import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// Round modes (issue 12, Vitis AI `round_mode`; docs/ALGORITHMS.md §6.3): every mode on ties and
/// near-ties, fake quant against the INT8 kernels bit for bit on every path (input quantization,
/// requantization by multiplier and by shift, conv, depthwise conv, linear, add), the config and
/// deploy-file records, the ONNX export refusal, and a LeNet-5 calibrate → deploy → verify.
final class RoundModeTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let paths = Int8Kernels.Path.allCases.filter(Int8Kernels.isSupported)

    /// The definition, in Double: ties (fraction exactly ½) go up, down, away from zero or to
    /// even; everything else to the nearest integer.
    func reference(_ v: Float, _ mode: RoundMode) -> Float {
        let x = Double(v)
        guard x - x.rounded(.down) == 0.5 else { return Float(x.rounded(.toNearestOrEven)) }
        switch mode {
        case .halfEven: return Float(x.rounded(.toNearestOrEven))
        case .halfUp: return Float(x.rounded(.up))
        case .halfDown: return Float(x.rounded(.down))
        case .stdRound: return Float(x.rounded(.toNearestOrAwayFromZero))
        }
    }

    /// Values the rounding must get right: ties, the float neighbours of ties, and random values.
    func samples(seed: UInt64) -> [Float] {
        var values: [Float] = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 127.5, -128.5, 0, 3.25, -3.75]
        for tie in [0.5, 1.5, 2.5, 126.5] as [Float] {
            values += [tie.nextDown, tie.nextUp, -tie.nextDown, -tie.nextUp]
        }
        values += [0.49999997, -0.49999997]   // floor(x + 0.5) gets this one wrong
        var generator = SeededGenerator(seed: seed)
        values += Tensor.uniform([1000], bound: 300, using: &generator).storage
        values += (0..<200).map { _ in Float(Int.random(in: -300...300, using: &generator)) + 0.5 }
        return values
    }

    // MARK: The rule

    func testEachModeOnTies() {
        let ties: [Float] = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5]
        let expected: [RoundMode: [Float]] = [
            .halfEven: [0, 0, 2, -2, 2, -2],
            .halfUp: [1, 0, 2, -1, 3, -2],
            .halfDown: [0, -1, 1, -2, 2, -3],
            .stdRound: [1, -1, 2, -2, 3, -3],
        ]
        for mode in RoundMode.allCases {
            XCTAssertEqual(ties.map { mode.round($0) }, expected[mode], "\(mode)")
            XCTAssertEqual(ties.map { mode.round(Double($0)) }, expected[mode]!.map(Double.init), "\(mode) in Double")
            // Near-ties go to the nearest integer in every mode.
            XCTAssertEqual(mode.round(Float(0.49999997)), 0, "\(mode)")
            XCTAssertEqual(mode.round(Float(-0.49999997)), 0, "\(mode)")
            XCTAssertEqual(mode.round(Float(2.5).nextUp), 3, "\(mode)")
            XCTAssertEqual(mode.round(Float(2.5).nextDown), 2, "\(mode)")
            XCTAssertEqual(mode.round(Float(-1.5).nextUp), -1, "\(mode)")
            XCTAssertEqual(mode.round(Float(-1.5).nextDown), -2, "\(mode)")
        }
    }

    func testScalarAndLanesFollowTheDefinition() {
        let values = samples(seed: 3)
        for mode in RoundMode.allCases {
            for v in values { XCTAssertEqual(mode.round(v), reference(v, mode), "\(mode) at \(v)") }
            for start in stride(from: 0, to: values.count - 8, by: 8) {
                let lanes = SIMD8<Float>(values[start..<(start + 8)])
                let rounded = mode.round(lanes)
                for lane in 0..<8 { XCTAssertEqual(rounded[lane], reference(lanes[lane], mode), "\(mode) at \(lanes[lane])") }
            }
        }
    }

    // MARK: Fake quant against the kernels

    /// Grid scale 2^-3, so x = (k + ½)·s are exact ties of x/s.
    func testGridAndKernelQuantizeAgreeOnEveryPath() {
        let values = samples(seed: 5).map { $0 * 0.125 } + [Float.nan, .infinity, -.infinity, 40, -40]
        for mode in RoundMode.allCases {
            for offset in [0, -128, 17] {
                let grid = QuantizationGrid(bits: 8, scale: 0.125, offset: offset, roundMode: mode)
                let fake = values.map { grid.quantize($0) }
                for (i, v) in values.enumerated() where !v.isNaN {
                    let t = min(max(v / 0.125, Float(grid.qmin - offset)), Float(grid.qmax - offset))
                    XCTAssertEqual(fake[i], Int(reference(t, mode)) + offset, "\(mode) o \(offset) at \(v)")
                }
                var faked = values
                grid.fakeQuantize(&faked)
                for (i, v) in faked.enumerated() where !values[i].isNaN {
                    XCTAssertEqual(v, grid.dequantize(fake[i]), "fake quant \(mode) at \(values[i])")
                }
                for path in paths {
                    XCTAssertEqual(Int8Kernels.quantize(values, grid, path: path).map(Int.init), fake, "\(mode), o \(offset), \(path)")
                }
            }
        }
    }

    /// Requantization by multiplier (float) and by shift, every mode, every path: the codes of
    /// Swift's `mode.round(Float(acc) · m)`, clamped.
    func testRequantizationFollowsTheModeOnEveryPath() {
        var generator = SeededGenerator(seed: 9)
        let channels = 4, plane = 64
        var acc: [Int32] = []
        for _ in 0..<(2 * channels) {
            for j in 0..<plane {
                // Ties of a 2^-4 multiplier (odd multiples of 8), their neighbours, and random values.
                let tie = Int32.random(in: -1000...1000, using: &generator) * 16 + 8
                acc.append(j % 3 == 0 ? tie : j % 3 == 1 ? tie + (j % 2 == 0 ? 1 : -1) : Int32.random(in: -4000...4000, using: &generator))
            }
        }
        let multipliers: [Float] = [0.0625, 0.5, 0.03125, 0.0625]
        let floatMultipliers: [Float] = [0.0625 * 1.37, 0.5, 0.011, 0.0625]
        for mode in RoundMode.allCases {
            for (zero, relu) in [(Int8(0), false), (Int8(-20), true)] {
                for m in [multipliers, floatMultipliers] {
                    let floatPath = Int8Kernels.Requantization(multipliers: m, zeroPoint: zero, relu: relu, roundMode: mode, byShift: false)
                    var expected: [Int8] = []
                    for (i, a) in acc.enumerated() {
                        let r = mode.round(Float(a) * m[(i / plane) % channels])
                        let clamped = min(max(r, Float(floatPath.lowerBound - Int32(zero))), Float(127 - Int32(zero)))
                        expected.append(Int8(Int(clamped) + Int(zero)))
                    }
                    let byShift = Int8Kernels.Requantization(multipliers: m, zeroPoint: zero, relu: relu, roundMode: mode)
                    XCTAssertEqual(byShift.isByShift, m == multipliers)
                    for path in paths {
                        XCTAssertEqual(Int8Kernels.requantize(acc, channels: channels, planeSize: plane, floatPath, path: path), expected,
                                       "\(mode), multiplier path, \(path)")
                        XCTAssertEqual(Int8Kernels.requantize(acc, channels: channels, planeSize: plane, byShift, path: path), expected,
                                       "\(mode), \(byShift.isByShift ? "shift" : "multiplier") path, \(path)")
                    }
                }
            }
        }
    }

    /// The vector paths requantize conv and linear outputs in registers, and depthwise convs
    /// through their finishing loop: each path equals the portable one in every mode.
    func testConvAndLinearAgreeAcrossPathsInEveryMode() {
        var generator = SeededGenerator(seed: 21)
        let channels = 5, outputs = 7, h = 6, w = 9
        let x = (0..<(2 * channels * h * w)).map { _ in Int8.random(in: -128...127, using: &generator) }
        let weights = (0..<(outputs * channels * 9)).map { _ in Int8.random(in: -3...3, using: &generator) }
        let bias = (0..<outputs).map { _ in Int32.random(in: -50...50, using: &generator) }
        let g = ConvGeometry(batch: 2, channels: channels, height: h, width: w, outputChannels: outputs, kernel: 3, stride: 1, padding: 1)
        let fcWeights = (0..<(outputs * channels * h * w)).map { _ in Int8.random(in: -1...1, using: &generator) }
        let depthwise = Int8ConvGeometry(batch: 2, channels: channels, height: h, width: w, outputChannels: channels,
                                         kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: channels)
        let dwWeights = (0..<(channels * 9)).map { _ in Int8.random(in: -3...3, using: &generator) }
        let dwBias = [Int32](repeating: 3, count: channels)
        for mode in RoundMode.allCases {
            for (multiplier, byShift) in [(Float(0.25), true), (Float(0.25), false), (Float(0.5), true), (Float(0.3), false)] {
                let r = Int8Kernels.Requantization(multipliers: .init(repeating: multiplier, count: outputs), zeroPoint: 2, relu: false,
                                                   roundMode: mode, byShift: byShift)
                let dw = Int8Kernels.Requantization(multipliers: .init(repeating: multiplier, count: channels), zeroPoint: 0, relu: true,
                                                    roundMode: mode, byShift: byShift)
                // The reference: accumulators, then the scalar requantization.
                let convAcc = Int8Kernels.conv2dAccumulators(x, g, inputZeroPoint: -1, weights: weights, bias: bias, path: .portable)
                let expected = Int8Kernels.requantize(convAcc, channels: outputs, planeSize: h * w, r, path: .portable)
                let fcAcc = Int8Kernels.linearAccumulators(x, batch: 2, inputZeroPoint: -1, weights: fcWeights, bias: bias, path: .portable)
                let fcExpected = Int8Kernels.requantize(fcAcc, channels: outputs, planeSize: 1, r, path: .portable)
                let dwReference = Int8Kernels.conv2d(x, depthwise, inputZeroPoint: -1, weights: dwWeights, bias: dwBias, requantize: dw,
                                                     path: .portable)
                for path in paths {
                    XCTAssertEqual(Int8Kernels.conv2d(x, g, inputZeroPoint: -1, weights: weights, bias: bias, requantize: r, path: path),
                                   expected, "conv \(mode) \(multiplier) \(path)")
                    XCTAssertEqual(Int8Kernels.linear(x, batch: 2, inputZeroPoint: -1, weights: fcWeights, bias: bias, requantize: r, path: path),
                                   fcExpected, "linear \(mode) \(multiplier) \(path)")
                    XCTAssertEqual(Int8Kernels.conv2d(x, depthwise, inputZeroPoint: -1, weights: dwWeights, bias: dwBias, requantize: dw, path: path),
                                   dwReference, "depthwise \(mode) \(multiplier) \(path)")
                }
            }
        }
    }

    func testAddOnCodesFollowsTheOutputGridsMode() {
        var generator = SeededGenerator(seed: 4)
        let a = (0..<300).map { _ in Int8.random(in: -128...127, using: &generator) }
        let b = (0..<300).map { _ in Int8.random(in: -128...127, using: &generator) }
        let qa = QuantizationGrid(bits: 8, scale: 0.5, offset: 3), qb = QuantizationGrid(bits: 8, scale: 0.25, offset: -2)
        for mode in RoundMode.allCases {
            let qy = QuantizationGrid(bits: 8, scale: 1, offset: 0, roundMode: mode)   // sums of quarters: many ties
            let expected = zip(a, b).map { x, y in
                Int8(min(max(mode.round(qa.dequantize(Int(x)) + qb.dequantize(Int(y))), -128), 127))
            }
            for path in paths {
                XCTAssertEqual(Int8Kernels.add(a, qa, b, qb, output: qy, relu: false, path: path), expected, "\(mode) \(path)")
            }
        }
    }

    /// ULQ forward and weight fake quant round with the state's mode.
    func testFakeQuantizersUseTheirMode() {
        let x = Variable(Tensor(shape: [6], storage: [0.5, -0.5, 1.5, -1.5, 2.5, -2.5]))
        for mode in RoundMode.allCases {
            // clip (127, −128): s = 1, o = 0, so x/s are the ties themselves.
            let state = ActivationQuantizerState(fixedMin: false, roundMode: mode)
            state.setClipRange(max: 127, min: -128)
            XCTAssertEqual(ulqFakeQuantize(x, state: state, tape: nil).value.storage, x.value.storage.map { mode.round($0) }, "\(mode)")
            // A weight row whose ARQ scale is 1 (max |w| = 127).
            let w = Tensor(shape: [1, 7], storage: [127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5])
            let weightState = WeightQuantizerState(weightShape: [1, 7], channelWise: false, roundMode: mode)
            XCTAssertEqual(weightFakeQuantize(Variable(w), state: weightState, tape: nil).value.storage,
                           w.storage.map { mode.round($0) }, "\(mode)")
        }
    }

    /// The ULQ clip gradients use the mode's residual round(t) − t: checked against central
    /// differences of the surrogate, as for half to even.
    func testULQBackwardUsesTheModesResidual() {
        for mode in RoundMode.allCases {
            let state = ActivationQuantizerState(fixedMin: false, roundMode: mode)
            state.setClipRange(max: 2.55, min: -2.55)   // s = 0.02
            let xs: [Float] = [0.01, 0.03, -0.05, 0.5, 3.0, -3.1]   // ties of x/s in float32 are not exact; the sum decides
            let x = Variable(Tensor(shape: [xs.count], storage: xs), requiresGrad: true)
            let tape = Tape()
            let y = ulqFakeQuantize(x, state: state, tape: tape)
            tape.backward(from: weightedSum(y, weights: [Float](repeating: 1, count: xs.count), tape: tape))
            let q = state.grid
            var e = 0.0
            for v in xs where v >= q.lower && v <= q.upper { e += Double(mode.round(v / q.scale) - v / q.scale) }
            e += Double(mode.round(Float(2.55) / q.scale) - Float(2.55) / q.scale)   // the one value above U
            e += Double(mode.round(Float(-2.55) / q.scale) - Float(-2.55) / q.scale) // the one below L
            let expected = Float(e / 255 + 1)
            XCTAssertEqual(state.clipMax.grad!.storage[0], expected, accuracy: 1e-6, "\(mode)")
        }
    }

    // MARK: Config, plan, deploy file, export

    func testVitisRoundModeReachesThePlanAndTheRecord() throws {
        let text = try String(contentsOfFile: repositoryPath("Configs/vitis/plain-maxmin.json"), encoding: .utf8)
            .replacingOccurrences(of: "\"half_even\"", with: "\"std_round\"")
        let plan = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "std.json")).resolve(for: lenet)
        for layer in plan.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.activationRoundMode, .stdRound)
            XCTAssertEqual(layer.quantizer?.weightRoundMode, .stdRound)
        }
        let record = plan.explicitConfig().jsonText()
        XCTAssertTrue(record.contains("\"round_mode\": \"std_round\""), record)
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(record.utf8), file: "record")).resolve(for: lenet)
        XCTAssertEqual(reread.quantizedLayers.map(\.quantizer), plan.quantizedLayers.map(\.quantizer))
        // Half to even is the default and is not written.
        let plain = try RetrainConfig.load(file: repositoryPath("Configs/retrain.json")).resolve(for: lenet)
        XCTAssertFalse(plain.explicitConfig().jsonText().contains("round_mode"))
        XCTAssertEqual(plain.quantizedLayers.first?.quantizer?.activationRoundMode, .halfEven)
    }

    func testCodableGridWritesTheModeOnlyWhenNotHalfEven() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let plain = String(decoding: try encoder.encode(QuantizationGrid(bits: 8, scale: 0.5, offset: 1)), as: UTF8.self)
        XCTAssertFalse(plain.contains("roundMode"))
        let up = QuantizationGrid(bits: 8, scale: 0.5, offset: 1, roundMode: .halfUp)
        let text = try encoder.encode(up)
        XCTAssertTrue(String(decoding: text, as: UTF8.self).contains("\"roundMode\":\"half_up\""))
        XCTAssertEqual(try JSONDecoder().decode(QuantizationGrid.self, from: text), up)
        XCTAssertEqual(try JSONDecoder().decode(QuantizationGrid.self, from: Data(plain.utf8)).roundMode, .halfEven)
    }

    /// The manual's default round mode, std_round, through calibrate, deploy (the file records the
    /// mode), verify PASS; `qat export` refuses it in one line.
    func testLeNetWithStdRoundCalibratesDeploysAndVerifies() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/std.h5", deployed = folder + "/std-int8.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/plain-std-round.json",
                                     "--checkpoint", repositoryPath("Checkpoints/lenet5-float.h5"), "--output", ptq,
                                     "--batch-num", "2", "--test-limit", "500"])
        XCTAssertEqual(status, 0, log)
        let (model, _) = try Model.load(checkpoint: ptq)
        XCTAssertTrue(model.fakeQuantizers.allSatisfy { $0.activation.roundMode == .stdRound && $0.weight.roundMode == .stdRound })

        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let file = try DeployFile.read(from: deployed)
        let integer = file.nodes.filter(\.isInteger)
        XCTAssertEqual(integer.count, 5)
        XCTAssertTrue(integer.allSatisfy { $0.inputQuantizer?.roundMode == .stdRound }, "\(integer.map(\.inputQuantizer))")
        XCTAssertTrue(integer.filter { $0.output != nil }.allSatisfy { $0.output?.roundMode == .stdRound })

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)

        let (exportStatus, exported) = try qat(["export", "--checkpoint", ptq, "--output", folder + "/std.onnx"])
        XCTAssertEqual(exportStatus, 1, exported)
        XCTAssertEqual(exported.split(separator: "\n").count, 1, exported)
        XCTAssertTrue(exported.contains("layer conv1") && exported.contains("round_mode std_round")
                      && exported.contains("QuantizeLinear rounds half to even"), exported)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/std.onnx"))
    }
}
