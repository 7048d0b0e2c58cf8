import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATONNX

/// ONNX import: the committed fixtures (written by scripts/make-onnx-fixtures.py with the onnx
/// package, expected outputs from onnx's ReferenceEvaluator) and damaged files.
final class ONNXImportTests: XCTestCase {
    let fixtures = repositoryPath("Tests/Fixtures/onnx")

    /// The closeness rule of every ONNX comparison here (docs/ONNX.md): |ours − expected| ≤ 1e-5 · (1 + |expected|).
    static func close(_ ours: [Float], _ expected: [Float]) -> (ok: Bool, worst: Float) {
        guard ours.count == expected.count else { return (false, .infinity) }
        var ok = true, worst: Float = 0
        for (a, e) in zip(ours, expected) {
            let excess = abs(a - e) / (1 + abs(e))
            if !(excess <= 1e-5) { ok = false }
            worst = max(worst, excess.isNaN ? .infinity : excess)
        }
        return (ok, worst)
    }

    func testLeNetLogitsEqualTheReferenceEvaluators() throws {
        let imported = try ImportedModel.load(onnxFile: fixtures + "/lenet.onnx")
        let input = try ONNXTensor.read(file: fixtures + "/lenet-input.pb")
        let expected = try ONNXTensor.read(file: fixtures + "/lenet-output.pb")
        XCTAssertEqual(input.dims, [3, 1, 28, 28])
        let logits = imported.model.forward(Tensor(shape: input.dims, storage: input.floats), training: false, tape: nil).value
        XCTAssertEqual(logits.shape, expected.dims)
        let (ok, worst) = Self.close(logits.storage, expected.floats)
        XCTAssertTrue(ok, "worst relative difference \(worst)")
        XCTAssertEqual(imported.opset, 15)
        // Dropout, Identity, three Constants and fc2's bias Add are gone.
        XCTAssertEqual(imported.removedNodes, 6)
    }

    /// Depthwise, grouped and dilated conv, asymmetric pads, squeeze-and-excitation, HardSwish,
    /// HardSigmoid, LeakyRelu, Sigmoid, a general Clip, Concat, constants in Add and Mul,
    /// ceil-mode and padded pooling, against the reference evaluator.
    func testMobileStyleLogitsEqualTheReferenceEvaluators() throws {
        let imported = try ImportedModel.load(onnxFile: fixtures + "/mobile.onnx")
        let input = try ONNXTensor.read(file: fixtures + "/mobile-input.pb")
        let expected = try ONNXTensor.read(file: fixtures + "/mobile-output.pb")
        let logits = imported.model.forward(Tensor(shape: input.dims, storage: input.floats), training: false, tape: nil).value
        XCTAssertEqual(logits.shape, expected.dims)
        let (ok, worst) = Self.close(logits.storage, expected.floats)
        XCTAssertTrue(ok, "worst relative difference \(worst)")
        let kinds = Dictionary(imported.spec.layers.map { ($0.name, $0.kind) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(kinds["block1_dw"], .conv2d(ConvolutionAttributes(
            inputChannels: 8, outputChannels: 8, kernel: Size2D(3), padding: Padding2D(top: 0, left: 1, bottom: 2, right: 1), groups: 8, hasBias: false)))
        XCTAssertEqual(kinds["block1_clip"], .clip(ClipAttributes(min: -0.5, max: 1.5)))
        XCTAssertEqual(kinds["channel_scale"], .constant(ConstantAttributes(shape: [12, 1, 1])))
        XCTAssertEqual(imported.spec.layers.first { $0.name == "block1_channel_shift" }?.inputs, ["channel_shift", "block1_channel_scale"])
    }

    func testLayerNamesComeFromNodeNames() throws {
        let imported = try ImportedModel.load(onnxFile: fixtures + "/lenet.onnx")
        XCTAssertEqual(imported.spec.layers.map(\.name), [
            "features_conv1_Conv", "features_bn1_BatchNormalization", "features_relu1_Relu", "features_pool1_MaxPool",
            "features_conv2_Conv", "features_relu6_Clip", "features_conv3_Conv", "features_residual_Add",
            "features_pool2_AveragePool", "Reshape_13", "classifier_fc1_Gemm", "classifier_relu_Relu", "classifier_fc2_MatMul",
        ])
        // Clip(0, 6) is relu6; SAME_UPPER with a 3×3 kernel is padding 1; the Reshape is a flatten.
        XCTAssertEqual(imported.spec.layers[5].kind, .relu6)
        XCTAssertEqual(imported.spec.layers[4].kind, .conv2d(ConvolutionAttributes(inputChannels: 4, outputChannels: 6, kernelSize: 3,
                                                                                  padding: 1, hasBias: false)))
        XCTAssertEqual(imported.spec.layers[9].kind, .flatten)
        XCTAssertEqual(imported.spec.name, "lenet")
    }

    /// Opset 10's Clip takes its bounds from attributes; names: a node without one is
    /// `<OpType>_<index>`, a repeated one gets `_2`.
    func testOldOpsetClipAndNameRules() throws {
        let imported = try ImportedModel.load(onnxFile: fixtures + "/old-opset.onnx")
        XCTAssertEqual(imported.spec.layers.map(\.name), ["Conv_0", "act", "act_2"])
        XCTAssertEqual(imported.spec.layers.map(\.kind), [imported.spec.layers[0].kind, .relu6, .clip(ClipAttributes(min: -1, max: 2.5))])
        let input = try ONNXTensor.read(file: fixtures + "/old-opset-input.pb")
        let expected = try ONNXTensor.read(file: fixtures + "/old-opset-output.pb")
        let output = imported.model.forward(Tensor(shape: input.dims, storage: input.floats), training: false, tape: nil).value
        XCTAssertEqual(output.shape, expected.dims)
        XCTAssertTrue(Self.close(output.storage, expected.floats).ok)
    }

    func testSanitisedNames() {
        XCTAssertEqual(sanitisedName("/features/features.0/Conv", fallback: "x"), "features_features_0_Conv")
        XCTAssertEqual(sanitisedName("conv__1", fallback: "x"), "conv_1")
        XCTAssertEqual(sanitisedName("__a-b__", fallback: "x"), "a_b")
        XCTAssertEqual(sanitisedName("ü", fallback: "Relu_3"), "Relu_3")
        XCTAssertEqual(sanitisedName("", fallback: "Relu_3"), "Relu_3")
    }

    /// The checkpoint written by the import loads through the ordinary path and gives the same logits.
    func testWrittenCheckpointLoadsAndRunsTheSame() throws {
        let folder = try makeTemporaryFolder(self)
        let imported = try ImportedModel.load(onnxFile: fixtures + "/lenet.onnx")
        try imported.checkpoint.write(to: folder + "/lenet-float.h5")
        let (model, _) = try Model.load(checkpoint: folder + "/lenet-float.h5")
        let input = try ONNXTensor.read(file: fixtures + "/lenet-input.pb")
        let x = Tensor(shape: input.dims, storage: input.floats)
        XCTAssertEqual(model.forward(x, training: false, tape: nil).value, imported.model.forward(x, training: false, tape: nil).value)
        XCTAssertEqual(model.buffers.map(\.name), ["features_bn1_BatchNormalization.running_mean", "features_bn1_BatchNormalization.running_var"])
    }

    func testBadFilesNameTheNodeOnOneLine() throws {
        let cases: [(file: String, fragments: [String])] = [
            ("bad-unsupported-op.onnx", ["node \"head/softmax\" (Softmax)", "op Softmax is not supported", "supported ops: Conv"]),
            ("bad-missing-initializer.onnx", ["conv_missing", "w_missing", "missing initializer"]),
            ("bad-cycle.onnx", ["add_a", "input 'b'", "cycle"]),
            ("bad-shape-mismatch.onnx", ["residual_add", "Add", "Incompatible dimensions"]),
            ("bad-conv3d.onnx", ["node \"conv3d\" (Conv)", "3-D convolution", "2-D only"]),
            ("bad-unsupported-attribute.onnx", ["node \"pool_dilated\" (MaxPool)", "attribute dilations", "[2, 2]"]),
            // lenet.onnx with the pool's strides varints set to 0: libonnx's shape inference would
            // divide by them (SIGFPE, found by make fuzz), so the shim refuses them first.
            ("bad-zero-stride.onnx", ["node \"/features/pool1/MaxPool\" (MaxPool)", "attribute strides must be 1 or more"]),
        ]
        for (file, fragments) in cases {
            assertInputError(try ImportedModel.load(onnxFile: fixtures + "/" + file), mentions: [file] + fragments)
            do {
                _ = try ImportedModel.load(onnxFile: fixtures + "/" + file)
            } catch {
                XCTAssertFalse("\(error)".contains("\n"), "\(file): \(error)")
            }
        }
    }

    /// Every prefix of a valid file is an error (the protobuf parser, the checker or the
    /// translator), never a crash and never a model.
    func testTruncatedFilesAreErrors() throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: fixtures + "/lenet.onnx"))
        let folder = try makeTemporaryFolder(self)
        for length in stride(from: 0, to: bytes.count, by: 41) {
            let path = folder + "/cut-\(length).onnx"
            try bytes.prefix(length).write(to: URL(fileURLWithPath: path))
            assertInputError(try ImportedModel.load(onnxFile: path), mentions: [path])
        }
        var damaged = bytes
        for i in stride(from: 7, to: damaged.count, by: 13) { damaged[i] ^= 0x5a }
        try damaged.write(to: URL(fileURLWithPath: folder + "/damaged.onnx"))
        assertInputError(try ImportedModel.load(onnxFile: folder + "/damaged.onnx"), mentions: [folder + "/damaged.onnx"])
    }

    /// Seeded random damage to a valid file (bytes overwritten, ranges dropped): the import either
    /// fails with an InputError naming the file or yields a model; it never crashes or allocates
    /// what a damaged size asks for.
    func testRandomlyDamagedFilesNeverCrash() throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixtures + "/mobile.onnx")))
        let folder = try makeTemporaryFolder(self)
        var generator = SeededGenerator(seed: 10)
        var refused = 0
        for trial in 0..<150 {
            var damaged = bytes
            for _ in 0..<(1 + Int(generator.next() % 4)) {
                let position = Int(generator.next() % UInt64(damaged.count))
                if generator.next() % 3 == 0 {
                    damaged.removeSubrange(position..<min(damaged.count, position + 1 + Int(generator.next() % 16)))
                } else {
                    damaged[position] = UInt8(truncatingIfNeeded: generator.next())
                }
            }
            let path = folder + "/damaged-\(trial).onnx"
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            do {
                _ = try ImportedModel.load(onnxFile: path)
            } catch let error as InputError {
                XCTAssertTrue(error.description.hasPrefix(path) && !error.description.contains("\n"), error.description)
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 75, "most random damage is detected")
    }

    /// float16 (subnormals, ±inf, 65504), double and int8 tensors, in raw_data and in the typed
    /// fields, read as float32 exactly as numpy converts them; int8 also kept exact as integers.
    func testTensorConversionsEqualNumpys() throws {
        for name in ["half", "double", "int8"] {
            let expected = try ONNXTensor.read(file: fixtures + "/tensor-\(name)-as-float32.pb")
            for form in ["raw", "typed"] {
                let tensor = try ONNXTensor.read(file: fixtures + "/tensor-\(name)-\(form).pb")
                XCTAssertEqual(tensor.dims, expected.dims, "\(name) \(form)")
                XCTAssertEqual(tensor.floats.map(\.bitPattern), expected.floats.map(\.bitPattern), "\(name) \(form)")
            }
        }
        XCTAssertEqual(try ONNXTensor.read(file: fixtures + "/tensor-int8-raw.pb").integers, [-128, -1, 0, 7, 127])
        XCTAssertNil(try ONNXTensor.read(file: fixtures + "/tensor-half-raw.pb").integers)
    }

    func testTensorFilesOfTheBackendTestsRead() throws {
        // A float16-free, float32 TensorProto from Debian's libonnx-testdata.
        let tensor = try ONNXTensor.read(file: "/usr/share/libonnx-testdata/data/node/test_relu/test_data_set_0/input_0.pb")
        XCTAssertEqual(tensor.dims, [3, 4, 5])
        XCTAssertEqual(tensor.floats.count, 60)
        assertInputError(try ONNXTensor.read(file: fixtures + "/does-not-exist.pb"), mentions: ["does-not-exist.pb"])
    }
}
