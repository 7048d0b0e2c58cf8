import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
import QAT

/// Power-of-two scales (issue 12, Vitis AI `scale_type: "poweroftwo"`; docs/ALGORITHMS.md §1.1
/// and §5.1): how a calibrated scale snaps to 2^k, the plan and checkpoint record, the refusal of
/// QAT with learnable bounds, the integer shift requantization against the float path, and a
/// LeNet-5 calibrate → deploy → verify.
final class PowerOfTwoScaleTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let floatCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
    let configFile = repositoryPath("Configs/vitis/plain-poweroftwo.json")

    // MARK: Snapping, hand-computed

    func testPowerOfTwoCeiling() {
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(0.3)), 0.5)
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(0.25)), 0.25, "a power of two stays")
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(3)), 4)
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(1)), 1)
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(0.001)), 0.001953125)           // 2^-9
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Float(0.25).nextUp), 0.5, "just above 2^-2")
        XCTAssertEqual(QuantizationGrid.powerOfTwoCeiling(Double(1) / 127), 0.015625)            // 0.00787 > 2^-7 → 2^-6
        XCTAssertTrue(QuantizationGrid.isPowerOfTwo(0.03125))
        XCTAssertFalse(QuantizationGrid.isPowerOfTwo(0.03))
        XCTAssertFalse(QuantizationGrid.isPowerOfTwo(0))
    }

    /// The zero point stays, the scale rises to the next power of two, so the grid covers the old one.
    func testActivationGridsSnapKeepingTheirZeroPoint() {
        // Symmetric signed (IFMR's 127·s, −128·s with s = 0.03): 2^-5, zero point 0, [−4, 3.96875].
        let symmetric = QuantizationGrid(bits: 8, clipMax: 127 * 0.03, clipMin: -128 * 0.03).powerOfTwoCovering
        XCTAssertEqual(symmetric.scale, 0.03125)
        XCTAssertEqual(symmetric.offset, 0)
        XCTAssertEqual(symmetric.lower, -4)
        XCTAssertEqual(symmetric.upper, 3.96875)
        // Unsigned (fixed_min, [0, 6]): s = 6/255 ≈ 0.0235 → 2^-5, zero point −128, [0, 7.96875].
        let unsigned = QuantizationGrid(bits: 8, clipMax: 6, clipMin: 0).powerOfTwoCovering
        XCTAssertEqual(unsigned.scale, 0.03125)
        XCTAssertEqual(unsigned.offset, -128)
        XCTAssertEqual(unsigned.lower, 0)
        XCTAssertEqual(unsigned.upper, 7.96875)
        // Asymmetric [−1, 3]: s = 4/255 ≈ 0.01569 (just above 2^-6) → 2^-5; o = round(−128 + 63.75) = −64 stays.
        let asymmetric = QuantizationGrid(bits: 8, clipMax: 3, clipMin: -1)
        XCTAssertEqual(asymmetric.offset, -64)
        let snapped = asymmetric.powerOfTwoCovering
        XCTAssertEqual(snapped.scale, 0.03125)
        XCTAssertEqual(snapped.offset, -64)
        XCTAssertEqual(snapped.lower, -2)
        XCTAssertEqual(snapped.upper, 5.96875)
        XCTAssertLessThanOrEqual(snapped.lower, asymmetric.lower)
        XCTAssertGreaterThanOrEqual(snapped.upper, asymmetric.upper)
    }

    /// The state stores the snapped bounds, from which the ULQ forward derives exactly 2^k.
    func testActivationStateStoresBoundsOfAPowerOfTwoGrid() {
        let cases: [(fixedMin: Bool, max: Float, min: Float, scale: Float, offset: Int)] = [
            (false, 127 * 0.03, -128 * 0.03, 0.03125, 0),
            (true, 6, 0, 0.03125, -128),
            (false, 3, -1, 0.03125, -64),
        ]
        for c in cases {
            let state = ActivationQuantizerState(fixedMin: c.fixedMin, powerOfTwoScale: true)
            state.setClipRange(max: c.max, min: c.min)
            let x = Variable(Tensor(shape: [4], storage: [0.1, -0.7, 2.5, 9]))
            let y = ulqFakeQuantize(x, state: state, tape: nil)
            XCTAssertEqual(state.scale, c.scale, "\(c)")
            XCTAssertEqual(state.offset, c.offset, "\(c)")
            for v in y.value.storage {
                XCTAssertEqual((v / c.scale).rounded(), v / c.scale, "\(v) is a multiple of the scale")
            }
        }
        // Without the option the scale is the calibrated one.
        let plain = ActivationQuantizerState(fixedMin: true)
        plain.setClipRange(max: 6, min: 0)
        _ = ulqFakeQuantize(Variable(Tensor(shape: [1], storage: [1])), state: plain, tape: nil)
        XCTAssertEqual(plain.scale, 6 / 255)
    }

    /// ARQ: the smallest 2^k ≥ A/D per row (D = 128 when the negative side is larger).
    func testWeightScalesSnapPerChannelAndPerTensor() {
        let w = Tensor(shape: [4, 2], storage: [0.5, -0.3,   // A/D = 0.5/127 ≈ 0.003937 > 2^-8 → 2^-7
                                                -1.0, 0.2,   // 1/128 = 2^-7 exactly → 2^-7
                                                0.25, 0,     // 0.25/127 ≈ 0.00197 → 2^-8
                                                0, 0])       // zero row → 1
        XCTAssertEqual(arqScales(w, rows: 4, powerOfTwo: true), [0.0078125, 0.0078125, 0.00390625, 1])
        XCTAssertEqual(arqScales(w, rows: 1, powerOfTwo: true), [0.0078125])
        XCTAssertEqual(arqScales(w, rows: 4), [0.5 / 127, 1.0 / 128, 0.25 / 127, 1], "float scales unchanged")
        // No weight is clipped: every code is round(w / s) itself.
        let state = WeightQuantizerState(weightShape: [4, 2], channelWise: true, powerOfTwo: true)
        let q = weightFakeQuantize(Variable(w), state: state, tape: nil).value.storage
        XCTAssertEqual(q, [0.5, -0.296875, -1.0, 0.203125, 0.25, 0, 0, 0])
    }

    // MARK: Config, plan and checkpoint record

    func testVitisScaleTypeReachesThePlanPerTensor() throws {
        let plan = try RetrainConfig.load(file: configFile).resolve(for: lenet)
        for layer in plan.quantizedLayers {
            XCTAssertEqual(layer.quantizer?.activationScaleType, .powerOfTwo, layer.name)
            XCTAssertEqual(layer.quantizer?.weightScaleType, .powerOfTwo, layer.name)
        }
        XCTAssertTrue(plan.table().contains("poweroftwo"))
        // Weights float, activations power of two.
        var text = try String(contentsOfFile: configFile, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"scale_type\": \"poweroftwo\",", with: "\"scale_type\": \"float\",")
        text = text.replacingOccurrences(of: "\n}", with: ", \"tensor_quantize_config\": {\"activation\": {\"scale_type\": \"poweroftwo\"}, "
                                         + "\"input\": {\"scale_type\": \"poweroftwo\"}}\n}")
        let mixed = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "mixed.json")).resolve(for: lenet)
        XCTAssertEqual(mixed.layer(named: "conv1")?.quantizer?.activationScaleType, .powerOfTwo)
        XCTAssertEqual(mixed.layer(named: "conv1")?.quantizer?.weightScaleType, .float)
    }

    /// The checkpoint's record of the plan keeps the option; a plan without it writes no key.
    func testTheRecordedPlanRoundTrips() throws {
        let plan = try RetrainConfig.load(file: configFile).resolve(for: lenet)
        let text = plan.explicitConfig().jsonText()
        XCTAssertTrue(text.contains("\"scale_type\": \"poweroftwo\""), text)
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "record")).resolve(for: lenet)
        XCTAssertEqual(reread.quantizedLayers.map(\.quantizer), plan.quantizedLayers.map(\.quantizer))

        let floatPlan = try RetrainConfig.load(file: repositoryPath("Configs/vitis/plain-maxmin.json")).resolve(for: lenet)
        XCTAssertFalse(floatPlan.explicitConfig().jsonText().contains("scale_type"))
        XCTAssertEqual(floatPlan.quantizedLayers.first?.quantizer?.activationScaleType, .float)
    }

    func testLearnedWeightScalesCannotBePowersOfTwo() throws {
        let text = #"{"conv1": {"retrain_weight_config": {"algo": "ulq_retrain", "scale_type": "poweroftwo"}}}"#
        XCTAssertThrowsError(try RetrainConfig.parse(JSONObject.parse(Data(text.utf8), file: "c.json")).resolve(for: lenet)) { error in
            guard let error = error as? InputError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.keyPath, "conv1.retrain_weight_config.scale_type")
            XCTAssertTrue(error.message.contains("ulq_retrain"), error.message)
        }
    }

    /// QAT would train the bounds off the grid: `qat train` refuses in one line.
    func testTrainingWithLearnableBoundsIsRefused() throws {
        let config = try RetrainConfig.load(file: configFile)
        var settings = RunSettings()
        settings.modelSpec = repositoryPath("Configs/models/lenet5.json")
        let run = try TrainingRun(configFile: "plain-poweroftwo.json", config: config, settings: settings)
        let train = try fashionMNIST(.train, count: 128), test = try fashionMNIST(.test, count: 32)
        XCTAssertThrowsError(try run.preflight(train: train, test: test)) { error in
            guard let error = error as? InputError else { return XCTFail("\(error)") }
            XCTAssertEqual(error.file, "plain-poweroftwo.json")
            XCTAssertEqual(error.keyPath, "layer conv1")
            XCTAssertTrue(error.message.contains("poweroftwo cannot be trained") && error.message.contains("qat calibrate"), error.message)
        }
    }

    // MARK: Requantization by shift

    func testShiftsAreChosenOnlyForExactPowersOfTwo() {
        typealias R = Int8Kernels.Requantization
        XCTAssertEqual(R.shifts(of: [0.25, 0.125, 1], offsets: nil), [2, 3, 0])
        XCTAssertEqual(R.shifts(of: [0.25], offsets: [0]), [2])
        XCTAssertNil(R.shifts(of: [0.25, 0.3], offsets: nil))
        XCTAssertNil(R.shifts(of: [0.25], offsets: [0.5]), "a bias residual needs the float path")
        XCTAssertNil(R.shifts(of: [2], offsets: nil), "multipliers above 1 keep the float path")
        XCTAssertNil(R.shifts(of: [Float(0x1p-31)], offsets: nil), "shifts up to 30")
        XCTAssertTrue(R(multipliers: [0.5], zeroPoint: 0, relu: false).isByShift)
        XCTAssertFalse(R(multipliers: [0.5], zeroPoint: 0, relu: false, byShift: false).isByShift)
    }

    /// Hand-computed ties: half to even, in integers, both signs.
    func testShiftRoundsTiesToEven() {
        let acc: [Int32] = [5, 7, -5, -7, 6, -6, 10, -10, 3, -3, 1, -1]
        let shifts: [Int32] = [1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1]
        // 2.5 → 2, 3.5 → 4, −2.5 → −2, −3.5 → −4, 1.5 → 2, −1.5 → −2, 2.5 → 2, −2.5 → −2, 1.5 → 2, −1.5 → −2, 0.5 → 0, −0.5 → 0
        let expected: [Int8] = [2, 4, -2, -4, 2, -2, 2, -2, 2, -2, 0, 0]
        for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
            for (i, a) in acc.enumerated() {
                let r = Int8Kernels.Requantization(multipliers: [Float(sign: .plus, exponent: -Int(shifts[i]), significand: 1)],
                                                   zeroPoint: 0, relu: false)
                XCTAssertEqual(r.shifts, [shifts[i]])
                XCTAssertEqual(Int8Kernels.requantize([a], channels: 1, planeSize: 1, r, path: path), [expected[i]], "\(a) >> \(shifts[i]) on \(path)")
            }
        }
    }

    /// Random accumulators (|acc| ≤ 2^24, where Float(acc) is exact) and exact ties on every
    /// channel: the shift path gives the float path's codes bit for bit, on every kernel path,
    /// with and without a fused ReLU, and through conv (GEMM, depthwise) and linear.
    func testShiftPathEqualsTheFloatPath() {
        var generator = SeededGenerator(seed: 12)
        let shifts: [Int32] = [0, 1, 3, 7, 12, 17, 24, 30]
        let multipliers = shifts.map { Float(sign: .plus, exponent: -Int($0), significand: 1) }
        let plane = 97
        var acc: [Int32] = []
        for _ in 0..<3 {
            for k in shifts {
                for j in 0..<plane {
                    switch j % 3 {
                    case 0:   // a tie: an odd multiple of 2^(k−1)
                        let half = k == 0 ? 0 : Int64(1) << (k - 1)
                        let odd = Int64.random(in: -300...300, using: &generator) * 2 + 1
                        acc.append(Int32(clamping: max(min(odd * half, 1 << 24), -(1 << 24))))
                    case 1: acc.append(Int32.random(in: -(1 << 24)...(1 << 24), using: &generator))
                    default:   // near the codes' range
                        acc.append(Int32(clamping: Int64.random(in: -200...200, using: &generator) << Int64(k) + Int64.random(in: -3...3, using: &generator)))
                    }
                }
            }
        }
        for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
            for (zero, relu) in [(Int8(0), false), (Int8(-128), true), (Int8(5), true), (Int8(-3), false)] {
                let byShift = Int8Kernels.Requantization(multipliers: multipliers, zeroPoint: zero, relu: relu, upperBound: 120)
                let byFloat = Int8Kernels.Requantization(multipliers: multipliers, zeroPoint: zero, relu: relu, upperBound: 120, byShift: false)
                XCTAssertTrue(byShift.isByShift)
                XCTAssertEqual(Int8Kernels.requantize(acc, channels: shifts.count, planeSize: plane, byShift, path: path),
                               Int8Kernels.requantize(acc, channels: shifts.count, planeSize: plane, byFloat, path: .portable),
                               "\(path), zero point \(zero), relu \(relu)")
            }
        }

        // Through the conv and linear kernels, whose vector paths requantize in registers.
        let channels = 6, outputs = 8
        let x = (0..<(2 * channels * 9 * 11)).map { _ in Int8.random(in: -128...127, using: &generator) }
        let weights = (0..<(outputs * channels * 9)).map { _ in Int8.random(in: -128...127, using: &generator) }
        let bias = (0..<outputs).map { _ in Int32.random(in: -5000...5000, using: &generator) }
        let convShifts = (0..<outputs).map { Float(sign: .plus, exponent: -(6 + $0 % 5), significand: 1) }
        let g = ConvGeometry(batch: 2, channels: channels, height: 9, width: 11, outputChannels: outputs, kernel: 3, stride: 1, padding: 1)
        let shiftR = Int8Kernels.Requantization(multipliers: convShifts, zeroPoint: -7, relu: true)
        let floatR = Int8Kernels.Requantization(multipliers: convShifts, zeroPoint: -7, relu: true, byShift: false)
        let reference = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: weights, bias: bias, requantize: floatR, path: .portable)
        let depthwiseWeights = (0..<(channels * 2 * 9)).map { _ in Int8.random(in: -128...127, using: &generator) }
        let depthwise = Int8ConvGeometry(batch: 2, channels: channels, height: 9, width: 11, outputChannels: 2 * channels,
                                         kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: channels)
        let dwMultipliers = (0..<(2 * channels)).map { Float(sign: .plus, exponent: -(3 + $0 % 4), significand: 1) }
        let dwBias = [Int32](repeating: 17, count: 2 * channels)
        let dwReference = Int8Kernels.conv2d(x, depthwise, inputZeroPoint: 3, weights: depthwiseWeights, bias: dwBias,
                                             requantize: .init(multipliers: dwMultipliers, zeroPoint: 0, relu: false, byShift: false),
                                             path: .portable)
        let fcIn = channels * 9 * 11
        let fcWeights = (0..<(outputs * fcIn)).map { _ in Int8.random(in: -128...127, using: &generator) }
        let fcReference = Int8Kernels.linear(x, batch: 2, inputZeroPoint: 3, weights: fcWeights, bias: bias, requantize: floatR, path: .portable)
        for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: weights, bias: bias, requantize: shiftR, path: path),
                           reference, "conv on \(path)")
            XCTAssertEqual(Int8Kernels.conv2d(x, depthwise, inputZeroPoint: 3, weights: depthwiseWeights, bias: dwBias,
                                              requantize: .init(multipliers: dwMultipliers, zeroPoint: 0, relu: false), path: path),
                           dwReference, "depthwise conv on \(path)")
            XCTAssertEqual(Int8Kernels.linear(x, batch: 2, inputZeroPoint: 3, weights: fcWeights, bias: bias, requantize: shiftR, path: path),
                           fcReference, "linear on \(path)")
        }
    }

    // MARK: LeNet-5 through deploy and verify

    func testLeNetCalibratesDeploysAndVerifiesWithShifts() throws {
        let folder = try makeTemporaryFolder(self)
        let ptq = folder + "/pow2.h5", deployed = folder + "/pow2-int8.h5"
        let (status, log) = try qat(["calibrate", "--config", "Configs/vitis/plain-poweroftwo.json", "--checkpoint", floatCheckpoint,
                                     "--output", ptq, "--batch-num", "2", "--test-limit", "500"])
        XCTAssertEqual(status, 0, log)

        // Every scale in the checkpoint is a power of two.
        let (model, _) = try Model.load(checkpoint: ptq)
        XCTAssertEqual(model.fakeQuantizers.count, 5)
        for q in model.fakeQuantizers {
            XCTAssertTrue(QuantizationGrid.isPowerOfTwo(try q.inputGrid().scale), q.layerName)
            let layer = model.layers.first { $0.name == q.layerName } as! WeightedLayer
            XCTAssertTrue(q.weightRowScales(layer.weight.value).allSatisfy(QuantizationGrid.isPowerOfTwo), q.layerName)
        }

        let (inspectStatus, inspected) = try qat(["inspect", ptq])
        XCTAssertEqual(inspectStatus, 0, inspected)
        XCTAssertTrue(inspected.contains("conv1    clip") && inspected.contains("poweroftwo (requantize by shift when deployed"), inspected)

        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        XCTAssertTrue(deployLog.contains("requantize by shift (power-of-two multipliers, integers only): 4 of 4 requantizing layers"), deployLog)
        let file = try DeployFile.read(from: deployed)
        let requantizing = file.nodes.filter { $0.isInteger && $0.output != nil }
        XCTAssertEqual(requantizing.map(\.name), ["conv1", "conv2", "fc1", "fc2"])
        for node in requantizing {
            XCTAssertTrue(node.multipliers.allSatisfy(QuantizationGrid.isPowerOfTwo), "\(node.name): \(node.multipliers)")
            XCTAssertTrue(node.requantizesByShift, node.name)
        }

        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "500"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
        // Fake quant adds the bias on the accumulator grid exactly, so every layer alone gives
        // the engine's codes bit for bit, ties included.
        for layer in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
            let row = try XCTUnwrap(verified.split(separator: "\n").first { $0.hasPrefix(layer + " ") }, verified)
            let alone = row.split(separator: " ", omittingEmptySubsequences: true).suffix(2)
            XCTAssertEqual(Array(alone), ["100.0000%", "0"], "\(layer): \(row)")
        }
    }
}
