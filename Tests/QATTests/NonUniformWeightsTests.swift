import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy
import QAT

/// AMCT's NUQ (`nuq_quantize`, docs/ALGORITHMS.md §3.1) and weight-only layers
/// (`weight_compress_only`, §3.2), issue 12 item 3: hand-computed levels, assignment and ties,
/// Lloyd never worse than its uniform start, the asymmetric weight grid by hand, the proto-text
/// rules, checkpoint round trips, and LeNet-5 calibrate → deploy → verify for both.
final class NonUniformWeightsTests: XCTestCase {
    let lenet = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
    let floatCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")

    // MARK: Levels by hand

    /// One row with ARQ scale 1 (max |w| = 127, so s = 127/127): codes −5 … 127.
    let row: [Float] = [127, 0, 1, 2, 10, 11, -5, 60]

    func levels(_ values: [Float], steps: Int, iterations: Int) -> [Int] {
        values.withUnsafeBufferPointer { nuqLevels(scaled: $0, parameters: NUQParameters(steps: steps, iterations: iterations)) }
    }

    func testHandComputedLevelsAndAssignment() throws {
        // Start: 4 levels uniform over [−5, 127]: −5 + k·132/3 = −5, 39, 83, 127.
        XCTAssertEqual(levels(row, steps: 4, iterations: 0), [-5, 39, 83, 127])
        // Pass 1: −5, 0, 1, 2, 10, 11 → −5 (mean 19/6 = 3.17 → 3); 60 → 39 (21 < 23; mean 60);
        // 83 has no member and stays; 127 stays. Pass 2 changes nothing.
        XCTAssertEqual(levels(row, steps: 4, iterations: 1), [3, 60, 83, 127])
        XCTAssertEqual(levels(row, steps: 4, iterations: 5), [3, 60, 83, 127])

        // Through the fake-quant op: ŵ = s·level with s = 1, and the deployer's codes are the levels.
        let state = WeightQuantizerState(weightShape: [1, 8], channelWise: false)
        state.nonUniform = NonUniformWeights(NUQParameters(steps: 4, iterations: 1))
        let out = weightFakeQuantize(Variable(Tensor(shape: [1, 8], storage: row)), state: state, tape: nil)
        XCTAssertEqual(state.scales, [1])
        XCTAssertEqual(out.value.storage, [127, 3, 3, 3, 3, 3, 3, 60])
        XCTAssertEqual(state.nonUniform?.levels, [[3, 60, 83, 127]])
        // With no pass the uniform levels assign 0 → −5 and 60 → 39.
        XCTAssertEqual(nuqCodes(Tensor(shape: [1, 8], storage: row), rows: 1, bits: 8,
                                nonUniform: NonUniformWeights(NUQParameters(steps: 4, iterations: 0))).codes,
                       [127, -5, -5, -5, -5, -5, -5, 39])
        // A row using no more codes than there are levels keeps them all: NUQ is ARQ there.
        XCTAssertEqual(levels([-2, 0, 1, 3], steps: 16, iterations: 3), [-2, -1, 0, 1, 2, 3])
    }

    func testTiesGoToTheSmallerMagnitude() {
        XCTAssertEqual(nearestLevelIndex(17, in: [-5, 39]), 0, "17 is 22 from both: −5 is smaller")
        XCTAssertEqual(nearestLevelIndex(-17, in: [-39, 5]), 1)
        XCTAssertEqual(nearestLevelIndex(0, in: [-3, 3]), 1, "between l and −l: the positive one")
        XCTAssertEqual(nearestLevelIndex(2.5, in: [2, 3]), 0)
        XCTAssertEqual(nearestLevelIndex(-200, in: [-5, 39]), 0)
        XCTAssertEqual(nearestLevelIndex(200, in: [-5, 39]), 1)
    }

    /// On random rows, every pass count gives ≤ num_steps levels and an error no larger than the
    /// uniform start's (Lloyd's passes never raise Σ (t − level)²).
    func testLloydNeverRaisesTheErrorOfItsUniformStart() {
        var generator = SeededGenerator(seed: 12)
        for steps in [16, 32] {
            for trial in 0..<4 {
                let values = (0..<500).map { _ -> Float in
                    let t = generator.nextNormal() * (trial.isMultiple(of: 2) ? 20 : 45)
                    return min(max(t, -128), 127)
                }
                let start = levels(values, steps: steps, iterations: 0)
                let startError = values.withUnsafeBufferPointer { nuqError(scaled: $0, levels: start) }
                var previous = startError
                for iterations in 1...5 {
                    let refined = levels(values, steps: steps, iterations: iterations)
                    XCTAssertLessThanOrEqual(refined.count, steps)
                    XCTAssertEqual(refined, refined.sorted())
                    let error = values.withUnsafeBufferPointer { nuqError(scaled: $0, levels: refined) }
                    XCTAssertLessThanOrEqual(error, previous, "steps \(steps), trial \(trial), \(iterations) passes")
                    previous = error
                }
                XCTAssertLessThan(previous, startError, "the passes improve on the uniform start")
            }
        }
    }

    /// QAT keeps the levels once chosen, and the gradient is straight through.
    func testLevelsStayFixedAndTheGradientIsStraightThrough() {
        let state = WeightQuantizerState(weightShape: [1, 8], channelWise: false)
        state.nonUniform = NonUniformWeights(NUQParameters(steps: 4, iterations: 1))
        _ = weightFakeQuantize(Variable(Tensor(shape: [1, 8], storage: row)), state: state, tape: nil)
        let moved = row.map { $0 == 127 ? $0 : $0 + 20 }
        let weight = Variable(Tensor(shape: [1, 8], storage: moved), requiresGrad: true)
        let tape = Tape()
        let out = weightFakeQuantize(weight, state: state, tape: tape)
        XCTAssertEqual(state.nonUniform?.levels, [[3, 60, 83, 127]], "levels are not chosen again")
        XCTAssertEqual(out.value.storage, [127, 3, 3, 3, 3, 3, 3, 83])
        let upstream: [Float] = [1, -2, 3, -4, 5, -6, 7, -8]
        tape.backward(from: weightedSum(out, weights: upstream, tape: tape))
        XCTAssertEqual(weight.grad?.storage, upstream)
    }

    // MARK: Asymmetric weights (weight-only layers)

    func testAsymmetricWeightGridByHand() {
        // Row [−1, 0.5, 3]: range [−1, 3], s = 4/255, o = round(−128 + 63.75) = −64.
        // −1/s = −63.75 → −64; 0.5/s = 31.875 → 32; 3/s = 191.25 → clamped to 127 − o = 191.
        let grids = asymmetricARQGrids(Tensor(shape: [1, 3], storage: [-1, 0.5, 3]), rows: 1)
        XCTAssertEqual(grids[0].scale, Float(4) / 255)
        XCTAssertEqual(grids[0].offset, -64)
        let state = WeightQuantizerState(weightShape: [1, 3], channelWise: false)
        state.asymmetric = true
        let out = weightFakeQuantize(Variable(Tensor(shape: [1, 3], storage: [-1, 0.5, 3])), state: state, tape: nil)
        let s = Float(4) / 255
        XCTAssertEqual(out.value.storage, [-64 * s, 32 * s, 191 * s])
        // A row that never goes negative still holds 0: range [0, 2].
        let positive = asymmetricARQGrids(Tensor(shape: [1, 2], storage: [0.5, 2]), rows: 1)[0]
        XCTAssertEqual(positive.scale, Float(2) / 255)
        XCTAssertEqual(positive.offset, -128)
    }

    // MARK: Proto-text rules

    func config(_ text: String) throws -> RetrainConfig {
        try AMCTSimpleConfig.parse(ProtoTextMessage.parse(Data(text.utf8), file: "quant.cfg"))
    }

    func assertError(_ text: String, keyPath: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try config(text).resolve(for: lenet), line: line) { error in
            guard let error = error as? InputError else { return XCTFail("\(error)", line: line) }
            XCTAssertEqual(error.file, "quant.cfg", line: line)
            XCTAssertEqual(error.keyPath, keyPath, "\(error)", line: line)
            for text in mentions { XCTAssertTrue(error.message.contains(text), "\(error)", line: line) }
            XCTAssertFalse(error.description.contains("\n"), line: line)
        }
    }

    func testProtoTextSettingsResolveKeyByKey() throws {
        let plan = try config("""
            common_config { arq_quantize { channel_wise: false } }
            override_layer_types { layer_type: "Conv" calibration_config { arq_quantize { channel_wise: true } } }
            override_layer_types { layer_type: "Gemm" calibration_config { nuq_quantize { num_steps: 32 } } }
            override_layer_configs { layer_name: "fc3" calibration_config { arq_quantize { channel_wise: false } } }
            override_layer_configs { layer_name: "conv2" calibration_config { nuq_quantize { num_steps: 16 num_of_iteration: 2 } } }
            override_layer_configs { layer_name: "conv1" calibration_config { weight_compress_only: true
                arq_quantize { asymmetric: true } } }
            """).resolve(for: lenet)
        let q = { (name: String) in plan.layer(named: name)!.quantizer! }
        XCTAssertEqual(q("conv1").weightCompressOnly, true)
        XCTAssertEqual(q("conv1").asymmetricWeights, true)
        XCTAssertEqual(q("conv1").channelWise, true, "from the Conv type")
        XCTAssertFalse(q("conv1").needsCalibration)
        XCTAssertEqual(q("conv2").nonUniform, NUQParameters(steps: 16, iterations: 2))
        XCTAssertEqual(q("conv2").channelWise, true)
        // Gemm's NUQ (iterations default 0) reaches fc1 and fc2; fc3's arq_quantize makes it uniform.
        XCTAssertEqual(q("fc1").nonUniform, NUQParameters(steps: 32, iterations: 0))
        XCTAssertEqual(q("fc1").channelWise, false, "from common_config: NUQ keeps the less specific channel_wise")
        XCTAssertNil(q("fc3").nonUniform)
        // The resolved plan written as JSON (a checkpoint's record) reads back to the same settings.
        let written = plan.explicitConfig().jsonText(layerOrder: lenet.layers.map(\.name))
        let reread = try RetrainConfig.parse(JSONObject.parse(Data(written.utf8), file: "plan.json")).resolve(for: lenet)
        XCTAssertEqual(reread.layers.map(\.quantizer), plan.layers.map { layer in
            layer.quantizer.map { var settings = $0; settings.fixedMinIsDefault = false; return settings }
        })
    }

    func testTheManualsConflictRules() throws {
        assertError("common_config {\n  arq_quantize { asymmetric: true }\n}", keyPath: "common_config.arq_quantize.asymmetric",
                    mentions: ["needs weight_compress_only true"])
        assertError("common_config { weight_compress_only: false arq_quantize { asymmetric: true } }",
                    keyPath: "common_config.arq_quantize.asymmetric", mentions: ["line 1, column 60", "needs weight_compress_only true"])
        assertError("common_config { weight_compress_only: true nuq_quantize { num_steps: 16 } }",
                    keyPath: "common_config.nuq_quantize", mentions: ["line 1, column 44", "cannot use NUQ"])
        assertError("common_config { weight_compress_only: true ifmr_quantize { search_step: 0.01 } }",
                    keyPath: "common_config.ifmr_quantize", mentions: ["line 1, column 44", "keeps a float input"])
        assertError("common_config { arq_quantize {} nuq_quantize { num_steps: 16 } }",
                    keyPath: "common_config.nuq_quantize", mentions: ["given with arq_quantize"])
        // Across levels: NUQ from the type, weight-only from the layer.
        assertError("override_layer_types { layer_type: \"Conv\" calibration_config { nuq_quantize { num_steps: 16 } } }\n"
                    + "override_layer_configs { layer_name: \"conv1\" calibration_config { weight_compress_only: true } }",
                    keyPath: "override_layer_configs.calibration_config.weight_compress_only",
                    mentions: ["layer conv1", "override_layer_types.calibration_config", "cannot use NUQ"])
        assertError("common_config { nuq_quantize { num_steps: 8 } }", keyPath: "common_config.nuq_quantize.num_steps",
                    mentions: ["line 1, column 32", "must be 16 or 32, got 8"])
        assertError("common_config { nuq_quantize { num_of_iteration: 6 } }", keyPath: "common_config.nuq_quantize.num_of_iteration",
                    mentions: ["must be in 0...5, got 6"])
        // enable_auto_nuq no longer refuses; it never overrides a weight-only layer (AutoNUQTests has the rest).
        let auto = try config("enable_auto_nuq: true override_layer_types { layer_type: \"Gemm\" calibration_config "
                              + "{ weight_compress_only: true } }").resolve(for: lenet)
        XCTAssertEqual(auto.autoNonUniform?.map(\.layer), ["conv1", "conv2"], "weight-only fc layers are not candidates")
        XCTAssertNil(auto.layer(named: "fc1")?.quantizer?.nonUniform)
    }

    // MARK: LeNet-5 end to end

    /// Writes `text` as a proto-text config and runs calibrate, deploy and verify on LeNet-5.
    func calibrateDeployVerify(_ text: String) throws -> (checkpoint: String, deployed: String, deployLog: String) {
        let folder = try makeTemporaryFolder(self)
        let configFile = folder + "/quant.cfg"
        try Data(text.utf8).write(to: URL(fileURLWithPath: configFile))
        let ptq = folder + "/ptq.h5", deployed = folder + "/int8.h5"
        let (status, log) = try qat(["calibrate", "--config", configFile, "--checkpoint", floatCheckpoint, "--output", ptq,
                                     "--batch-num", "2", "--train-limit", "512", "--test-limit", "200"])
        XCTAssertEqual(status, 0, log)
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", ptq, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", ptq, "--deploy", deployed, "--test-limit", "200"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("predictions equal: 100.000% of 200 images"), verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
        return (ptq, deployed, deployLog)
    }

    func testNUQLeNetDeploysLevelsAsInt8Codes() throws {
        let (ptq, deployed, deployLog) = try calibrateDeployVerify("""
            common_config { arq_quantize { channel_wise: true } }
            override_layer_types { layer_type: "Gemm" calibration_config { arq_quantize { channel_wise: false } } }
            override_layer_configs { layer_name: "conv2" calibration_config { nuq_quantize { num_steps: 16 num_of_iteration: 3 } } }
            override_layer_configs { layer_name: "fc1" calibration_config { nuq_quantize { num_steps: 32 num_of_iteration: 1 } } }
            """)
        let lines = deployLog.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.filter { $0.contains("NUQ (nuq_quantize): at most") }.count, 2, deployLog)
        let conv2Line = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("  conv2 ") }, deployLog)
        XCTAssertTrue(lines[conv2Line + 1].contains("at most 16 levels per weight row"), deployLog)
        let file = try DeployFile.read(from: deployed)
        let conv2 = try XCTUnwrap(file.nodes.first { $0.name == "conv2" })
        let perChannel = conv2.weightCodes.count / conv2.outputChannels
        for c in 0..<conv2.outputChannels {
            let distinct = Set(conv2.weightCodes[(c * perChannel)..<((c + 1) * perChannel)])
            XCTAssertLessThanOrEqual(distinct.count, 16, "conv2 channel \(c)")
        }
        let fc1 = try XCTUnwrap(file.nodes.first { $0.name == "fc1" })
        XCTAssertLessThanOrEqual(Set(fc1.weightCodes).count, 32)
        let fc2 = try XCTUnwrap(file.nodes.first { $0.name == "fc2" })
        XCTAssertGreaterThan(Set(fc2.weightCodes).count, 32, "a uniform layer uses more codes")

        // The checkpoint keeps the levels, and the deployed codes are exactly those levels.
        let (model, _) = try Model.load(checkpoint: ptq)
        let quantizer = try XCTUnwrap(model.fakeQuantizers.first { $0.layerName == "fc1" })
        let levels = try XCTUnwrap(quantizer.weight.nonUniform?.levels)
        XCTAssertEqual(levels.count, 1)
        XCTAssertLessThanOrEqual(levels[0].count, 32)
        // Every code is a level (a level no weight is nearest to may stay unused).
        XCTAssertTrue(Set(fc1.weightCodes.map(Int.init)).isSubset(of: levels[0]), "\(levels[0])")
        let checkpoint = try CheckpointFile.read(from: ptq)
        XCTAssertEqual(checkpoint.extra["quant/fc1/nuq_levels"]?.shape, [1, 32])
        XCTAssertEqual(checkpoint.extra["quant/conv2/nuq_levels"]?.shape, [16, 16])
        XCTAssertNil(checkpoint.extra["quant/fc2/nuq_levels"], "uniform layers store no levels")
    }

    func testWeightOnlyLeNetRunsAsFloatLayersAndSaysSo() throws {
        // The manual's weight-only example verbatim (names changed to LeNet-5's): every layer weight-only.
        let manual = try String(contentsOfFile: repositoryPath("Configs/amct/simple-weight-only.cfg"), encoding: .utf8)
        let (_, deployed, deployLog) = try calibrateDeployVerify(manual)
        let file = try DeployFile.read(from: deployed)
        XCTAssertFalse(file.nodes.contains(where: \.isInteger))
        for name in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
            let lines = deployLog.split(separator: "\n").map(String.init)
            let index = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("  \(name) ") }, deployLog)
            XCTAssertTrue(lines[index + 1].contains("weight-only (weight_compress_only): float input and the dequantized INT8 weights"),
                          deployLog)
        }
        // A weight-only conv between integer layers: the layers around it quantize their own inputs.
        let (_, mixed, mixedLog) = try calibrateDeployVerify("""
            common_config { arq_quantize { channel_wise: true } }
            override_layer_types { layer_type: "Gemm" calibration_config { arq_quantize { channel_wise: false } } }
            override_layer_configs { layer_name: "conv2" calibration_config { weight_compress_only: true
                arq_quantize { asymmetric: true } } }
            """)
        let nodes = try DeployFile.read(from: mixed).nodes
        XCTAssertEqual(nodes.filter(\.isInteger).map(\.name), ["conv1", "fc1", "fc2", "fc3"], mixedLog)
        let conv2 = try XCTUnwrap(nodes.first { $0.name == "conv2" })
        XCTAssertNil(conv2.inputFakeQuantization)
        XCTAssertNotNil(conv2.floatTensors["weight"])
        // QDQ export writes it as a float conv with that weight.
        let (exportStatus, exported) = try qat(["export", "--checkpoint", (mixed as NSString).deletingLastPathComponent + "/ptq.h5",
                                                "--output", (mixed as NSString).deletingLastPathComponent + "/model.onnx"])
        XCTAssertEqual(exportStatus, 0, exported)
    }

    /// `qat train` with NUQ (qat's JSON key `nuq_quantize` in retrain_weight_config): the levels
    /// chosen at calibration stay fixed while the weights train, and the result deploys and verifies.
    func testQATKeepsTheLevelsFixed() throws {
        let folder = try makeTemporaryFolder(self)
        var text = try String(contentsOfFile: repositoryPath("Configs/retrain.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "\"Checkpoints/lenet5-qat\"", with: "\"\(folder)/run\"")
        let weightConfig = "\"retrain_weight_config\": {\n      \"algo\": \"arq_retrain\","
        XCTAssertEqual(text.components(separatedBy: weightConfig).count, 6, "five layer entries")
        text = text.replacingOccurrences(of: weightConfig, with: weightConfig + " \"nuq_quantize\": {\"num_steps\": 16, \"num_of_iteration\": 2},")
        let configFile = folder + "/nuq.json"
        try Data(text.utf8).write(to: URL(fileURLWithPath: configFile))
        let final = folder + "/final.h5"
        let (status, log) = try qat(["train", "--config", configFile, "--epochs", "2", "--train-limit", "256",
                                     "--test-limit", "100", "--output", final])
        XCTAssertEqual(status, 0, log)
        let first = try CheckpointFile.read(from: folder + "/run/epoch-1.h5"), last = try CheckpointFile.read(from: final)
        for layer in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
            let levels = try XCTUnwrap(first.extra["quant/\(layer)/nuq_levels"], layer)
            XCTAssertEqual(levels.storage, last.extra["quant/\(layer)/nuq_levels"]?.storage, layer)
            XCTAssertEqual(levels.shape.last, 16)
        }
        XCTAssertNotEqual(first.parameters.first { $0.name == "fc1.weight" }?.tensor.storage,
                          last.parameters.first { $0.name == "fc1.weight" }?.tensor.storage, "the weights trained")
        let deployed = folder + "/int8.h5"
        let (deployStatus, deployLog) = try qat(["deploy", "--checkpoint", final, "--output", deployed])
        XCTAssertEqual(deployStatus, 0, deployLog)
        let (verifyStatus, verified) = try qat(["verify", "--checkpoint", final, "--deploy", deployed, "--test-limit", "100"])
        XCTAssertEqual(verifyStatus, 0, verified)
        XCTAssertTrue(verified.contains("PASS"), verified)
    }
}
