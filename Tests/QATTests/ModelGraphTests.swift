import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// The one graph: sources, consumers and shapes computed once from a spec, and the INT8
/// engine reading its shapes from the graph of a deploy file's model spec.
final class ModelGraphTests: XCTestCase {
    let resnet = try! ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))

    func testResNetTinyWiringAndShapes() throws {
        let graph = try ModelGraph(resnet)
        func index(_ name: String) -> Int { graph.index(of: name)! }
        XCTAssertEqual(graph.sources[index("stem")], [-1])
        XCTAssertEqual(graph.sources[index("block1_add")], [index("block1_bn2"), index("stem_relu")])
        XCTAssertEqual(graph.consumers(of: index("stem_relu")), [index("block1_conv1"), index("block1_add")])
        XCTAssertEqual(graph.consumers(of: -1), [index("stem")])
        XCTAssertEqual(graph.consumers(of: index("fc")), [], "the model output has no reader in the graph")
        XCTAssertNil(graph.index(of: "input"))
        XCTAssertEqual(graph.inputShapes[index("block1_add")], [[8, 28, 28], [8, 28, 28]])
        XCTAssertEqual(graph.outputShapes[index("conv2")], [16, 7, 7])    // (14 + 2 − 3)/2 + 1 after pool1
        XCTAssertEqual(graph.outputShapes[index("pool2")], [16, 1, 1])
        XCTAssertEqual(graph.shape(of: -1), [1, 28, 28])
        XCTAssertEqual(graph.numberOfClasses, 10)
        XCTAssertEqual(try Model(spec: resnet).graph.sources, graph.sources)
    }

    func testHandBuiltSpecErrorsNameTheLayer() {
        let conv = LayerKind.conv2d(.init(inputChannels: 1, outputChannels: 2, kernelSize: 3))
        func spec(_ layers: [LayerSpec]) -> ModelSpec { ModelSpec(name: "m", inputShape: [1, 4, 4], layers: layers) }
        assertInputError(try ModelGraph(spec([LayerSpec(name: "c", kind: conv, inputs: ["nope"])])),
                         mentions: ["layers[0] (c)", "unknown input \"nope\""])
        assertInputError(try ModelGraph(spec([LayerSpec(name: "c", kind: conv), LayerSpec(name: "sum", kind: .add)])),
                         mentions: ["layers[1] (sum)", "add reads 2 input(s), got 1"])
        assertInputError(try ModelGraph(spec([LayerSpec(name: "c", kind: conv), LayerSpec(name: "c", kind: .relu)])),
                         mentions: ["layers[1] (c)", "duplicate layer name"])
        assertInputError(try ModelGraph(spec([LayerSpec(name: "c", kind: .conv2d(.init(inputChannels: 3, outputChannels: 2, kernelSize: 3)))])),
                         mentions: ["layers[0] (c)", "in_channels is 3 but the input has 1 channels"])
        // A graph need not be a classifier (single-op ONNX graphs); what needs one asks for it.
        XCTAssertNoThrow(try ModelGraph(spec([LayerSpec(name: "c", kind: conv)])))
        assertInputError(try ModelGraph(spec([LayerSpec(name: "c", kind: conv)])).requireClassifier(file: "m.json"),
                         mentions: ["m.json", "the last layer must output class scores"])
        // A plan needs only the wiring, so it is made for specs whose shapes were never checked.
        XCTAssertNoThrow(try ModelGraph.Wiring(spec([LayerSpec(name: "c", kind: conv)])))
    }

    /// The engine takes every node's shapes from the model spec's graph, so a node that does
    /// not match its layer is an error naming the node, not a crash in a kernel.
    func testEngineChecksNodesAgainstTheModelSpec() throws {
        let model = try DebugFixtures.fakeQuantLeNet()   // calibrated
        let deployed = try Deployer.deploy(model: model, source: "m.h5")
        XCTAssertNoThrow(try Int8Model(deployed, file: "d.h5"))

        var wrongKernel = deployed
        let conv2 = try XCTUnwrap(wrongKernel.nodes.firstIndex { $0.name == "conv2" })
        wrongKernel.nodes[conv2].kernel = Size2D(3)
        XCTAssertThrowsError(try Int8Model(wrongKernel, file: "d.h5")) { error in
            XCTAssertTrue("\(error)".contains("d.h5") && "\(error)".contains("(conv2)") && "\(error)".contains("does not match"), "\(error)")
        }
        var renamed = deployed
        renamed.nodes[conv2].name = "conv9"
        XCTAssertThrowsError(try Int8Model(renamed, file: "d.h5")) { XCTAssertTrue("\($0)".contains("(conv9)"), "\($0)") }
        var otherSpec = deployed
        otherSpec.modelSpecJSON = otherSpec.modelSpecJSON.replacingOccurrences(of: #""in_features":400"#, with: #""in_features":401"#)
        XCTAssertThrowsError(try Int8Model(otherSpec, file: "d.h5")) { error in
            XCTAssertTrue("\(error)".contains("d.h5 (model_spec)") && "\(error)".contains("fc1"), "\(error)")
        }
    }
}
