import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
import QAT

/// The INT8 engine's fused node runs (conv → ReLU → float max pool, add or HardSwish → quantize,
/// conv → residual add → quantize,
/// conv → int8 max pool) give the bytes of the node-by-node runs: on the networks of the bench
/// (resnet-tiny, resnet18-tiny with its float stem pool, mobilenetv2-tiny with HardSwish and
/// residual adds on floats), deployed from the default QAT config. An observed forward runs
/// node by node; plain ones fuse, at 1 and 2 threads (which split the batch), with and without the
/// flat depthwise kernel for small planes (Int8DepthwiseFlatTests), the stem pool on accumulators
/// (Int8PoolAccumulatorTests), the implicit GEMM (Int8ImplicitGEMMTests) and conv → HardSwish
/// (Int8HardSwishEpilogueTests).
final class Int8FusionTests: XCTestCase {
    func deployedEngine(_ file: String) throws -> Int8Model {
        let source = try ModelSource.load(file: repositoryPath(file))
        let network = try Model(spec: source.spec, seed: 1)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: source.spec).utf8), file: "default"))
        network.applyQuantization(try config.resolve(for: source.spec))
        if let weights = source.weights {
            try network.load(weights, file: file, mayBeMissing: { $0.contains("_quant.") })
        }
        let train = try fashionMNIST(.train, count: 64)
        let images = train.batch(Array(0..<64)[...]).images
        _ = try network.calibrate(on: [images])
        _ = network.forward(images, training: false, tape: nil)   // sets the scales
        return try Int8Model(Deployer.deploy(model: network, source: file))
    }

    func testFusedRunsEqualNodeByNodeRuns() throws {
        let saved = Parallel.threads
        defer {
            Parallel.threads = saved
            Int8Kernels.allowFlatDepthwise(true)
            Int8Kernels.allowPackedPlaneCopy(true)
            Int8Kernels.poolAccumulators(true)
            Int8Kernels.allowImplicitGEMM(true)   // the default
            Int8Kernels.vectoriseHardSwish(true)
            Int8Kernels.allowResidualReLUFusion(true)
            Int8Kernels.allowImageColumns(true)
            Int8Kernels.allowPlacedStores(true)
        }
        let test = try fashionMNIST(.test, count: 37)
        let x = test.batch(Array(0..<37)[...]).images
        for file in ["Configs/models/resnet-tiny.json", "examples/onnx-models/resnet18-tiny.onnx",
                     "examples/onnx-models/mobilenetv2-tiny.onnx"] {
            let engine = try deployedEngine(file)
            XCTAssertGreaterThan(engine.fusedRuns, 0, "\(file): nothing fused")
            Parallel.threads = 1
            let nodeByNode = engine.forward(x, observe: { _, _ in }).storage.map(\.bitPattern)
            let fused = engine.forward(x).storage.map(\.bitPattern)
            XCTAssertEqual(fused, nodeByNode, file)
            Parallel.threads = 2
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 2 threads")
            // mobilenetv2-tiny's 7×7 and 14×14 depthwise planes: the flat VBMI kernel (where this
            // CPU has it) gives the logits of the row kernel; resnet18-tiny's stem pool on floats
            // those of the pool on accumulators.
            Int8Kernels.allowFlatDepthwise(false)
            Int8Kernels.allowPackedPlaneCopy(false)
            Int8Kernels.poolAccumulators(false)
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 2 threads, no flat depthwise")
            Parallel.threads = 1
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 1 thread, no flat depthwise")
            Int8Kernels.allowFlatDepthwise(true)
            Int8Kernels.allowPackedPlaneCopy(true)
            Int8Kernels.poolAccumulators(true)
            // The stride-1 convs on 28×28 and 14×14 planes (resnet-tiny's stem and block, resnet18-tiny's
            // stem and layer1) through the column-matrix GEMM instead of the implicit GEMM
            // (Int8ImplicitGEMMTests; on by default): the same logits.
            Int8Kernels.allowImplicitGEMM(false)
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 1 thread, no implicit GEMM")
            Parallel.threads = 2
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 2 threads, no implicit GEMM")
            Int8Kernels.allowImplicitGEMM(true)
            // mobilenetv2-tiny's convs → HardSwish (→ quantize) in one kernel (Int8HardSwishEpilogueTests)
            // or as separate passes, with the HardSwish vectorised or the loop: the same logits.
            engine.allowsConvHardSwishFusion = false
            Int8Kernels.vectoriseHardSwish(false)
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 2 threads, no conv → HardSwish fusion")
            Parallel.threads = 1
            XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode, "\(file), 1 thread, no conv → HardSwish fusion")
            engine.allowsConvHardSwishFusion = true
            Int8Kernels.vectoriseHardSwish(true)
            // resnet18-tiny's blocks: conv → add → ReLU in one kernel, and its 2×2 convs with the
            // images as columns and 4×4 convs with placed stores (Int8ImageColumnsTests); each
            // switched off, and all, at 1 and 2 threads.
            for (fusion, columns) in [(false, true), (true, false), (false, false)] {
                Int8Kernels.allowResidualReLUFusion(fusion)
                Int8Kernels.allowImageColumns(columns)
                Int8Kernels.allowPlacedStores(columns)   // layer3's 4×4 planes with the staging copy
                for threads in [1, 2] {
                    Parallel.threads = threads
                    XCTAssertEqual(engine.forward(x).storage.map(\.bitPattern), nodeByNode,
                                   "\(file), \(threads) thread(s), conv-add-ReLU fusion \(fusion), image columns \(columns)")
                }
                Int8Kernels.allowResidualReLUFusion(true)
                Int8Kernels.allowImageColumns(true)
                Int8Kernels.allowPlacedStores(true)
            }
        }
    }

    /// resnet18-tiny fuses its residual adds with the ReLU after them (five blocks: the add's sum
    /// feeds both the next conv and the next add), so no add or ReLU node runs alone.
    func testResNet18TinyFusesEveryResidualAdd() throws {
        let engine = try deployedEngine("examples/onnx-models/resnet18-tiny.onnx")
        let timing = StepTiming()
        engine.timing = timing
        let test = try fashionMNIST(.test, count: 16)
        _ = engine.forward(test.batch(Array(0..<16)[...]).images)
        let alone = timing.names.filter { $0.hasSuffix("_Add") || $0.hasSuffix("_Relu") }
        XCTAssertEqual(alone, [], "add or ReLU nodes run alone")
        XCTAssertTrue(timing.names.contains { $0.hasSuffix("_conv1_Conv") })
    }
}
