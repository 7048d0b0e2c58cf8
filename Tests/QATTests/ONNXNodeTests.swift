import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATONNX

/// ONNX's own backend node tests (Debian's libonnx-testdata): every test whose ops are all in the
/// importer's set runs through import + our float forward and is compared with ONNX's expected
/// output. The rule (docs/ONNX.md): input_0 is the image and its first axis the batch; the
/// test's other inputs are fed as constants (initializers); the one output is compared with
/// |ours − expected| ≤ 1e-5 · (1 + |expected|). A test the importer refuses is out of scope, with
/// the importer's message as the reason; the tests that pass must be exactly `expectedPassing`.
final class ONNXNodeTests: XCTestCase {
    static let folder = "/usr/share/libonnx-testdata/data/node"

    /// The ops of the importer's layer set (issue 10); tests using any other op are not ours.
    static let ourOps: Set<String> = [
        "Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Mul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Flatten", "Reshape", "Dropout", "Identity", "Constant",
    ]

    /// The node tests that pass today (docs/ONNX.md lists them with the out-of-scope reasons).
    static let expectedPassing: Set<String> = [
        "test_add_bcast", "test_averagepool_2d_ceil", "test_averagepool_2d_default",
        "test_averagepool_2d_precomputed_pads", "test_averagepool_2d_precomputed_pads_count_include_pad",
        "test_averagepool_2d_precomputed_same_upper", "test_averagepool_2d_precomputed_strides",
        "test_averagepool_2d_same_lower", "test_averagepool_2d_same_upper", "test_averagepool_2d_strides",
        "test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_batchnorm_epsilon",
        "test_batchnorm_example", "test_clip", "test_clip_default_max", "test_clip_default_min",
        "test_conv_with_autopad_same", "test_conv_with_strides_and_asymmetric_padding",
        "test_conv_with_strides_no_padding", "test_conv_with_strides_padding", "test_flatten_axis1",
        "test_flatten_default_axis", "test_flatten_negative_axis3", "test_gemm_alpha", "test_gemm_beta", "test_gemm_default_no_bias",
        "test_gemm_default_scalar_bias", "test_gemm_default_single_elem_vector_bias", "test_gemm_default_vector_bias",
        "test_gemm_default_zero_bias", "test_gemm_transposeB", "test_globalaveragepool",
        "test_globalaveragepool_precomputed", "test_hardsigmoid", "test_hardsigmoid_default", "test_hardswish",
        "test_hardswish_expanded", "test_leakyrelu", "test_leakyrelu_default", "test_matmul_2d",
        "test_maxpool_2d_ceil", "test_maxpool_2d_default", "test_maxpool_2d_precomputed_pads",
        "test_maxpool_2d_precomputed_same_upper", "test_maxpool_2d_precomputed_strides", "test_maxpool_2d_same_lower",
        "test_maxpool_2d_same_upper", "test_maxpool_2d_strides", "test_mul_bcast", "test_relu",
        "test_reshape_reduced_dims", "test_sigmoid",
    ]

    enum Outcome {
        case passed
        case failed(String)
        case outOfScope(String)
    }

    /// Runs one node test folder.
    static func run(_ name: String) -> Outcome {
        let directory = folder + "/" + name
        do {
            let onnx = try ONNXModel.read(file: directory + "/model.onnx")
            let initializerNames = Set(onnx.initializers.map(\.name))
            let graphInputs = onnx.inputs.filter { !initializerNames.contains($0.name) }
            guard onnx.outputs.count == 1 else { return .outOfScope("\(onnx.outputs.count) outputs") }
            let data = directory + "/test_data_set_0"
            var extra: [String: ONNXTensor] = [:]
            for (k, input) in graphInputs.enumerated().dropFirst() {
                var tensor = try ONNXTensor.read(file: data + "/input_\(k).pb")
                tensor.name = input.name
                extra[input.name] = tensor
            }
            let imported: ImportedModel
            do {
                imported = try ImportedModel.translate(onnx, file: name, options: ImportOptions(extraInputs: extra))
            } catch let error as InputError {
                return .outOfScope(error.description)
            }
            let input = try ONNXTensor.read(file: data + "/input_0.pb")
            let expected = try ONNXTensor.read(file: data + "/output_0.pb")
            guard expected.dataType == ONNXTensor.floatType else { return .outOfScope("output element type \(expected.dataType): float32 only") }
            let output = imported.model.forward(Tensor(shape: input.dims, storage: input.floats), training: false, tape: nil).value
            guard output.shape == expected.dims else { return .failed("output shape \(output.shape), expected \(expected.dims)") }
            let (ok, worst) = ONNXImportTests.close(output.storage, expected.floats)
            return ok ? .passed : .failed("worst relative difference \(worst)")
        } catch {
            return .failed("\(error)")
        }
    }

    /// Tests whose nodes all use ops of our set.
    static func ourTests() throws -> [String] {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        return try names.filter { name in
            let model = folder + "/" + name + "/model.onnx"
            guard FileManager.default.fileExists(atPath: model) else { return false }
            // Without shape inference: a test outside our op set may use ops libonnx 1.12 cannot infer.
            let onnx = try ONNXModel.read(file: model, inferShapes: false)
            return onnx.nodes.allSatisfy { ourOps.contains($0.opType) && ($0.domain.isEmpty || $0.domain == "ai.onnx") }
        }
    }

    func testBackendNodeTestsOfOurOps() throws {
        let names = try Self.ourTests()
        XCTAssertGreaterThan(names.count, 100, "libonnx-testdata should have over 100 node tests of our ops")
        var passed: [String] = [], outOfScope: [(String, String)] = []
        for name in names {
            switch Self.run(name) {
            case .passed: passed.append(name)
            case .failed(let reason): XCTFail("\(name): \(reason)")
            case .outOfScope(let reason): outOfScope.append((name, reason))
            }
        }
        print("ONNX node tests of our ops: \(names.count); passed \(passed.count), out of scope \(outOfScope.count)")
        for name in passed { print("  pass  \(name)") }
        for (name, reason) in outOfScope { print("  scope \(name): \(reason)") }
        XCTAssertEqual(Set(passed), Self.expectedPassing, "the passing node tests changed: update expectedPassing and docs/ONNX.md")
    }
}
