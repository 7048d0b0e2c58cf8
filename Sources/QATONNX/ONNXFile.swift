import CONNX
import Foundation
import QATIO

// The one file that talks to libonnx (through the CONNX shim): it parses and checks an ONNX
// file and copies what the importer needs into the plain Swift values below.

/// An ONNX model as read from a file: the graph's nodes, initializers, inputs and outputs.
public struct ONNXModel: Sendable {
    public var irVersion: Int
    public var producer: String
    public var graphName: String
    /// opset_import: version per domain ("" is the default ONNX domain).
    public var opsets: [String: Int]
    public var nodes: [ONNXNode]
    /// Initializers in file order.
    public var initializers: [ONNXTensor]
    public var inputs: [ONNXValueInfo]
    public var outputs: [ONNXValueInfo]
    /// The shapes of intermediate values, as shape inference found them.
    public var valueInfos: [ONNXValueInfo]

    /// The version of the default ("" or "ai.onnx") domain.
    public var defaultOpset: Int? { opsets[""] ?? opsets["ai.onnx"] }
}

/// One node: an op applied to named values.
public struct ONNXNode: Sendable {
    public var name: String
    public var opType: String
    public var domain: String
    /// Value names; an empty name is an omitted optional input.
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: ONNXAttribute]
}

/// An attribute value, by the types the importer reads; other types keep their onnx.proto number.
public enum ONNXAttribute: Sendable {
    case int(Int)
    case ints([Int])
    case float(Float)
    case floats([Float])
    case string(String)
    case tensor(ONNXTensor)
    case other(typeNumber: Int)
}

/// A tensor: an initializer, a Constant's value, or a backend test's input/output file.
public struct ONNXTensor: Sendable {
    public var name: String
    public var dims: [Int]
    /// onnx.proto's TensorProto.DataType number (1 float, 7 int64, 10 float16, …).
    public var dataType: Int
    /// The values as float32 (float16, double and integers converted).
    public var floats: [Float]
    /// The exact values of an integer tensor (Reshape shapes, Clip bounds); nil otherwise.
    public var integers: [Int64]?

    public static let floatType = 1, int64Type = 7
}

/// A graph input or output: its name, element type and (possibly symbolic) dims.
public struct ONNXValueInfo: Sendable {
    public var name: String
    public var elementType: Int
    /// nil when the file gives no shape.
    public var dims: [ONNXDimension]?
}

public enum ONNXDimension: Equatable, Sendable, CustomStringConvertible {
    case value(Int)
    case symbol(String)
    case unknown

    public var description: String {
        switch self {
        case .value(let size): return "\(size)"
        case .symbol(let name): return "\"\(name)\""
        case .unknown: return "?"
        }
    }
}

/// libonnx's checker or protobuf rejected the bytes; the importer adds the file name.
struct ONNXReadError: Error {
    var message: String
}

extension ONNXModel {
    /// Reads, parses and checks (onnx::checker, and strict shape inference with `inferShapes`) an
    /// ONNX file. Errors name the file.
    public static func read(file: String, inferShapes: Bool = true) throws -> ONNXModel {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw InputError(file: file, message: "cannot read the ONNX file (\(error.localizedDescription))")
        }
        do {
            return try parse(data, inferShapes: inferShapes)
        } catch let error as ONNXReadError {
            throw InputError(file: file, message: error.message)
        }
    }

    static func parse(_ data: Data, inferShapes: Bool) throws -> ONNXModel {
        var errorText: UnsafeMutablePointer<CChar>?
        let parsed = data.withUnsafeBytes { bytes in
            connx_model_parse(bytes.baseAddress, bytes.count, inferShapes ? 1 : 0, &errorText)
        }
        guard let handle = parsed else { throw ONNXReadError(message: oneLine(takeMessage(errorText))) }
        defer { connx_model_free(handle) }
        var opsets: [String: Int] = [:]
        for i in 0..<connx_opset_count(handle) {
            opsets[String(cString: connx_opset_domain(handle, i))] = Int(connx_opset_version(handle, i))
        }
        // Every stored element takes at least one byte of the file, so a tensor whose dims ask for
        // more is damaged: refused before anything is allocated for it.
        let limit = data.count
        let nodes = try (0..<connx_node_count(handle)).map { try readNode(handle, $0, elementLimit: limit) }
        let initializers = try (0..<connx_initializer_count(handle)).map { try readTensor(connx_initializer(handle, $0)!, elementLimit: limit) }
        return ONNXModel(
            irVersion: Int(connx_model_ir_version(handle)), producer: String(cString: connx_model_producer(handle)),
            graphName: String(cString: connx_graph_name(handle)), opsets: opsets, nodes: nodes, initializers: initializers,
            inputs: (0..<connx_graph_input_count(handle)).map { readValue(connx_graph_input(handle, $0)!) },
            outputs: (0..<connx_graph_output_count(handle)).map { readValue(connx_graph_output(handle, $0)!) },
            valueInfos: (0..<connx_value_info_count(handle)).map { readValue(connx_value_info_at(handle, $0)!) })
    }

    private static func readNode(_ handle: OpaquePointer, _ index: Int, elementLimit: Int) throws -> ONNXNode {
        var attributes: [String: ONNXAttribute] = [:]
        for a in 0..<connx_attribute_count(handle, index) {
            let name = String(cString: connx_attribute_name(handle, index, a))
            let type = Int(connx_attribute_type(handle, index, a))
            switch type {
            case Int(CONNX_ATTRIBUTE_INT): attributes[name] = .int(Int(connx_attribute_int(handle, index, a)))
            case Int(CONNX_ATTRIBUTE_FLOAT): attributes[name] = .float(connx_attribute_float(handle, index, a))
            case Int(CONNX_ATTRIBUTE_INTS):
                attributes[name] = .ints((0..<connx_attribute_ints_count(handle, index, a)).map { Int(connx_attribute_ints(handle, index, a, $0)) })
            case Int(CONNX_ATTRIBUTE_FLOATS):
                attributes[name] = .floats((0..<connx_attribute_floats_count(handle, index, a)).map { connx_attribute_floats(handle, index, a, $0) })
            case Int(CONNX_ATTRIBUTE_STRING):
                var length = 0
                let bytes = connx_attribute_string(handle, index, a, &length)!
                attributes[name] = .string(String(decoding: UnsafeRawBufferPointer(start: bytes, count: length), as: UTF8.self))
            case Int(CONNX_ATTRIBUTE_TENSOR): attributes[name] = .tensor(try readTensor(connx_attribute_tensor(handle, index, a)!, elementLimit: elementLimit))
            default: attributes[name] = .other(typeNumber: type)
            }
        }
        return ONNXNode(
            name: String(cString: connx_node_name(handle, index)), opType: String(cString: connx_node_op_type(handle, index)),
            domain: String(cString: connx_node_domain(handle, index)),
            inputs: (0..<connx_node_input_count(handle, index)).map { String(cString: connx_node_input(handle, index, $0)) },
            outputs: (0..<connx_node_output_count(handle, index)).map { String(cString: connx_node_output(handle, index, $0)) },
            attributes: attributes)
    }

    private static func readValue(_ value: OpaquePointer) -> ONNXValueInfo {
        let rank = Int(connx_value_rank(value))
        let dims: [ONNXDimension]? = rank < 0 ? nil : (0..<rank).map { k in
            var number: Int64 = 0
            var symbol: UnsafePointer<CChar>?
            switch connx_value_dim(value, k, &number, &symbol) {
            case Int32(CONNX_DIM_VALUE): return .value(Int(number))
            case Int32(CONNX_DIM_PARAM): return .symbol(String(cString: symbol!))
            default: return .unknown
            }
        }
        return ONNXValueInfo(name: String(cString: connx_value_name(value)), elementType: Int(connx_value_element_type(value)), dims: dims)
    }
}

extension ONNXTensor {
    /// Reads a serialized TensorProto file (a backend test's input_0.pb or output_0.pb).
    public static func read(file: String) throws -> ONNXTensor {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            throw InputError(file: file, message: "cannot read the tensor file (\(error.localizedDescription))")
        }
        var errorText: UnsafeMutablePointer<CChar>?
        let parsed = data.withUnsafeBytes { bytes in connx_tensor_file_parse(bytes.baseAddress, bytes.count, &errorText) }
        guard let handle = parsed else { throw InputError(file: file, message: takeMessage(errorText)) }
        defer { connx_tensor_file_free(handle) }
        do {
            return try readTensor(connx_tensor_file_tensor(handle)!, elementLimit: data.count)
        } catch let error as ONNXReadError {
            throw InputError(file: file, message: error.message)
        }
    }
}

/// Copies a tensor's dims and data out of libonnx's memory.
private func readTensor(_ tensor: OpaquePointer, elementLimit: Int) throws -> ONNXTensor {
    let name = String(cString: connx_tensor_name(tensor))
    let dims = (0..<connx_tensor_rank(tensor)).map { Int(connx_tensor_dim(tensor, $0)) }
    guard dims.allSatisfy({ $0 >= 0 }) else { throw ONNXReadError(message: "tensor \"\(name)\" has negative dims \(dims)") }
    var count = 1
    for d in dims {
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow, product <= elementLimit else {
            throw ONNXReadError(message: "tensor \"\(name)\" of dims \(dims) holds more values than the file has bytes (damaged)")
        }
        count = product
    }
    let dataType = Int(connx_tensor_data_type(tensor))
    var errorText: UnsafeMutablePointer<CChar>?
    var floats = [Float](repeating: 0, count: count)
    let floatStatus = floats.withUnsafeMutableBufferPointer { connx_tensor_copy_floats(tensor, $0.baseAddress, count, &errorText) }
    if floatStatus != 0 {
        // Damaged (data and dims disagree) or of a type we do not read (strings, complex).
        throw ONNXReadError(message: takeMessage(errorText))
    }
    var integers: [Int64]? = [Int64](repeating: 0, count: count)
    let integerStatus = integers!.withUnsafeMutableBufferPointer { connx_tensor_copy_int64s(tensor, $0.baseAddress, count, &errorText) }
    if integerStatus != 0 {
        connx_string_free(errorText)
        integers = nil
    }
    return ONNXTensor(name: name, dims: dims, dataType: dataType, floats: floats, integers: integers)
}

/// The shim's malloc'd message as a Swift string (and freed).
private func takeMessage(_ text: UnsafeMutablePointer<CChar>?) -> String {
    guard let text else { return "unknown error" }
    defer { connx_string_free(text) }
    return String(cString: text)
}

/// libonnx's messages span lines; ours are one line. The checker cannot tell a missing
/// initializer from a cycle (both are a value no earlier node produces), so the hint names both.
private func oneLine(_ message: String) -> String {
    var text = message.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    if text.contains("topologically sorted") {
        text += " (no initializer, graph input or earlier node produces it: a missing initializer, or a cycle)"
    }
    return text
}
