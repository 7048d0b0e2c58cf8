import CONNX
import Foundation
import QATIO

// The writing side of the CONNX shim: a graph described in Swift values, built into a ModelProto
// by libonnx's protobuf classes, checked by onnx::checker (and strict shape inference) and
// serialised. Nothing of the protobuf wire format is written by us.

/// An attribute of a node being written.
public enum ONNXAttributeValue: Sendable, Equatable {
    case int(Int)
    case float(Float)
    case ints([Int])
}

/// An initializer being written: its element type and little-endian bytes.
public struct ONNXInitializer: Sendable {
    public enum ElementType: Int32, Sendable {
        case float = 1, uint8 = 2, int8 = 3, int32 = 6, int64 = 7
    }
    public var name: String
    public var type: ElementType
    public var dims: [Int]
    public var bytes: Data

    public init(name: String, floats: [Float], dims: [Int]) {
        self.init(name: name, type: .float, dims: dims, bytes: floats.withUnsafeBytes { Data($0) })
    }
    public init(name: String, int8s: [Int8], dims: [Int]) {
        self.init(name: name, type: .int8, dims: dims, bytes: int8s.withUnsafeBytes { Data($0) })
    }
    public init(name: String, int32s: [Int32], dims: [Int]) {
        self.init(name: name, type: .int32, dims: dims, bytes: int32s.withUnsafeBytes { Data($0) })
    }
    public init(name: String, type: ElementType, dims: [Int], bytes: Data) {
        (self.name, self.type, self.dims, self.bytes) = (name, type, dims, bytes)
    }
}

/// A node being written (default ONNX domain).
public struct ONNXNodeDescription: Sendable {
    public var opType: String
    public var name: String
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [(name: String, value: ONNXAttributeValue)]

    public init(_ opType: String, name: String, inputs: [String], outputs: [String],
                attributes: [(name: String, value: ONNXAttributeValue)] = []) {
        (self.opType, self.name, self.inputs, self.outputs, self.attributes) = (opType, name, inputs, outputs, attributes)
    }
}

/// A graph input or output: element type and full shape (−1 is the symbolic batch dim "N").
public struct ONNXValueDescription: Sendable {
    public var name: String
    public var type: ONNXInitializer.ElementType
    public var dims: [Int]
    public init(name: String, type: ONNXInitializer.ElementType, dims: [Int]) {
        (self.name, self.type, self.dims) = (name, type, dims)
    }
}

/// A whole model to write.
public struct ONNXGraphDescription: Sendable {
    public var opset: Int
    public var graphName: String
    public var inputs: [ONNXValueDescription] = []
    public var outputs: [ONNXValueDescription] = []
    public var initializers: [ONNXInitializer] = []
    public var nodes: [ONNXNodeDescription] = []

    public init(opset: Int, graphName: String) {
        self.opset = opset
        self.graphName = graphName
    }

    /// The IR version that goes with `opset` (onnx's versioning table).
    public var irVersion: Int {
        switch opset {
        case ...9: return 4
        case 10: return 5
        case 11: return 6
        case 12...14: return 7
        default: return 8
        }
    }

    /// The serialised ModelProto, after onnx::checker and strict shape inference accepted it.
    /// A model the checker refuses is an error naming `file` (our bug or an inexpressible model,
    /// never written).
    public func serialized(file: String) throws -> Data {
        guard let builder = connx_builder_new(Int64(irVersion), Int64(opset), "qat", graphName) else {
            throw InputError(file: file, message: "cannot build the ONNX model (out of memory)")
        }
        defer { connx_builder_free(builder) }
        for value in inputs {
            connx_builder_add_input(builder, value.name, Int32(value.type.rawValue), value.dims.map(Int64.init), value.dims.count)
        }
        for value in outputs {
            connx_builder_add_output(builder, value.name, Int32(value.type.rawValue), value.dims.map(Int64.init), value.dims.count)
        }
        for tensor in initializers {
            tensor.bytes.withUnsafeBytes { raw in
                connx_builder_add_initializer(builder, tensor.name, Int32(tensor.type.rawValue), tensor.dims.map(Int64.init),
                                              tensor.dims.count, raw.baseAddress, raw.count)
            }
        }
        for node in nodes {
            withCStrings(node.inputs) { inputs in
                withCStrings(node.outputs) { outputs in
                    connx_builder_add_node(builder, node.opType, node.name, inputs, node.inputs.count, outputs, node.outputs.count)
                }
            }
            for (name, value) in node.attributes {
                switch value {
                case .int(let v): connx_builder_attribute_int(builder, name, Int64(v))
                case .float(let v): connx_builder_attribute_float(builder, name, v)
                case .ints(let v): connx_builder_attribute_ints(builder, name, v.map(Int64.init), v.count)
                }
            }
        }
        var bytes: UnsafeMutableRawPointer?
        var length = 0
        var error: UnsafeMutablePointer<CChar>?
        guard connx_builder_serialize(builder, &bytes, &length, &error) == 0, let bytes else {
            let message = error.map { String(cString: $0) } ?? "unknown error"
            connx_string_free(error)
            throw InputError(file: file, message: "the exported model does not pass the ONNX checker: \(message)")
        }
        defer { connx_bytes_free(bytes) }
        return Data(bytes: bytes, count: length)
    }
}

/// Calls `body` with a C array of the strings (valid during the call only).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    // A trailing nil keeps the array non-empty, so it always has a base address.
    let pointers = copies.map { UnsafePointer<CChar>($0) } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
