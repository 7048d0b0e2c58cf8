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

/// The layer kinds of the ResNet/MobileNet set through the stages: spec keys, shapes, roles,
/// gradients through the layer objects, constants in checkpoints, and their deploy nodes. The
/// float ops have their own tests (Op*Tests); the MobileNet-style model is in
/// MobileNetStyleDeployTests.
final class LayerKindsTests: XCTestCase {
    func parse(_ json: String, file: String = "spec.json") throws -> ModelSpec {
        try ModelSpec.parse(JSONObject.parse(Data(json.utf8), file: file))
    }

    // MARK: Spec keys

    /// The checkpoint in the repository was written before the new keys existed: its spec
    /// writes back byte for byte, and the bundled specs gain no new keys.
    func testOldSpecsWriteBackTheSameBytes() throws {
        let checkpoint = try CheckpointFile.read(from: repositoryPath("Checkpoints/lenet5-float.h5"))
        XCTAssertEqual(try parse(checkpoint.modelSpecJSON).jsonString(), checkpoint.modelSpecJSON)
        let resnet = try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json")).jsonString()
        for key in ["dilation", "groups", "ceil_mode", "count_include_pad", "\"padding\":["] {
            XCTAssertFalse(resnet.contains(key), "\(key) in \(resnet)")
        }
        // The objects as the writer before the new keys wrote them (sorted keys, ints, stride and padding always).
        XCTAssertTrue(resnet.contains(#"{"bias":false,"in_channels":1,"kernel_size":3,"name":"stem","out_channels":8,"padding":1,"stride":1,"type":"conv2d"}"#), resnet)
        XCTAssertTrue(resnet.contains(#"{"kernel_size":2,"name":"pool1","stride":2,"type":"maxpool2d"}"#), resnet)
        XCTAssertEqual(try parse(resnet), try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json")))
    }

    static let newKindsJSON = """
        {"name": "kinds", "input": [4, 9, 10], "layers": [
          {"name": "rect", "type": "conv2d", "in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "stride": [2, 3],
           "padding": [1, 0, 2, 1], "dilation": [2, 1], "groups": 2},
          {"name": "sym", "type": "conv2d", "in_channels": 6, "out_channels": 6, "kernel_size": 3, "padding": [1, 2], "groups": 6},
          {"name": "clip", "type": "clip", "min": -1, "max": 2.5},
          {"name": "floor", "type": "clip", "min": 0},
          {"name": "leaky", "type": "leaky_relu", "negative_slope": 0.2},
          {"name": "sig", "type": "sigmoid"},
          {"name": "hsig", "type": "hard_sigmoid"},
          {"name": "hswish", "type": "hard_swish"},
          {"name": "maxp", "type": "maxpool2d", "kernel_size": [2, 3], "stride": 1, "padding": 1, "ceil_mode": true},
          {"name": "avgp", "type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": false},
          {"name": "scale", "type": "constant", "shape": [6, 1, 1]},
          {"name": "scaled", "type": "mul", "inputs": ["avgp", "scale"]},
          {"name": "shift", "type": "constant", "shape": [1]},
          {"name": "shifted", "type": "add", "inputs": ["shift", "scaled"]},
          {"name": "gap", "type": "global_avgpool2d", "inputs": ["hswish"]},
          {"name": "gated", "type": "mul", "inputs": ["hswish", "gap"]},
          {"name": "join", "type": "concat", "inputs": ["gated", "hswish", "gated"]},
          {"name": "flatten", "type": "flatten", "inputs": ["shifted"]},
          {"name": "fc", "type": "linear", "in_features": 54, "out_features": 3}]}
        """

    /// The spec file `qat import` writes has one layer per line and reads back as the same spec.
    func testSpecFileTextHasOneLayerPerLineAndRoundTrips() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/resnet-tiny.json"))
        let text = spec.fileText()
        XCTAssertEqual(try parse(text).jsonString(), spec.jsonString())
        let layerLines = text.split(separator: "\n").filter { $0.hasPrefix("    {") }
        XCTAssertEqual(layerLines.count, spec.layers.count)
        XCTAssertTrue(text.hasSuffix("  ]\n}\n"), text)
    }

    func testNewKeysParseAndRoundTrip() throws {
        let spec = try parse(Self.newKindsJSON)
        let rect = ConvolutionAttributes(inputChannels: 4, outputChannels: 6, kernel: Size2D(height: 3, width: 2),
                                         stride: Size2D(height: 2, width: 3), padding: Padding2D(top: 1, left: 0, bottom: 2, right: 1),
                                         dilation: Size2D(height: 2, width: 1), groups: 2)
        XCTAssertEqual(spec.layers[0].kind, .conv2d(rect))
        XCTAssertEqual(rect.weightShape, [6, 2, 3, 2])
        guard case .conv2d(let sym) = spec.layers[1].kind else { return XCTFail() }
        XCTAssertEqual(sym.padding, Padding2D(top: 1, left: 2, bottom: 1, right: 2))
        XCTAssertTrue(sym.isDepthwise)
        XCTAssertEqual(spec.layers[2].kind, .clip(ClipAttributes(min: -1, max: 2.5)))
        XCTAssertEqual(spec.layers[3].kind, .clip(ClipAttributes(min: 0, max: .infinity)))
        XCTAssertEqual(spec.layers[4].kind, .leakyReLU(LeakyReLUAttributes(negativeSlope: 0.2)))
        XCTAssertEqual(spec.layers[6].kind, .hardSigmoid(HardSigmoidAttributes(alpha: 0.2, beta: 0.5)), "ONNX defaults")
        XCTAssertEqual(spec.layers[8].kind, .maxpool2d(PoolingAttributes(kernel: Size2D(height: 2, width: 3), stride: Size2D(1),
                                                                          padding: Padding2D(1), ceilMode: true)))
        XCTAssertEqual(spec.layers[9].kind, .avgpool2d(PoolingAttributes(kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1),
                                                                          countIncludePad: false)))
        XCTAssertEqual(spec.layers[10].kind, .constant(ConstantAttributes(shape: [6, 1, 1])))

        let json = spec.jsonString()
        XCTAssertEqual(try parse(json), spec, json)
        XCTAssertEqual(try parse(json).jsonString(), json, "writing is stable")
        for fragment in [#""dilation":[2,1],"groups":2,"in_channels":4"#, #""kernel_size":[3,2]"#, #""padding":[1,0,2,1]"#,
                         #""stride":[2,3]"#, #""padding":[1,2]"#, #"{"max":2.5,"min":-1,"name":"clip","type":"clip"}"#,
                         #"{"min":0,"name":"floor","type":"clip"}"#, #""ceil_mode":true"#, #""count_include_pad":false"#,
                         #"{"name":"scale","shape":[6,1,1],"type":"constant"}"#, #""inputs":["gated","hswish","gated"]"#] {
            XCTAssertTrue(json.contains(fragment), "\(fragment) not in \(json)")
        }
        for (type, name) in [(LayerType.leakyReLU, "leaky_relu"), (.hardSigmoid, "hard_sigmoid"), (.hardSwish, "hard_swish"),
                             (.globalAvgpool2d, "global_avgpool2d"), (.mul, "mul"), (.concat, "concat"), (.constant, "constant"),
                             (.clip, "clip"), (.sigmoid, "sigmoid")] {
            XCTAssertEqual(type.name, name)
            XCTAssertEqual(LayerType(name: name), type)
        }
    }

    func testBadKeysNameTheFileAndKeyPath() {
        func layers(_ body: String, input: String = "[4, 8, 8]") -> String {
            #"{"input": \#(input), "layers": [\#(body), {"name": "f", "type": "flatten"}]}"#
        }
        let conv = #""name": "c", "type": "conv2d", "in_channels": 4, "out_channels": 6"#
        assertInputError(try parse(layers("{\(conv), \"kernel_size\": [3, 3, 3]}"), file: "k.json"),
                         mentions: ["k.json", "layers[0].kernel_size", "[height, width]"])
        assertInputError(try parse(layers("{\(conv), \"kernel_size\": 3, \"padding\": [1, 1, 1]}")),
                         mentions: ["layers[0].padding", "[top, left, bottom, right]"])
        assertInputError(try parse(layers("{\(conv), \"kernel_size\": 3, \"groups\": 4}")),
                         mentions: ["layers[0].groups", "multiples of groups 4"])
        assertInputError(try parse(layers("{\(conv), \"kernel_size\": 3, \"dilation\": 0}")),
                         mentions: ["layers[0].dilation", "must be in 1...1024"])
        assertInputError(try parse(layers(#"{"name": "c", "type": "clip", "min": 2, "max": 1}"#)),
                         mentions: ["layers[0].max", "must be ≥ min"])
        assertInputError(try parse(layers(#"{"name": "p", "type": "maxpool2d", "kernel_size": 2, "count_include_pad": true}"#)),
                         mentions: ["layers[0].count_include_pad", "unknown key"])
        assertInputError(try parse(layers(#"{"name": "p", "type": "avgpool2d", "kernel_size": 2, "padding": 2}"#)),
                         mentions: ["layers[0].padding", "at most half the window"])
        assertInputError(try parse(layers(#"{"name": "k", "type": "constant", "shape": []}"#)),
                         mentions: ["layers[0].shape", "expected 1 to 8 sizes"])
        assertInputError(try parse(layers(#"{"name": "k", "type": "constant", "shape": [2], "inputs": ["input"]}"#)),
                         mentions: ["layers[0].inputs", "constant reads no inputs"])
        assertInputError(try parse(#"{"input": [4, 8, 8], "layers": [{"name": "j", "type": "concat", "inputs": ["input"]}]}"#),
                         mentions: ["layers[0].inputs", "concat needs 2 or more inputs, got 1"])
    }

    // MARK: Shapes

    func testShapesByHand() throws {
        let graph = try ModelGraph(try parse(Self.newKindsJSON))
        func shape(_ name: String) -> [Int] { graph.outputShapes[graph.index(of: name)!] }
        // H: ⌊(9 + 1 + 2 − 2·2 − 1)/2⌋ + 1 = 4; W: ⌊(10 + 0 + 1 − 1 − 1)/3⌋ + 1 = 4.
        XCTAssertEqual(shape("rect"), [6, 4, 4])
        XCTAssertEqual(shape("sym"), [6, 4, 6])             // (4 + 2 − 3) + 1, (4 + 4 − 3) + 1
        XCTAssertEqual(shape("hswish"), [6, 4, 6])
        // ceil mode: H ⌈(4 + 2 − 1 − 1)/1⌉ + 1 = 5; W ⌈(6 + 2 − 2 − 1)/1⌉ + 1 = 6.
        XCTAssertEqual(shape("maxp"), [6, 5, 6])
        XCTAssertEqual(shape("avgp"), [6, 3, 3])            // ⌊(5 + 2 − 3)/2⌋ + 1, ⌊(6 + 2 − 3)/2⌋ + 1
        XCTAssertEqual(shape("scale"), [6, 1, 1])
        XCTAssertEqual(shape("scaled"), [6, 3, 3])
        XCTAssertEqual(shape("shifted"), [6, 3, 3], "a [1] constant broadcasts over everything")
        XCTAssertEqual(shape("gap"), [6, 1, 1])
        XCTAssertEqual(shape("join"), [18, 4, 6])
        XCTAssertEqual(graph.sources[graph.index(of: "scale")!], [], "a constant reads nothing")
        XCTAssertEqual(slidingWindowOutput(7, 2, 2, 0, 0, 1, ceilMode: true), 4)
        XCTAssertEqual(slidingWindowOutput(7, 2, 2, 0, 0, 1), 3)
        // Ceil mode keeps a last window only if it starts inside the input or the begin padding.
        XCTAssertEqual(slidingWindowOutput(6, 2, 5, 1, 0, 1, ceilMode: true), 2)   // ⌈5/5⌉ + 1 = 2, window 2 starts at 5 < 7: kept
        XCTAssertEqual(slidingWindowOutput(5, 2, 4, 0, 0, 1, ceilMode: true), 2)   // window 2 starts at 4 < 5
        XCTAssertEqual(slidingWindowOutput(4, 3, 2, 1, 1, 1, ceilMode: true), 3)   // ⌈3/2⌉ + 1 = 3, window 3 starts at 4 < 5: kept
        XCTAssertEqual(slidingWindowOutput(4, 2, 3, 0, 1, 1, ceilMode: true), 2)   // ⌈3/3⌉ + 1 = 2, starts at 3 < 4: kept
        XCTAssertEqual(slidingWindowOutput(4, 1, 3, 0, 2, 1, ceilMode: true), 2)   // ⌈5/3⌉ + 1 = 3 but window 3 starts at 6 ≥ 4: dropped
    }

    func testShapeErrorsNameTheLayer() {
        func spec(_ input: [Int], _ layers: [LayerSpec]) -> ModelSpec { ModelSpec(name: "m", inputShape: input, layers: layers) }
        let x = LayerSpec(name: "x", kind: .relu, inputs: ["input"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [x, LayerSpec(name: "k", kind: .constant(.init(shape: [4, 1, 1]))),
                                                        LayerSpec(name: "m", kind: .mul, inputs: ["x", "k"])]), file: "s.json"),
                         mentions: ["s.json", "layers[2] (m)", "mul inputs do not broadcast: x [8, 4, 4] vs k [4, 1, 1]"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [x, LayerSpec(name: "y", kind: .maxpool2d(.init(kernelSize: 2))),
                                                        LayerSpec(name: "j", kind: .concat, inputs: ["x", "y"])])),
                         mentions: ["layers[2] (j)", "concat inputs must agree in all but the channel axis: x [8, 4, 4] vs y [8, 2, 2]"])
        assertInputError(try ModelGraph(spec([8], [x, LayerSpec(name: "s", kind: .add, inputs: ["x", "x"]),
                                                  LayerSpec(name: "c", kind: .conv2d(.init(inputChannels: 8, outputChannels: 2, kernelSize: 1)))])),
                         mentions: ["layers[2] (c)", "conv2d needs a [C, H, W] input, got [8]"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [LayerSpec(name: "k", kind: .constant(.init(shape: [8]))),
                                                        LayerSpec(name: "r", kind: .relu, inputs: ["k"])])),
                         mentions: ["layers[1] (r)", "only add and mul may read a constant"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [x, LayerSpec(name: "k", kind: .constant(.init(shape: [1, 1, 8, 4, 4]))),
                                                        LayerSpec(name: "a", kind: .add, inputs: ["x", "k"])])),
                         mentions: ["layers[2] (a)", "add inputs do not broadcast"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [x, LayerSpec(name: "v", kind: .flatten),
                                                        LayerSpec(name: "a", kind: .add, inputs: ["x", "v"])])),
                         mentions: ["layers[2] (a)", "add inputs do not broadcast: x [8, 4, 4] vs v [128]"])
        let dilated = ConvolutionAttributes(inputChannels: 8, outputChannels: 8, kernel: Size2D(3), dilation: Size2D(2))
        assertInputError(try ModelGraph(spec([8, 4, 4], [LayerSpec(name: "d", kind: .conv2d(dilated))])),
                         mentions: ["layers[0] (d)", "kernel 3×3 (dilated) is larger than the padded input [8, 4, 4]"])
        assertInputError(try ModelGraph(spec([8, 4, 4], [x, LayerSpec(name: "k", kind: .constant(.init(shape: [1])))])),
                         mentions: ["layers[1] (k)", "a constant cannot be the model's output"])
        // Element-wise kinds take any rank; nothing there is a classifier, and that is only checked when asked.
        XCTAssertEqual(try ModelGraph(spec([5], [LayerSpec(name: "s", kind: .sigmoid)])).outputShapes, [[5]])
        XCTAssertEqual(try ModelGraph(spec([2, 3], [LayerSpec(name: "s", kind: .hardSwish)])).outputShapes, [[2, 3]])
        assertInputError(try ModelGraph(spec([2, 3], [LayerSpec(name: "s", kind: .hardSwish)])).requireClassifier(file: "o.json"),
                         mentions: ["o.json", "the last layer must output class scores [K], got [2, 3]"])
    }

    // MARK: Roles

    func testQuantizationRolesAndTheFixedMinLookThrough() throws {
        XCTAssertEqual(LayerKind.clip(.init(min: 0, max: 6)).quantizationRole, .nonNegativeOutput(atMost: 6))
        XCTAssertEqual(LayerKind.clip(.init(min: 0.5)).quantizationRole, .nonNegativeOutput(atMost: nil))
        XCTAssertEqual(LayerKind.clip(.init(min: -1, max: 1)).quantizationRole, .mayTurnNegative)
        XCTAssertEqual(LayerKind.sigmoid.quantizationRole, .nonNegativeOutput(atMost: 1))
        XCTAssertEqual(LayerKind.hardSigmoid(.init()).quantizationRole, .nonNegativeOutput(atMost: 1))
        XCTAssertEqual(LayerType.globalAvgpool2d.quantizationRole, .keepsNonNegative)
        XCTAssertEqual(LayerType.concat.quantizationRole, .keepsNonNegative)
        for type in [LayerType.leakyReLU, .hardSwish, .mul, .constant] { XCTAssertEqual(type.quantizationRole, .mayTurnNegative, type.name) }
        let depthwise = ConvolutionAttributes(inputChannels: 4, outputChannels: 4, kernel: Size2D(3), groups: 4)
        XCTAssertEqual(LayerKind.conv2d(depthwise).quantizationRole, .quantized(channelWise: true))

        let spec = try parse("""
            {"input": [4, 6, 6], "layers": [
              {"name": "a", "type": "relu6"},
              {"name": "b", "type": "relu", "inputs": ["input"]},
              {"name": "n", "type": "leaky_relu", "inputs": ["input"]},
              {"name": "both", "type": "concat", "inputs": ["a", "b"]},
              {"name": "c1", "type": "conv2d", "in_channels": 8, "out_channels": 4, "kernel_size": 1},
              {"name": "mixed", "type": "concat", "inputs": ["a", "n"]},
              {"name": "c2", "type": "conv2d", "in_channels": 8, "out_channels": 4, "kernel_size": 1},
              {"name": "s", "type": "sigmoid", "inputs": ["a"]},
              {"name": "g", "type": "global_avgpool2d"},
              {"name": "c3", "type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 1},
              {"name": "f", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 4, "out_features": 2}]}
            """)
        let wiring = try ModelGraph.Wiring(spec)
        XCTAssertEqual(wiring.nonNegativeSource(ofLayerAt: 4), 1, "all concat inputs non-negative: the unbounded relu")
        XCTAssertNil(wiring.nonNegativeSource(ofLayerAt: 6), "a leaky_relu input may be negative")
        XCTAssertEqual(wiring.nonNegativeSource(ofLayerAt: 9), 7, "sigmoid through the global pool")
        let plan = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json")).resolve(for: spec)
        XCTAssertEqual(plan.quantizedLayers.map(\.name), ["c1", "c2", "c3", "fc"])
        XCTAssertEqual(plan.quantizedLayers.map { $0.quantizer!.fixedMin }, [true, false, true, false])
        XCTAssertTrue(plan.table(floatNodes: floatNodeLayers(of: spec)).contains("run as float nodes"))
        XCTAssertEqual(floatNodeLayers(of: spec), ["n", "both", "mixed", "s", "g"])
        XCTAssertFalse(plan.table().contains("float nodes"), "without the list the table is as before")
    }

    // MARK: Layer objects

    /// Every parameter gets a gradient through the new kinds, and the backward of the whole
    /// stack matches central differences of its forward on a few weights.
    func testGradientsFlowThroughTheNewLayers() throws {
        let spec = try parse("""
            {"input": [2, 7, 6], "layers": [
              {"name": "grouped", "type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [3, 2], "padding": [1, 1, 0, 0],
               "dilation": [1, 2], "groups": 2},
              {"name": "sig", "type": "sigmoid"},
              {"name": "dw", "type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 1, "groups": 4},
              {"name": "hsw", "type": "hard_swish"},
              {"name": "leaky", "type": "leaky_relu", "negative_slope": 0.3},
              {"name": "gap", "type": "global_avgpool2d", "inputs": ["sig"]},
              {"name": "gate", "type": "hard_sigmoid", "alpha": 0.3, "beta": 0.4},
              {"name": "pool", "type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "inputs": ["sig"]},
              {"name": "scaled", "type": "mul", "inputs": ["pool", "gate"]},
              {"name": "k", "type": "constant", "shape": [4, 1, 1]},
              {"name": "shifted", "type": "add", "inputs": ["scaled", "k"]},
              {"name": "clip", "type": "clip", "min": -0.5, "max": 0.9},
              {"name": "join", "type": "concat", "inputs": ["leaky", "clip"]},
              {"name": "f", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 72, "out_features": 3}]}
            """)
        let model = try Model(spec: spec, seed: 5)
        var generator = SeededGenerator(seed: 9)
        (model.layer(named: "k") as! ConstantLayer).value = .uniform([1, 4, 1, 1], bound: 0.3, using: &generator)
        let x = Tensor.uniform([3, 2, 7, 6], bound: 2, using: &generator)
        let r = (0..<9).map { Float($0 % 4) - 1.5 }
        func loss() -> Double {
            let y = model.forward(x, training: false, tape: nil).value.storage
            return zip(y, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
        }
        let tape = Tape()
        tape.backward(from: weightedSum(model.forward(x, training: false, tape: tape), weights: r, tape: tape))
        for p in model.parameters {
            let g = try XCTUnwrap(p.variable.grad, p.name).storage
            XCTAssertTrue(g.allSatisfy(\.isFinite), p.name)
            XCTAssertTrue(g.contains { $0 != 0 }, "\(p.name) gets no gradient")
        }
        XCTAssertFalse(model.parameters.contains { $0.name.hasPrefix("k.") }, "a constant is not trainable")
        for (name, indices) in [("grouped.weight", [0, 7, 20]), ("dw.weight", [0, 13, 35]), ("dw.bias", [2]), ("fc.weight", [5, 100])] {
            let p = try XCTUnwrap(model.parameters.first { $0.name == name }).variable
            for i in indices {
                let saved = p.value.storage[i], h: Float = 1e-2
                p.value.storage[i] = saved + h
                let up = loss()
                p.value.storage[i] = saved - h
                let down = loss()
                p.value.storage[i] = saved
                let numeric = (up - down) / Double(2 * h)
                XCTAssertEqual(Double(p.grad!.storage[i]), numeric, accuracy: 2e-3 * max(1, abs(numeric)), "\(name)[\(i)]")
            }
        }
    }

    func testConstantsAreCheckpointedAsValue() throws {
        let spec = try parse("""
            {"input": [2, 3, 3], "layers": [
              {"name": "k", "type": "constant", "shape": [2, 1, 1]},
              {"name": "m", "type": "mul", "inputs": ["input", "k"]},
              {"name": "f", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 18, "out_features": 2}]}
            """)
        let model = try Model(spec: spec)
        let constant = model.layer(named: "k") as! ConstantLayer
        XCTAssertEqual(constant.value, Tensor(shape: [1, 2, 1, 1]), "zero until a checkpoint sets it")
        constant.value = Tensor(shape: [1, 2, 1, 1], storage: [2, -3])
        let file = try makeTemporaryFolder(self) + "/k.h5"
        try model.checkpointFile().write(to: file)
        let stored = try CheckpointFile.read(from: file)
        XCTAssertEqual(stored.buffers.map(\.name), ["k.value"])
        XCTAssertFalse(stored.parameters.contains { $0.name == "k.value" })
        let (loaded, _) = try Model.load(checkpoint: file)
        XCTAssertEqual((loaded.layer(named: "k") as! ConstantLayer).value.storage, [2, -3])
        let x = Tensor(shape: [1, 2, 3, 3], storage: (0..<18).map(Float.init))
        XCTAssertEqual(loaded.forward(x, training: false, tape: nil).value, model.forward(x, training: false, tape: nil).value)
        var missing = stored
        missing.buffers = []
        XCTAssertThrowsError(try Model(spec: spec).load(missing, file: "old.h5")) { error in
            XCTAssertTrue("\(error)".contains("missing from the checkpoint: k.value"), "\(error)")
        }
    }

    // MARK: Deploy

    /// Float nodes for clip, leaky_relu, sigmoid, a padded average pool, mul and add with
    /// constants; a rectangular conv and a ceil-mode max pool on codes; through the file and
    /// within the contract on a calibrated (untrained) model.
    func testFloatNodeKindsDeployWithinTheContract() throws {
        let spec = try parse("""
            {"name": "float-nodes", "input": [1, 28, 28], "layers": [
              {"name": "conv1", "type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
              {"name": "clip", "type": "clip", "min": -1, "max": 2},
              {"name": "leaky", "type": "leaky_relu", "negative_slope": 0.1},
              {"name": "pool", "type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": true, "count_include_pad": false},
              {"name": "conv2", "type": "conv2d", "in_channels": 4, "out_channels": 4, "kernel_size": [1, 3], "padding": [0, 1]},
              {"name": "sig", "type": "sigmoid"},
              {"name": "scale", "type": "constant", "shape": [4, 1, 1]},
              {"name": "scaled", "type": "mul", "inputs": ["sig", "scale"]},
              {"name": "shift", "type": "constant", "shape": [1]},
              {"name": "shifted", "type": "add", "inputs": ["scaled", "shift"]},
              {"name": "maxp", "type": "maxpool2d", "kernel_size": 2, "ceil_mode": true},
              {"name": "flatten", "type": "flatten"},
              {"name": "fc", "type": "linear", "in_features": 256, "out_features": 10}]}
            """)
        let model = try Model(spec: spec, seed: 2)
        (model.layer(named: "scale") as! ConstantLayer).value = Tensor(shape: [1, 4, 1, 1], storage: [1.5, -2, 0.5, 3])
        (model.layer(named: "shift") as! ConstantLayer).value = Tensor(shape: [1, 1], storage: [-0.25])
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "r.json"))
        model.applyQuantization(try config.resolve(for: spec))
        let data = try fashionMNIST(.test, count: 200)
        try model.calibrate(on: [data.batch(Array(0..<64)[...]).images])

        let deployed = try Deployer.deploy(model: model, source: "m.h5")
        let file = try makeTemporaryFolder(self) + "/float-nodes.h5"
        try deployed.write(to: file)
        XCTAssertEqual(try DeployFile.read(from: file), deployed, "the new ops and attributes round-trip")
        let byName = Dictionary(uniqueKeysWithValues: deployed.nodes.map { ($0.name, $0) })
        XCTAssertEqual(byName["clip"]?.clip, ClipAttributes(min: -1, max: 2))
        XCTAssertEqual(byName["leaky"]?.leakyReLU, LeakyReLUAttributes(negativeSlope: 0.1))
        XCTAssertEqual(byName["pool"]?.countIncludePad, false)
        XCTAssertEqual(byName["scale"]?.floatTensors["value"]?.storage, [1.5, -2, 0.5, 3])
        XCTAssertEqual(byName["scale"]?.inputs, [])
        XCTAssertNotNil(byName["quantize:shifted"], "the float add is quantized once; the ceil-mode max pool runs on its codes")
        XCTAssertEqual(byName["maxp"]?.output, byName["quantize:shifted"]?.output)
        XCTAssertTrue(byName["conv2"]?.isInteger ?? false)

        let engine = try Int8Model.load(deployFile: file)
        var observed: [String: [Int]] = [:]
        _ = engine.forward(data.batch(Array(0..<8)[...]).images) { observed[$0] = $1.shape }
        XCTAssertEqual(observed["scale"], [1, 4, 1, 1], "a constant is reported with batch 1")
        XCTAssertEqual(observed["shifted"], [8, 4, 15, 15])
        let report = DeployVerification.run(model: model, engine: engine, data: data)
        XCTAssertEqual(report.layers.map(\.name), ["conv1", "conv2", "fc"])
        for layer in report.layers {
            XCTAssertGreaterThan(layer.count, 0, layer.name)
            XCTAssertGreaterThanOrEqual(layer.equalFraction, 0.999, "\(layer.name)\n\(report.table())")
            XCTAssertLessThanOrEqual(layer.maxDifference, 1, "\(layer.name)\n\(report.table())")
        }
        XCTAssertTrue(report.passed, report.table())
    }
}
