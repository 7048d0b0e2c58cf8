import Foundation

/// A strict RFC 8259 JSON reader over UTF-8 bytes, for the configs and records people write.
///
/// Why not `JSONSerialization`: it keeps the last of two duplicate keys (so a layer's settings can
/// silently vanish), accepts trailing commas, reports neither line nor column, and on deep nesting
/// says only "not valid JSON". None of that can be fixed from outside, because by the time it
/// returns, the duplicate and the positions are gone. This recursive-descent parser is small and
/// returns the same Foundation values (`[String: Any]`, `[Any]`, `NSNumber`, `String`, `NSNull`),
/// so `JSONObject` and `JSONValue(foundation:)` read its results unchanged.
///
/// Rules (docs/CONFIG.md, "JSON syntax"): no duplicate keys at any depth, no trailing commas, no
/// comments, no NaN/Infinity, no leading zeros, no raw control characters in strings, only the
/// escapes JSON defines with well-formed surrogate pairs, nothing but whitespace after the value,
/// at most `maxDepth` nested arrays and objects. A leading UTF-8 byte order mark is skipped.
/// Every error names the line and column (columns count characters, from 1).
struct JSONParser {
    /// Deep enough for any config (they nest 3 or 4 levels); shallow enough that the recursion
    /// stays far from the stack limit on every thread.
    static let maxDepth = 128

    private let bytes: [UInt8]
    private let file: String
    private var index = 0
    private var line = 1
    private var lineStart = 0
    private var depth = 0
    /// Where the parser is, for duplicate-key messages: object keys and array indices.
    private var path: [PathComponent] = []

    private enum PathComponent {
        case key(String)
        case index(Int)
    }

    /// Parses `data` as one JSON value; errors are `InputError`s naming `file`, line and column.
    static func parse(_ data: Data, file: String) throws -> Any {
        var parser = JSONParser(bytes: [UInt8](data), file: file)
        return try parser.document()
    }

    private init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
    }

    // MARK: Structure

    private mutating func document() throws -> Any {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { index = 3; lineStart = 3 }
        skipWhitespace()
        if index == bytes.count { throw failure("the file is empty, expected a JSON value") }
        let value = try parseValue()
        skipWhitespace()
        if index < bytes.count { throw failure("unexpected \(found()) after the end of the JSON value") }
        return value
    }

    private mutating func parseValue() throws -> Any {
        guard index < bytes.count else { throw failure("unexpected end of the file, expected a value") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try nested { try $0.parseObject() }
        case UInt8(ascii: "["): return try nested { try $0.parseArray() }
        case UInt8(ascii: "\""): return try parseString()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        case UInt8(ascii: "t"): try literal("true"); return NSNumber(value: true)
        case UInt8(ascii: "f"): try literal("false"); return NSNumber(value: false)
        case UInt8(ascii: "n"): try literal("null"); return NSNull()
        case UInt8(ascii: "/"): throw failure("comments are not allowed in JSON")
        default: throw failure("expected a value (an object, array, string, number, true, false or null), found \(found())")
        }
    }

    /// Runs `body` one nesting level deeper, refusing to go past `maxDepth`.
    private mutating func nested(_ body: (inout JSONParser) throws -> Any) throws -> Any {
        guard depth < Self.maxDepth else {
            throw failure("the nesting is too deep (more than \(Self.maxDepth) arrays and objects inside each other)")
        }
        depth += 1
        defer { depth -= 1 }
        return try body(&self)
    }

    private mutating func parseObject() throws -> Any {
        index += 1  // {
        var object: [String: Any] = [:]
        var keyLines: [String: Int] = [:]
        skipWhitespace()
        if peek(UInt8(ascii: "}")) { index += 1; return object }
        while true {
            guard peek(UInt8(ascii: "\"")) else {
                throw failure(object.isEmpty ? "expected a key in double quotes or '}', found \(found())"
                                             : "expected a key in double quotes after ',', found \(found())"
                                               + (peek(UInt8(ascii: "}")) ? " (trailing commas are not allowed)" : ""))
            }
            let keyLine = line
            let key = try parseString()
            if let firstLine = keyLines[key] {
                throw InputError(file: file, keyPath: render(path + [.key(key)]),
                                 message: "duplicate key (first on line \(firstLine), again on line \(keyLine))")
            }
            keyLines[key] = keyLine
            skipWhitespace()
            guard peek(UInt8(ascii: ":")) else { throw failure("expected ':' after the key, found \(found())") }
            index += 1
            skipWhitespace()
            path.append(.key(key))
            object[key] = try parseValue()
            path.removeLast()
            skipWhitespace()
            if peek(UInt8(ascii: "}")) { index += 1; return object }
            guard peek(UInt8(ascii: ",")) else { throw failure("expected ',' or '}' after an object member, found \(found())") }
            index += 1
            skipWhitespace()
        }
    }

    private mutating func parseArray() throws -> Any {
        index += 1  // [
        var array: [Any] = []
        skipWhitespace()
        if peek(UInt8(ascii: "]")) { index += 1; return array }
        while true {
            if peek(UInt8(ascii: "]")) { throw failure("expected a value after ',', found ']' (trailing commas are not allowed)") }
            path.append(.index(array.count))
            array.append(try parseValue())
            path.removeLast()
            skipWhitespace()
            if peek(UInt8(ascii: "]")) { index += 1; return array }
            guard peek(UInt8(ascii: ",")) else { throw failure("expected ',' or ']' after an array element, found \(found())") }
            index += 1
            skipWhitespace()
        }
    }

    private mutating func literal(_ word: String) throws {
        let expected = Array(word.utf8)
        guard bytes[index...].starts(with: expected) else {
            var end = index
            while end < bytes.count, end - index < 20, isLetter(bytes[end]) { end += 1 }
            let text = String(decoding: bytes[index..<max(end, index + 1)], as: UTF8.self)
            throw failure("unexpected '\(text)' (JSON has no NaN or Infinity; words are true, false and null)")
        }
        index += expected.count
    }

    // MARK: Strings

    private mutating func parseString() throws -> String {
        let start = index
        index += 1  // opening quote
        var buffer: [UInt8] = []
        while true {
            let runStart = index
            while index < bytes.count, bytes[index] != UInt8(ascii: "\""), bytes[index] != UInt8(ascii: "\\"), bytes[index] >= 0x20 {
                index += 1
            }
            buffer.append(contentsOf: bytes[runStart..<index])
            guard index < bytes.count else { throw failure("unexpected end of the file inside a string (missing closing '\"')") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") { index += 1; break }
            if byte < 0x20 {
                let code = String(format: "%04X", byte)
                throw failure("control character U+\(code) inside a string (write it as \\u\(code); a string cannot span lines)")
            }
            try parseEscape(into: &buffer)
        }
        guard let string = String(validating: buffer, as: UTF8.self) else {
            index = start
            throw failure("the string starting here is not valid UTF-8")
        }
        return string
    }

    /// One backslash escape, appended to `buffer` as UTF-8.
    private mutating func parseEscape(into buffer: inout [UInt8]) throws {
        index += 1  // backslash
        guard index < bytes.count else { throw failure("unexpected end of the file inside a string") }
        let simple: [UInt8: UInt8] = [UInt8(ascii: "\""): 0x22, UInt8(ascii: "\\"): 0x5C, UInt8(ascii: "/"): 0x2F,
                                      UInt8(ascii: "b"): 0x08, UInt8(ascii: "f"): 0x0C, UInt8(ascii: "n"): 0x0A,
                                      UInt8(ascii: "r"): 0x0D, UInt8(ascii: "t"): 0x09]
        if let byte = simple[bytes[index]] { buffer.append(byte); index += 1; return }
        guard bytes[index] == UInt8(ascii: "u") else {
            throw failure("invalid escape \\\(found(quoted: false)) in a string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
        }
        let escapeStart = index - 1
        let unit = try hexUnit()
        var scalarValue = UInt32(unit)
        if (0xDC00...0xDFFF).contains(unit) {
            index = escapeStart
            throw failure("invalid \\u escape: a low surrogate without a high surrogate before it")
        }
        if (0xD800...0xDBFF).contains(unit) {
            guard bytes[index...].starts(with: Array("\\u".utf8)) else {
                index = escapeStart
                throw failure("invalid \\u escape: a high surrogate must be followed by a \\u escape of a low surrogate")
            }
            index += 1
            let low = try hexUnit()
            guard (0xDC00...0xDFFF).contains(low) else {
                index = escapeStart
                throw failure("invalid \\u escape: a high surrogate must be followed by a \\u escape of a low surrogate")
            }
            scalarValue = 0x10000 + (UInt32(unit) - 0xD800) << 10 + (UInt32(low) - 0xDC00)
        }
        guard let scalar = Unicode.Scalar(scalarValue) else { throw failure("invalid \\u escape") }
        buffer.append(contentsOf: Array(String(Character(scalar)).utf8))
    }

    /// The four hex digits after a `u`, which `index` points at; errors point at the backslash.
    private mutating func hexUnit() throws -> UInt16 {
        index += 1  // u
        guard index + 4 <= bytes.count,
              let text = String(bytes: bytes[index..<index + 4], encoding: .ascii),
              text.allSatisfy(\.isHexDigit), let unit = UInt16(text, radix: 16) else {
            index -= 2
            throw failure("invalid \\u escape: expected four hex digits")
        }
        index += 4
        return unit
    }

    // MARK: Numbers

    /// RFC 8259 number grammar; integers that fit become `Int` (or `UInt64`), everything else `Double`.
    private mutating func parseNumber() throws -> Any {
        let start = index
        var isInteger = true
        if peek(UInt8(ascii: "-")) { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw failure("expected a digit after '-', found \(found())") }
        if bytes[index] == UInt8(ascii: "0"), index + 1 < bytes.count, isDigit(bytes[index + 1]) {
            throw failure("leading zeros are not allowed in a number")
        }
        skipDigits()
        if peek(UInt8(ascii: ".")) {
            isInteger = false
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw failure("expected a digit after '.', found \(found())") }
            skipDigits()
        }
        if peek(UInt8(ascii: "e")) || peek(UInt8(ascii: "E")) {
            isInteger = false
            index += 1
            if peek(UInt8(ascii: "+")) || peek(UInt8(ascii: "-")) { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw failure("expected a digit in the exponent, found \(found())") }
            skipDigits()
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if isInteger, let int = Int(text) { return NSNumber(value: int) }
        if isInteger, let unsigned = UInt64(text) { return NSNumber(value: unsigned) }
        guard let double = Double(text), double.isFinite else {
            index = start
            throw failure("the number \(truncatedForMessage(text)) is too large")
        }
        return NSNumber(value: double)
    }

    private mutating func skipDigits() {
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }

    // MARK: Helpers

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"): index += 1
            case UInt8(ascii: "\n"): index += 1; line += 1; lineStart = index
            default: return
            }
        }
    }

    private func peek(_ byte: UInt8) -> Bool { index < bytes.count && bytes[index] == byte }
    private func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
    private func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }

    /// What sits at `index`, for messages: `'x'`, "the end of the file", or a code for other bytes.
    private func found(quoted: Bool = true) -> String {
        guard index < bytes.count else { return "the end of the file" }
        let byte = bytes[index]
        if (0x21...0x7E).contains(byte) { return quoted ? "'\(Character(Unicode.Scalar(byte)))'" : "\(Character(Unicode.Scalar(byte)))" }
        if byte < 0x80 { return "a control character (0x\(String(format: "%02X", byte)))" }
        return "a non-ASCII character (byte 0x\(String(format: "%02X", byte)))"
    }

    /// An error at the current position: "line L, column C: message".
    private func failure(_ message: String) -> InputError {
        let end = min(index, bytes.count)
        // Columns count characters: every byte that does not continue a UTF-8 sequence starts one.
        let column = bytes[min(lineStart, end)..<end].reduce(1) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
        return InputError(file: file, message: "line \(line), column \(column): \(message)")
    }

    private func render(_ components: [PathComponent]) -> String {
        var text = ""
        for component in components {
            switch component {
            case .key(let key): text += (text.isEmpty ? "" : ".") + truncatedForMessage(key)
            case .index(let i): text += "[\(i)]"
            }
        }
        return text
    }
}

/// `text` cut to `limit` characters plus "…", so a 10 MB value never fills a terminal, with control
/// characters written as `\u00XX`, so an error stays one line.
package func truncatedForMessage(_ text: String, limit: Int = 60) -> String {
    let cut = text.prefix(limit + 1).count <= limit ? text : String(text.prefix(limit)) + "…"
    return escapingLineBreaks(cut)
}

/// `text` with control characters and Unicode line breaks (U+0085, U+2028, U+2029) written as
/// `\uXXXX`, so that a name read from a file, or a library's message quoting one, keeps an error
/// on one line.
package func escapingLineBreaks(_ text: String) -> String {
    func breaks(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar.value == 0x7F || scalar.value == 0x85 || scalar.value == 0x2028 || scalar.value == 0x2029
    }
    guard text.unicodeScalars.contains(where: breaks) else { return text }
    var out = ""
    for scalar in text.unicodeScalars {
        if breaks(scalar) {
            out += String(format: "\\u%04X", scalar.value)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}
