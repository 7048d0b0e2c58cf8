import Foundation

// Protocol buffers' text format (`key: value`, `message { ... }`), as AMCT's simple config
// (quant.cfg) is written. No schema library exists for that grammar, so this file parses the
// text into untyped fields, and `ProtoTextMessage`'s getters check them against what a reader
// asks for, as `JSONObject` does for JSON. Every error names the file, line and column.
//
// Grammar (what protobuf's text format allows, minus extensions and `Any` expansion):
//   message := field*
//   field   := name ( ":" value | ":"? "{" message "}" | ":"? "<" message ">" ) ( "," | ";" )?
//   value   := string+ | number | identifier | "[" ( value ( "," value )* )? "]"
// Strings in '…' or "…" with C escapes (adjacent strings concatenate); numbers in decimal,
// hex or octal, with an optional sign and `f` suffix; identifiers are bools and enum values;
// `#` starts a comment that runs to the end of the line.

/// A position in a text file: line and column, both counted from 1 (columns in characters).
public struct TextPosition: Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public var description: String { "line \(line), column \(column)" }
}

/// A scalar as written, before a reader gives it a type.
public enum ProtoTextScalar: Equatable, Sendable {
    case string(String)
    /// A number's text, sign included, e.g. "-0.5", "0x10", "1e-3f".
    case number(String)
    /// A bare word: true, false, an enum value, inf, nan.
    case identifier(String)
}

/// One `name: value` or `name { … }` of a message.
public struct ProtoTextField: Sendable {
    public enum Value: Sendable {
        case scalar(ProtoTextScalar)
        case message(ProtoTextMessage)
        /// `[a, b, …]`: a repeated field written as a list.
        case list([Value])
    }

    public var name: String
    public var position: TextPosition
    public var value: Value
}

/// A parsed message: its fields in file order (names may repeat: repeated fields).
public final class ProtoTextMessage: @unchecked Sendable {
    public let file: String
    /// The key path of this message in the file ("" at the top level), for messages: a field
    /// that occurs more than once gets an index, e.g. "override_layer_types[1].calibration_config".
    public private(set) var path: String
    /// Where the message's field name stood (line 1, column 1 for the top level).
    public let position: TextPosition
    public let fields: [ProtoTextField]
    /// Field names a getter asked for; `rejectUnknownFields` reports the others.
    private var readNames: Set<String> = []

    init(file: String, position: TextPosition, fields: [ProtoTextField]) {
        self.file = file
        self.path = ""
        self.position = position
        self.fields = fields
    }

    /// Parses `data` as a top-level message; `file` names it in errors.
    public static func parse(_ data: Data, file: String) throws -> ProtoTextMessage {
        var parser = ProtoTextParser(bytes: [UInt8](data), file: file)
        let root = try parser.parseTopLevel()
        root.assignPaths("")
        return root
    }

    /// Sets the key paths of this message and the messages inside it, once the whole file is read
    /// (only then is it known which fields repeat).
    private func assignPaths(_ path: String) {
        self.path = path
        var seen: [String: Int] = [:]
        var occurrences: [String: Int] = [:]
        for field in fields { occurrences[field.name, default: 0] += 1 }
        for field in fields {
            var items = [field.value]
            var isList = false
            if case .list(let values) = field.value { items = values; isList = true }
            let repeats = isList || occurrences[field.name]! > 1
            for item in items {
                let index = seen[field.name, default: 0]
                seen[field.name] = index + 1
                guard case .message(let child) = item else { continue }
                let name = truncatedForMessage(field.name) + (repeats ? "[\(index)]" : "")
                child.assignPaths(path.isEmpty ? name : "\(path).\(name)")
            }
        }
    }

    /// `path.name`.
    public func keyPath(_ name: String) -> String {
        path.isEmpty ? truncatedForMessage(name) : "\(path).\(truncatedForMessage(name))"
    }

    /// An error at `position` naming `keyPath`: "file: keyPath: line L, column C: message".
    public func error(at position: TextPosition, _ keyPath: String, _ message: String) -> InputError {
        InputError(file: file, keyPath: keyPath, message: "\(position): \(message)")
    }

    /// An error about field `field` of this message.
    public func error(_ field: ProtoTextField, _ message: String) -> InputError {
        error(at: field.position, keyPath(field.name), message)
    }

    /// Every occurrence of `name`, lists flattened, in file order; marks the name read.
    public func all(_ name: String) -> [(field: ProtoTextField, value: ProtoTextField.Value)] {
        readNames.insert(name)
        var found: [(ProtoTextField, ProtoTextField.Value)] = []
        for field in fields where field.name == name {
            if case .list(let items) = field.value {
                for item in items { found.append((field, item)) }
            } else {
                found.append((field, field.value))
            }
        }
        return found
    }

    /// The field `name` of a non-repeated field, nil when absent; given twice is an error.
    public func single(_ name: String) throws -> ProtoTextField? {
        readNames.insert(name)
        let matches = fields.filter { $0.name == name }
        guard let first = matches.first else { return nil }
        if matches.count > 1 {
            throw error(matches[1], "given twice (first on line \(first.position.line)); it is not a repeated field")
        }
        if case .list = first.value { throw error(first, "expected one value, got a list; it is not a repeated field") }
        return first
    }

    public func bool(_ name: String) throws -> Bool? {
        guard let field = try single(name) else { return nil }
        return try boolValue(field.value, of: field)
    }

    public func string(_ name: String) throws -> String? {
        guard let field = try single(name) else { return nil }
        return try stringValue(field.value, of: field)
    }

    /// A float or double field: any finite number.
    public func double(_ name: String) throws -> Double? {
        guard let field = try single(name) else { return nil }
        return try doubleValue(field.value, of: field)
    }

    /// An integer field whose value must lie in `range` (e.g. int32's, uint32's).
    public func int(_ name: String, range: ClosedRange<Int>) throws -> Int? {
        guard let field = try single(name) else { return nil }
        return try intValue(field.value, of: field, range: range)
    }

    /// An enum field: an identifier (or a quoted name) among `allowed`.
    public func enumValue(_ name: String, allowed: [String]) throws -> String? {
        guard let field = try single(name) else { return nil }
        let text: String
        switch field.value {
        case .scalar(.identifier(let word)), .scalar(.string(let word)): text = word
        default: throw error(field, "expected one of \(allowed.joined(separator: ", ")), got \(describe(field.value))")
        }
        guard allowed.contains(text) else {
            throw error(field, "unsupported value \(truncatedForMessage(text)) (allowed: \(allowed.joined(separator: ", ")))")
        }
        return text
    }

    /// A message field, nil when absent.
    public func message(_ name: String) throws -> ProtoTextMessage? {
        guard let field = try single(name) else { return nil }
        return try messageValue(field.value, of: field)
    }

    /// A repeated string field, each value with its field (for positions in messages).
    public func strings(_ name: String) throws -> [(value: String, field: ProtoTextField)] {
        try all(name).map { (try stringValue($0.value, of: $0.field), $0.field) }
    }

    /// A repeated message field.
    public func messages(_ name: String) throws -> [ProtoTextMessage] {
        try all(name).map { try messageValue($0.value, of: $0.field) }
    }

    /// Throws on the first field no getter asked for, listing `allowed` (the message's fields).
    public func rejectUnknownFields(allowed: [String]) throws {
        if let field = fields.first(where: { !readNames.contains($0.name) }) {
            throw error(field, "unknown field (allowed here: \(allowed.joined(separator: ", ")))")
        }
    }

    // MARK: Typed values

    private func boolValue(_ value: ProtoTextField.Value, of field: ProtoTextField) throws -> Bool {
        switch value {
        case .scalar(.identifier("true")), .scalar(.identifier("True")), .scalar(.identifier("t")), .scalar(.number("1")):
            return true
        case .scalar(.identifier("false")), .scalar(.identifier("False")), .scalar(.identifier("f")), .scalar(.number("0")):
            return false
        default: throw error(field, "expected true or false, got \(describe(value))")
        }
    }

    private func stringValue(_ value: ProtoTextField.Value, of field: ProtoTextField) throws -> String {
        guard case .scalar(.string(let text)) = value else {
            throw error(field, "expected a quoted string, got \(describe(value))")
        }
        return text
    }

    private func doubleValue(_ value: ProtoTextField.Value, of field: ProtoTextField) throws -> Double {
        guard case .scalar(.number(let text)) = value, let number = Self.number(text), number.isFinite else {
            throw error(field, "expected a finite number, got \(describe(value))")
        }
        return number
    }

    private func intValue(_ value: ProtoTextField.Value, of field: ProtoTextField, range: ClosedRange<Int>) throws -> Int {
        guard case .scalar(.number(let text)) = value, let number = Self.integer(text) else {
            throw error(field, "expected an integer, got \(describe(value))")
        }
        guard range.contains(number) else {
            throw error(field, "must be in \(range.lowerBound)...\(range.upperBound), got \(number)")
        }
        return number
    }

    private func messageValue(_ value: ProtoTextField.Value, of field: ProtoTextField) throws -> ProtoTextMessage {
        guard case .message(let message) = value else {
            throw error(field, "expected a message ({ … }), got \(describe(value))")
        }
        return message
    }

    /// How a message names a value it did not expect.
    private func describe(_ value: ProtoTextField.Value) -> String {
        switch value {
        case .scalar(.string(let text)): return "the string \"\(truncatedForMessage(text))\""
        case .scalar(.number(let text)): return "the number \(truncatedForMessage(text))"
        case .scalar(.identifier(let word)): return truncatedForMessage(word)
        case .message: return "a message"
        case .list: return "a list"
        }
    }

    /// A decimal float (with optional `f` suffix) or an integer; nil when the text is neither.
    static func number(_ text: String) -> Double? {
        if let integer = integer(text) { return Double(integer) }
        var body = Substring(text)
        if body.hasSuffix("f") || body.hasSuffix("F") { body = body.dropLast() }
        // Swift's Double(_:) also reads "0x1p3", "inf" and "nan"; the text format's floats are decimal.
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }) else { return nil }
        return Double(body)
    }

    /// A decimal, hex (0x…) or octal (0…) integer with an optional leading minus; nil otherwise.
    static func integer(_ text: String) -> Int? {
        var body = Substring(text)
        let negative = body.first == "-"
        if negative || body.first == "+" { body = body.dropFirst() }
        let magnitude: Int?
        if body.hasPrefix("0x") || body.hasPrefix("0X") {
            magnitude = Int(body.dropFirst(2), radix: 16)
        } else if body.count > 1, body.first == "0" {
            magnitude = Int(body.dropFirst(), radix: 8)
        } else {
            magnitude = body.allSatisfy({ $0.isASCII && $0.isNumber }) ? Int(body) : nil
        }
        guard let magnitude else { return nil }
        return negative ? -magnitude : magnitude
    }
}

/// The tokenizer and recursive-descent parser behind `ProtoTextMessage.parse`.
private struct ProtoTextParser {
    let bytes: [UInt8]
    let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private var depth = 0
    /// Deeper nesting is refused, so hostile input cannot exhaust the stack.
    static let maxDepth = 100

    init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3; lineStart = 3 }
    }

    mutating func parseTopLevel() throws -> ProtoTextMessage {
        let fields = try parseFields(closing: nil)
        return ProtoTextMessage(file: file, position: TextPosition(line: 1, column: 1), fields: fields)
    }

    /// Fields up to `closing` (`}` or `>`), or to the end of the file at the top level.
    private mutating func parseFields(closing: UInt8?) throws -> [ProtoTextField] {
        var fields: [ProtoTextField] = []
        while true {
            skipSpaceAndComments()
            guard index < bytes.count else {
                if let closing { throw failure("missing \"\(Character(Unicode.Scalar(closing)))\": the file ends inside a message") }
                return fields
            }
            if let closing, bytes[index] == closing {
                index += 1
                return fields
            }
            fields.append(try parseField())
            skipSpaceAndComments()
            if index < bytes.count, bytes[index] == UInt8(ascii: ",") || bytes[index] == UInt8(ascii: ";") { index += 1 }
        }
    }

    private mutating func parseField() throws -> ProtoTextField {
        let position = here
        guard let name = identifier() else { throw failure("expected a field name, got \(describeNext())") }
        skipSpaceAndComments()
        var hasColon = false
        if peek == UInt8(ascii: ":") {
            hasColon = true
            index += 1
            skipSpaceAndComments()
        }
        if let next = peek, next == UInt8(ascii: "{") || next == UInt8(ascii: "<") {
            return ProtoTextField(name: name, position: position, value: try parseMessage(at: position))
        }
        guard hasColon else { throw failure("expected \":\" or \"{\" after field name \(truncatedForMessage(name)), got \(describeNext())") }
        if peek == UInt8(ascii: "[") {
            return ProtoTextField(name: name, position: position, value: try parseList())
        }
        return ProtoTextField(name: name, position: position, value: .scalar(try parseScalar()))
    }

    /// A message in braces; `position` (its field's name, or its own brace in a list) is where
    /// messages about the whole message point. Key paths are set once the file is read.
    private mutating func parseMessage(at position: TextPosition) throws -> ProtoTextField.Value {
        let closing = bytes[index] == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: ">")
        guard depth < Self.maxDepth else { throw failure("messages nested more than \(Self.maxDepth) deep") }
        index += 1
        depth += 1
        defer { depth -= 1 }
        let fields = try parseFields(closing: closing)
        return .message(ProtoTextMessage(file: file, position: position, fields: fields))
    }

    /// `[v, v, …]`: scalars or messages.
    private mutating func parseList() throws -> ProtoTextField.Value {
        index += 1
        var items: [ProtoTextField.Value] = []
        skipSpaceAndComments()
        if peek == UInt8(ascii: "]") { index += 1; return .list(items) }
        while true {
            skipSpaceAndComments()
            if let next = peek, next == UInt8(ascii: "{") || next == UInt8(ascii: "<") {
                items.append(try parseMessage(at: here))
            } else {
                items.append(.scalar(try parseScalar()))
            }
            skipSpaceAndComments()
            switch peek {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"): index += 1; return .list(items)
            default: throw failure("expected \",\" or \"]\" in a list, got \(describeNext())")
            }
        }
    }

    private mutating func parseScalar() throws -> ProtoTextScalar {
        guard let next = peek else { throw failure("expected a value, got the end of the file") }
        if next == UInt8(ascii: "\"") || next == UInt8(ascii: "'") {
            var text = try parseString()
            // Adjacent strings concatenate, as in C.
            while true {
                skipSpaceAndComments()
                guard let quote = peek, quote == UInt8(ascii: "\"") || quote == UInt8(ascii: "'") else { break }
                text += try parseString()
            }
            return .string(text)
        }
        if next == UInt8(ascii: "-") || next == UInt8(ascii: "+") || next == UInt8(ascii: ".") || isDigit(next) {
            let start = index
            let position = here
            index += 1
            // A signed identifier: -inf, -nan.
            if next == UInt8(ascii: "-"), let word = identifier() { return .identifier("-" + word) }
            while let byte = peek, isDigit(byte) || isLetter(byte) || byte == UInt8(ascii: ".")
                    || ((byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")) && (bytes[index - 1] | 0x20) == UInt8(ascii: "e")) {
                index += 1
            }
            let text = String(decoding: bytes[start..<index], as: UTF8.self)
            guard ProtoTextMessage.number(text) != nil else {
                throw ProtoTextParser.failure(file: file, at: position, "malformed number \(truncatedForMessage(text))")
            }
            return .number(text)
        }
        if let word = identifier() { return .identifier(word) }
        throw failure("expected a value (a string, number, true/false or an enum name), got \(describeNext())")
    }

    /// A quoted string with C escapes; it cannot span lines.
    private mutating func parseString() throws -> String {
        let quote = bytes[index]
        index += 1
        var result: [UInt8] = []
        while true {
            guard index < bytes.count, bytes[index] != UInt8(ascii: "\n") else {
                throw failure("unterminated string (a string cannot span lines)")
            }
            let byte = bytes[index]
            index += 1
            if byte == quote { break }
            guard byte == UInt8(ascii: "\\") else { result.append(byte); continue }
            let backslash = TextPosition(line: line, column: here.column - 1)
            guard index < bytes.count else { throw failure("unterminated string") }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "n"): result.append(0x0A)
            case UInt8(ascii: "t"): result.append(0x09)
            case UInt8(ascii: "r"): result.append(0x0D)
            case UInt8(ascii: "a"): result.append(0x07)
            case UInt8(ascii: "b"): result.append(0x08)
            case UInt8(ascii: "f"): result.append(0x0C)
            case UInt8(ascii: "v"): result.append(0x0B)
            case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "?"): result.append(escape)
            case UInt8(ascii: "x"), UInt8(ascii: "X"):
                var value = 0, digits = 0
                while digits < 2, index < bytes.count, let digit = hexDigit(bytes[index]) { value = value * 16 + digit; digits += 1; index += 1 }
                guard digits > 0 else { throw failure("\\x must be followed by a hex digit") }
                result.append(UInt8(value))
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var value = Int(escape - UInt8(ascii: "0")), digits = 1
                while digits < 3, index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(bytes[index]) {
                    value = value * 8 + Int(bytes[index] - UInt8(ascii: "0")); digits += 1; index += 1
                }
                guard value < 256 else { throw failure("octal escape above \\377") }
                result.append(UInt8(value))
            default:
                throw Self.failure(file: file, at: backslash, "unknown escape \\\(Character(Unicode.Scalar(escape))) in a string")
            }
        }
        guard let text = String(validating: result, as: UTF8.self) else { throw failure("the string is not valid UTF-8") }
        return text
    }

    // MARK: Characters

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private var here: TextPosition {
        let end = min(index, bytes.count)
        let column = bytes[min(lineStart, end)..<end].reduce(1) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
        return TextPosition(line: line, column: column)
    }

    private mutating func skipSpaceAndComments() {
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\n"): index += 1; line += 1; lineStart = index
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), 0x0B, 0x0C: index += 1
            case UInt8(ascii: "#"):
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
            default: return
            }
        }
    }

    /// A name or bare word: [A-Za-z_][A-Za-z0-9_]*.
    private mutating func identifier() -> String? {
        guard let first = peek, isLetter(first) || first == UInt8(ascii: "_") else { return nil }
        let start = index
        while let byte = peek, isLetter(byte) || isDigit(byte) || byte == UInt8(ascii: "_") { index += 1 }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
    private func isLetter(_ byte: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) }
    private func hexDigit(_ byte: UInt8) -> Int? {
        if isDigit(byte) { return Int(byte - UInt8(ascii: "0")) }
        let lower = byte | 0x20
        return (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(lower) ? Int(lower - UInt8(ascii: "a")) + 10 : nil
    }

    /// The next character, for messages ("\"}\"", "the end of the file").
    private func describeNext() -> String {
        guard index < bytes.count else { return "the end of the file" }
        let byte = bytes[index]
        if byte >= 0x21 && byte < 0x7F { return "\"\(Character(Unicode.Scalar(byte)))\"" }
        return String(format: "byte 0x%02X", byte)
    }

    private func failure(_ message: String) -> InputError {
        Self.failure(file: file, at: here, message)
    }

    static func failure(file: String, at position: TextPosition, _ message: String) -> InputError {
        InputError(file: file, message: "\(position): \(message)")
    }
}
