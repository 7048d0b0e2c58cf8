import Foundation

/// A JSON document whose objects keep their keys in the order they were built, for the files and
/// records people read (retrain configs, the checkpoint's record of a run). `text` is the one
/// printer; `JSONObject` stays the strict reader.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's literal as it is written, e.g. "0.1" for `Float(0.1)` (its shortest form).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([Member])

    /// One key of an object with its value.
    public struct Member: Equatable, Sendable {
        public var key: String
        public var value: JSONValue

        public init(_ key: String, _ value: JSONValue) {
            self.key = key
            self.value = value
        }
    }

    public init(_ value: Bool) { self = .bool(value) }
    public init(_ value: Int) { self = .number("\(value)") }
    public init(_ value: String) { self = .string(value) }
    /// A finite number as its shortest literal; ±infinity and NaN, which JSON cannot hold, as strings.
    public init(_ value: Float) { self = value.isFinite ? .number("\(value)") : .string("\(value)") }
    public init(_ value: Double) { self = value.isFinite ? .number("\(value)") : .string("\(value)") }

    /// Converts what `JSONParser` (or `JSONSerialization`) returns. Its objects are unordered, so keys are sorted.
    /// Integers keep every digit; other numbers take their shortest Double form.
    public init(foundation value: Any) {
        switch value {
        case let n as NSNumber where isBoolean(n):
            self = .bool(n.boolValue)
        case let n as NSNumber:
            let isFloatingPoint = ["d", "f"].contains(String(cString: n.objCType))
            self = isFloatingPoint ? JSONValue(n.doubleValue) : .number(n.stringValue)
        case let s as String:
            self = .string(s)
        case let array as [Any]:
            self = .array(array.map { JSONValue(foundation: $0) })
        case let object as [String: Any]:
            self = .object(object.keys.sorted().map { Member($0, JSONValue(foundation: object[$0]!)) })
        default:
            self = .null
        }
    }

    /// Parses JSON text (any value at the top level); errors name `file`.
    public init(parsing data: Data, file: String) throws {
        self.init(foundation: try JSONParser.parse(data, file: file))
    }

    /// The members of an object (empty for any other value).
    public var members: [Member] {
        if case .object(let members) = self { return members }
        return []
    }

    /// The value of `key` in an object, or nil.
    public subscript(key: String) -> JSONValue? {
        members.first { $0.key == key }?.value
    }

    /// Sets `key` in an object (in place if present, else appended), or removes it for nil.
    /// Does nothing on a value that is not an object.
    public mutating func set(_ key: String, _ value: JSONValue?) {
        guard case .object(var members) = self else { return }
        if let index = members.firstIndex(where: { $0.key == key }) {
            if let value { members[index].value = value } else { members.remove(at: index) }
        } else if let value {
            members.append(Member(key, value))
        }
        self = .object(members)
    }

    /// Every leaf as a dotted key path ("train.learning_rate") with its compact JSON text, so two
    /// documents can be compared key by key. Array elements are not split up.
    public var leaves: [String: String] {
        var result: [String: String] = [:]
        func visit(_ value: JSONValue, _ path: String) {
            if case .object(let members) = value, !members.isEmpty {
                for member in members { visit(member.value, path.isEmpty ? member.key : "\(path).\(member.key)") }
            } else {
                result[path] = value.compactText
            }
        }
        visit(self, "")
        return result
    }

    // MARK: Writing

    /// Pretty-printed: two spaces per level, one key per line, arrays of scalars on one line;
    /// ends with a newline.
    public var text: String { render(indent: "") + "\n" }

    /// On one line, without spaces.
    public var compactText: String {
        switch self {
        case .array(let items): return "[" + items.map(\.compactText).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.map { jsonQuoted($0.key) + ":" + $0.value.compactText }.joined(separator: ",") + "}"
        default: return render(indent: "")
        }
    }

    private func render(indent: String) -> String {
        switch self {
        case .null: return "null"
        case .bool(let value): return "\(value)"
        case .number(let literal): return literal
        case .string(let text): return jsonQuoted(text)
        case .array(let items):
            let isFlat = items.allSatisfy { if case .array = $0 { return false }; if case .object = $0 { return false }; return true }
            if isFlat { return "[" + items.map { $0.render(indent: "") }.joined(separator: ", ") + "]" }
            let inner = indent + "  "
            return "[\n" + items.map { inner + $0.render(indent: inner) }.joined(separator: ",\n") + "\n\(indent)]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            let inner = indent + "  "
            return "{\n" + members.map { inner + jsonQuoted($0.key) + ": " + $0.value.render(indent: inner) }
                .joined(separator: ",\n") + "\n\(indent)}"
        }
    }
}

/// Encodes as the JSON it describes, so a type that builds a `JSONValue` is `Encodable` too.
extension JSONValue: Encodable {
    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public func encode(to encoder: Encoder) throws {
        switch self {
        case .null:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let value):
            var container = encoder.singleValueContainer()
            try container.encode(value)
        case .number(let literal):
            var container = encoder.singleValueContainer()
            if let integer = Int(literal) {
                try container.encode(integer)
            } else if let unsigned = UInt64(literal) {
                try container.encode(unsigned)
            } else {
                try container.encode(Double(literal) ?? .nan)
            }
        case .string(let text):
            var container = encoder.singleValueContainer()
            try container.encode(text)
        case .array(let items):
            var container = encoder.unkeyedContainer()
            for item in items { try container.encode(item) }
        case .object(let members):
            var container = encoder.container(keyedBy: Key.self)
            for member in members { try container.encode(member.value, forKey: Key(member.key)) }
        }
    }
}

/// `text` as a JSON string literal.
package func jsonQuoted(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
