import QATModel

/// How a layer kind lowers to the INT8 engine: the one switch to extend for a new kind (with
/// `DeployNode.init(layer:inputs:)` for its node and the engine's `Int8Model.run`).
package enum Lowering {
    /// An integer node when quantized (a BatchNorm that is its only reader folds into it when
    /// `foldsBatchNorm`), else a float node.
    case weighted(foldsBatchNorm: Bool)
    /// Folds into the conv before it when it can, else a float node.
    case batchNorm
    /// Monotone, so it runs on codes in the quantizer they come with, or on floats; when
    /// `fusesAs` is set and it is the only reader of a value being requantized, it becomes
    /// saturation of those codes.
    case codePreserving(fusesAs: FusedActivation?)
    /// Always float.
    case float
}

extension LayerKind {
    package var lowering: Lowering {
        switch self {
        case .conv2d: return .weighted(foldsBatchNorm: true)
        case .linear: return .weighted(foldsBatchNorm: false)
        case .batchnorm2d: return .batchNorm
        case .relu: return .codePreserving(fusesAs: .relu)
        case .relu6: return .codePreserving(fusesAs: .relu6)
        case .maxpool2d, .flatten: return .codePreserving(fusesAs: nil)
        case .avgpool2d, .add: return .float
        }
    }
}

extension DeployNode {
    /// The node of spec layer `layer` with the attributes the engine needs, before any
    /// quantization decision.
    init(layer: LayerSpec, inputs: [String]) {
        switch layer.kind {
        case .conv2d(let c):
            self.init(name: layer.name, op: .conv2d, inputs: inputs, produces: layer.name)
            (inputChannels, outputChannels) = (c.inputChannels, c.outputChannels)
            (kernelSize, stride, padding) = (c.kernelSize, c.stride, c.padding)
        case .linear(let f):
            self.init(name: layer.name, op: .linear, inputs: inputs, produces: layer.name)
            (inputChannels, outputChannels) = (f.inputFeatures, f.outputFeatures)
        case .batchnorm2d(let b):
            self.init(name: layer.name, op: .batchnorm2d, inputs: inputs, produces: layer.name)
            epsilon = b.epsilon
        case .relu: self.init(name: layer.name, op: .relu, inputs: inputs, produces: layer.name)
        case .relu6: self.init(name: layer.name, op: .relu6, inputs: inputs, produces: layer.name)
        case .maxpool2d(let p):
            self.init(name: layer.name, op: .maxpool2d, inputs: inputs, produces: layer.name)
            (kernelSize, stride) = (p.kernelSize, p.stride)
        case .avgpool2d(let p):
            self.init(name: layer.name, op: .avgpool2d, inputs: inputs, produces: layer.name)
            (kernelSize, stride) = (p.kernelSize, p.stride)
        case .flatten: self.init(name: layer.name, op: .flatten, inputs: inputs, produces: layer.name)
        case .add: self.init(name: layer.name, op: .add, inputs: inputs, produces: layer.name)
        }
    }
}

extension DeployNode {
    /// True when this node has the op and geometry spec layer `layer` lowers to (the INT8
    /// engine checks a file's nodes against its model spec with it).
    func matches(_ layer: LayerSpec) -> Bool {
        let expected = DeployNode(layer: layer, inputs: inputs)
        return op == expected.op && inputChannels == expected.inputChannels && outputChannels == expected.outputChannels
            && kernelSize == expected.kernelSize && stride == expected.stride && padding == expected.padding
    }
}
