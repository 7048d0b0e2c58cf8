import QATCore
import QATModel

/// How a layer kind lowers to the INT8 engine: the one switch to extend for a new kind (with
/// `DeployNode.init(layer:inputs:)` for its node and the engine's `Int8Model.run`).
package enum Lowering: Equatable {
    /// An integer node when quantized (a BatchNorm that is its only reader folds into it when
    /// `LayerKind.foldsFollowingBatchNorm`: `ModelGraph.batchNormFolds`), else a float node.
    case weighted
    /// Folds into the conv before it when it can, else a float node.
    case batchNorm
    /// Monotone, so it runs on codes in the quantizer they come with, or on floats; when
    /// `fusesAs` is set and it is the only reader of a value being requantized, it becomes
    /// saturation of those codes.
    case codePreserving(fusesAs: FusedActivation?)
    /// Always float: the training op in eval mode, between dequantize and quantize.
    case float
}

extension LayerKind {
    package var lowering: Lowering {
        switch self {
        case .conv2d, .linear: return .weighted
        case .batchnorm2d: return .batchNorm
        case .relu: return .codePreserving(fusesAs: .relu)
        case .relu6: return .codePreserving(fusesAs: .relu6)
        case .maxpool2d, .flatten: return .codePreserving(fusesAs: nil)
        case .avgpool2d, .add, .clip, .leakyReLU, .sigmoid, .hardSigmoid, .hardSwish, .globalAvgpool2d, .mul, .concat, .constant:
            return .float
        }
    }
}

/// The layers of `spec` that always run as float nodes on the INT8 engine (lowering `.float`:
/// between dequantize and quantize, as the training ops compute in eval mode), for `qat plan`.
/// Unquantized conv/linear layers and BatchNorms that cannot fold run in float too.
public func floatNodeLayers(of spec: ModelSpec) -> [String] {
    spec.layers.filter { $0.kind.lowering == .float }.map(\.name)
}

extension DeployNode {
    /// The node of spec layer `layer` with the attributes the engine needs, before any
    /// quantization decision.
    init(layer: LayerSpec, inputs: [String]) {
        let op: Op
        switch layer.kind {
        case .conv2d(let c):
            op = .conv2d
            (inputChannels, outputChannels, groups) = (c.inputChannels, c.outputChannels, c.groups)
            (kernel, stride, padding, dilation) = (c.kernel, c.stride, c.padding, c.dilation)
        case .linear(let f):
            op = .linear
            (inputChannels, outputChannels) = (f.inputFeatures, f.outputFeatures)
        case .batchnorm2d(let b):
            op = .batchnorm2d
            epsilon = b.epsilon
        case .relu: op = .relu
        case .relu6: op = .relu6
        case .maxpool2d(let p), .avgpool2d(let p):
            if case .maxpool2d = layer.kind { op = .maxpool2d } else { op = .avgpool2d }
            (kernel, stride, padding) = (p.kernel, p.stride, p.padding)
            (ceilMode, countIncludePad) = (p.ceilMode, p.countIncludePad)
        case .flatten: op = .flatten
        case .add: op = .add
        case .clip(let bounds):
            op = .clip
            clip = bounds
        case .leakyReLU(let a):
            op = .leakyReLU
            leakyReLU = a
        case .sigmoid: op = .sigmoid
        case .hardSigmoid(let a):
            op = .hardSigmoid
            hardSigmoid = a
        case .hardSwish: op = .hardSwish
        case .globalAvgpool2d: op = .globalAvgpool2d
        case .mul: op = .mul
        case .concat: op = .concat
        case .constant(let c):
            op = .constant
            constantShape = c.shape
        }
        (self.name, self.op, self.inputs, self.produces) = (layer.name, op, inputs, layer.name)
    }

    /// The layer kind of a float node whose op has no parameters (activations, pools, add, mul,
    /// concat): the engine runs its training op (`statelessOperation`). Nil for the other ops.
    var statelessKind: LayerKind? {
        let pooling = PoolingAttributes(kernel: kernel, stride: stride, padding: padding, ceilMode: ceilMode,
                                        countIncludePad: countIncludePad)
        switch op {
        case .relu: return .relu
        case .relu6: return .relu6
        case .maxpool2d: return .maxpool2d(pooling)
        case .avgpool2d: return .avgpool2d(pooling)
        case .flatten: return .flatten
        case .add: return .add
        case .clip: return .clip(clip)
        case .leakyReLU: return .leakyReLU(leakyReLU)
        case .sigmoid: return .sigmoid
        case .hardSigmoid: return .hardSigmoid(hardSigmoid)
        case .hardSwish: return .hardSwish
        case .globalAvgpool2d: return .globalAvgpool2d
        case .mul: return .mul
        case .concat: return .concat
        case .quantize, .conv2d, .linear, .batchnorm2d, .constant: return nil
        }
    }

    /// The convolution a conv2d node computes.
    var convolution: ConvolutionAttributes {
        ConvolutionAttributes(inputChannels: inputChannels, outputChannels: outputChannels, kernel: kernel, stride: stride,
                              padding: padding, dilation: dilation, groups: groups, hasBias: true)
    }
}

extension DeployNode {
    /// True when this node has the op and attributes spec layer `layer` lowers to (the INT8
    /// engine checks a file's nodes against its model spec with it).
    func matches(_ layer: LayerSpec) -> Bool {
        let expected = DeployNode(layer: layer, inputs: inputs)
        return op == expected.op && inputChannels == expected.inputChannels && outputChannels == expected.outputChannels
            && groups == expected.groups && kernel == expected.kernel && stride == expected.stride && padding == expected.padding
            && dilation == expected.dilation && ceilMode == expected.ceilMode && countIncludePad == expected.countIncludePad
            && clip == expected.clip && leakyReLU == expected.leakyReLU && hardSigmoid == expected.hardSigmoid
            && constantShape == expected.constantShape
    }
}
