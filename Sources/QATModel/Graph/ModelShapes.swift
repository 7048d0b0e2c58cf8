import QATCore
import QATIO

/// Shape inference over a spec: every layer's output shape for one sample (no batch axis).
/// Mismatches are reported with the layer's name and index, before any weights exist.
extension ModelSpec {
    public func outputShapes(file: String = "model spec") throws -> [[Int]] {
        var shapes: [String: [Int]] = ["input": inputShape]
        var result: [[Int]] = []
        var previous = "input"
        for (index, layer) in layers.enumerated() {
            func fail(_ message: String) -> InputError {
                InputError(file: file, keyPath: "layers[\(index)] (\(layer.name))", message: message)
            }
            let sources = layer.inputs.isEmpty ? [previous] : layer.inputs
            let inShape = shapes[sources[0]]!
            var out: [Int]
            switch layer.kind {
            case .conv2d:
                guard inShape.count == 3 else { throw fail("conv2d needs a [C, H, W] input, got \(inShape)") }
                guard inShape[0] == layer.inputChannels else {
                    throw fail("in_channels is \(layer.inputChannels) but the input has \(inShape[0]) channels")
                }
                let h = (inShape[1] + 2 * layer.padding - layer.kernelSize) / layer.stride + 1
                let w = (inShape[2] + 2 * layer.padding - layer.kernelSize) / layer.stride + 1
                guard inShape[1] + 2 * layer.padding >= layer.kernelSize, inShape[2] + 2 * layer.padding >= layer.kernelSize else {
                    throw fail("kernel \(layer.kernelSize) is larger than the padded input \(inShape)")
                }
                out = [layer.outputChannels, h, w]
            case .linear:
                let features = inShape.reduce(1, *)
                guard inShape.count == 1 else { throw fail("linear needs a flat input; add a flatten layer before it (input is \(inShape))") }
                guard features == layer.inputChannels else {
                    throw fail("in_features is \(layer.inputChannels) but the input has \(features) features")
                }
                out = [layer.outputChannels]
            case .batchnorm2d:
                guard inShape.count == 3, inShape[0] == layer.outputChannels else {
                    throw fail("num_features is \(layer.outputChannels) but the input is \(inShape)")
                }
                out = inShape
            case .maxpool2d, .avgpool2d:
                guard inShape.count == 3, inShape[1] >= layer.kernelSize, inShape[2] >= layer.kernelSize else {
                    throw fail("pool kernel \(layer.kernelSize) does not fit the input \(inShape)")
                }
                out = [inShape[0], (inShape[1] - layer.kernelSize) / layer.stride + 1,
                       (inShape[2] - layer.kernelSize) / layer.stride + 1]
            case .flatten:
                out = [inShape.reduce(1, *)]
            case .relu:
                out = inShape
            case .add:
                let other = shapes[sources[1]]!
                guard other == inShape else {
                    throw fail("add inputs have different shapes: \(sources[0]) \(inShape) vs \(sources[1]) \(other)")
                }
                out = inShape
            }
            shapes[layer.name] = out
            result.append(out)
            previous = layer.name
        }
        guard result.last?.count == 1 else {
            throw InputError(file: file, keyPath: "layers", message: "the last layer must output class scores [K], got \(result.last ?? [])")
        }
        return result
    }
}
