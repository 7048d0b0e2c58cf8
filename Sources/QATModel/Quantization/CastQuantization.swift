import QATCore
import QATIO

// Cast-quantized layers (Vitis AI's `datatype` bfloat16, float16, float32): the layer's input,
// weight and bias are each rounded to a float format and back instead of onto an integer grid
// (docs/ALGORITHMS.md §3.6). They need no calibration, train with a straight-through gradient
// and run on the INT8 engine as float nodes that cast the same way.

/// The float formats of a cast-quantized layer's three tensors.
public struct FloatCast: Equatable, Sendable {
    public var input: FloatFormat
    public var weights: FloatFormat
    /// float32 (no cast) when the config does not quantize the bias.
    public var bias: FloatFormat

    public init(input: FloatFormat, weights: FloatFormat, bias: FloatFormat) {
        self.input = input
        self.weights = weights
        self.bias = bias
    }

    /// True when every cast is float32's identity: the layer computes exactly as in float.
    public var isIdentity: Bool { input.isIdentity && weights.isIdentity && bias.isIdentity }

    /// "bfloat16" when all three agree, else "input bfloat16, weights bfloat16, bias float16".
    public var summary: String {
        if input == weights && weights == bias { return input.rawValue }
        return "input \(input.rawValue), weights \(weights.rawValue), bias \(bias.rawValue)"
    }
}

/// A resolved `data_type` with the config that gave it (nil: the default, int).
typealias PickedDataType = (value: TensorDataType, source: QuantizerConfig)?

extension RetrainConfig {
    /// The casts of a layer whose input and weights have float data types; nil for an integer
    /// layer. qat's decision: one layer is either integer or cast throughout, so an int tensor
    /// beside a float one (int8 weights with a bfloat16 input, a float16 bias on an int8 layer)
    /// is refused, naming the key that made the mix.
    /// `mostSpecific`: the layer's most specific config, blamed for a type it leaves at int.
    func floatCast(input: PickedDataType, weights: PickedDataType, bias: PickedDataType, layer: String,
                   mostSpecific: QuantizerConfig) throws -> FloatCast? {
        let inputFormat = input?.value.floatFormat, weightFormat = weights?.value.floatFormat
        func mixError(_ picked: PickedDataType, section: String, key: String, _ what: String) -> InputError {
            let keyPath = (picked?.source ?? mostSpecific).keyPath(section) + "." + key
            return InputError(file: file, keyPath: keyPath,
                              message: "\(picked?.value.rawValue ?? "int (the default)") on layer \(layer), whose \(what): mixing integer and "
                                + "float data types in one layer is not supported (give its input, weights and bias float types, or none)")
        }
        switch (inputFormat, weightFormat) {
        case (nil, nil):
            if let bias, bias.value != .int {
                throw mixError(bias, section: format.weightSectionKey, key: "bias_data_type", "weights and input are int")
            }
            return nil
        case (let i?, nil):
            throw mixError(weights, section: format.weightSectionKey, key: "data_type", "input is \(i.rawValue)")
        case (nil, let w?):
            throw mixError(input, section: format.dataSectionKey, key: "data_type", "weights are \(w.rawValue)")
        case (let i?, let w?):
            guard let bias else { return FloatCast(input: i, weights: w, bias: .float32) }
            guard let biasFormat = bias.value.floatFormat else {
                throw mixError(bias, section: format.weightSectionKey, key: "bias_data_type", "input and weights are float")
            }
            return FloatCast(input: i, weights: w, bias: biasFormat)
        }
    }
}
