import Foundation

/// A user-facing input error: names the file, the key path inside it, and what is wrong.
public struct InputError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var keyPath: String
    public var message: String

    public init(file: String, keyPath: String = "", message: String) {
        self.file = file
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        keyPath.isEmpty ? "\(file): \(message)" : "\(file): \(keyPath): \(message)"
    }
}

/// A JSON object read strictly: every getter names the key path on error, and
/// `rejectUnknownKeys()` reports keys nobody asked for (typos must not pass silently).
public final class JSONObject {
    public let file: String
    public let path: String
    public let values: [String: Any]
    private var readKeys: Set<String> = []

    public init(file: String, path: String, values: [String: Any]) {
        self.file = file
        self.path = path
        self.values = values
    }

    /// Parses `data` as a JSON object; `file` is used in error messages.
    public static func parse(_ data: Data, file: String) throws -> JSONObject {
        let root = try JSONParser.parse(data, file: file)
        guard let object = root as? [String: Any] else {
            throw InputError(file: file, message: "the top level must be a JSON object")
        }
        return JSONObject(file: file, path: "", values: object)
    }

    public static func load(file: String) throws -> JSONObject {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw InputError(file: file, message: "cannot read the file (missing or unreadable)")
        }
        return try parse(data, file: file)
    }

    public var keys: [String] { values.keys.sorted() }

    /// `path.key`, with a very long key cut short (the path is only ever used in messages).
    public func keyPath(_ key: String) -> String {
        path.isEmpty ? truncatedForMessage(key) : "\(path).\(truncatedForMessage(key))"
    }

    public func error(_ key: String, _ message: String) -> InputError {
        InputError(file: file, keyPath: keyPath(key), message: message)
    }

    public func contains(_ key: String) -> Bool { values[key] != nil }

    /// The value of `key`, nil when absent; `null` is an error, not "absent" (`expected` says what
    /// the key needs, e.g. "a string"), so `"train": null` cannot pass for a missing section.
    private func raw(_ key: String, expected: String) throws -> Any? {
        readKeys.insert(key)
        if values[key] is NSNull { throw error(key, "expected \(expected), got null") }
        return values[key]
    }

    /// The value of `key` whatever its type, nil when absent; `null` is an error. Marks the key read.
    public func value(_ key: String) throws -> Any? {
        try raw(key, expected: "a value")
    }

    public func string(_ key: String) throws -> String? {
        guard let value = try raw(key, expected: "a string") else { return nil }
        guard let s = value as? String else { throw error(key, "expected a string, got \(jsonTypeName(value))") }
        return s
    }

    public func bool(_ key: String) throws -> Bool? {
        guard let value = try raw(key, expected: "true or false") else { return nil }
        guard let n = value as? NSNumber, isBoolean(n) else {
            throw error(key, "expected true or false, got \(jsonTypeName(value))")
        }
        return n.boolValue
    }

    public func double(_ key: String) throws -> Double? {
        guard let value = try raw(key, expected: "a number") else { return nil }
        guard let n = value as? NSNumber, !isBoolean(n) else {
            throw error(key, "expected a number, got \(jsonTypeName(value))")
        }
        return n.doubleValue
    }

    public func int(_ key: String) throws -> Int? {
        guard let d = try double(key) else { return nil }
        guard d == d.rounded(), abs(d) < 1e15 else { throw error(key, "expected an integer, got \(d)") }
        return Int(d)
    }

    public func intArray(_ key: String) throws -> [Int]? {
        guard let value = try raw(key, expected: "an array of integers") else { return nil }
        guard let array = value as? [Any] else { throw error(key, "expected an array of integers, got \(jsonTypeName(value))") }
        return try array.enumerated().map { index, element in
            guard let n = element as? NSNumber, !isBoolean(n), n.doubleValue == n.doubleValue.rounded() else {
                throw error("\(key)[\(index)]", "expected an integer, got \(jsonTypeName(element))")
            }
            return n.intValue
        }
    }

    public func doubleArray(_ key: String) throws -> [Double]? {
        guard let value = try raw(key, expected: "an array of numbers") else { return nil }
        guard let array = value as? [Any] else { throw error(key, "expected an array of numbers, got \(jsonTypeName(value))") }
        return try array.enumerated().map { index, element in
            guard let n = element as? NSNumber, !isBoolean(n) else {
                throw error("\(key)[\(index)]", "expected a number, got \(jsonTypeName(element))")
            }
            return n.doubleValue
        }
    }

    public func stringArray(_ key: String) throws -> [String]? {
        guard let value = try raw(key, expected: "an array of strings") else { return nil }
        guard let array = value as? [Any] else { throw error(key, "expected an array of strings, got \(jsonTypeName(value))") }
        return try array.enumerated().map { index, element in
            guard let s = element as? String else {
                throw error("\(key)[\(index)]", "expected a string, got \(jsonTypeName(element))")
            }
            return s
        }
    }

    public func object(_ key: String) throws -> JSONObject? {
        guard let value = try raw(key, expected: "an object") else { return nil }
        guard let dict = value as? [String: Any] else { throw error(key, "expected an object, got \(jsonTypeName(value))") }
        return JSONObject(file: file, path: keyPath(key), values: dict)
    }

    public func objectArray(_ key: String) throws -> [JSONObject]? {
        guard let value = try raw(key, expected: "an array of objects") else { return nil }
        guard let array = value as? [Any] else { throw error(key, "expected an array of objects, got \(jsonTypeName(value))") }
        return try array.enumerated().map { index, element in
            guard let dict = element as? [String: Any] else {
                throw error("\(key)[\(index)]", "expected an object, got \(jsonTypeName(element))")
            }
            return JSONObject(file: file, path: "\(keyPath(key))[\(index)]", values: dict)
        }
    }

    /// Throws for the first key (alphabetically) that no getter has read, listing the allowed ones.
    public func rejectUnknownKeys(allowed: [String]? = nil) throws {
        let unknown = values.keys.filter { !readKeys.contains($0) && !(allowed?.contains($0) ?? false) }.sorted()
        guard let first = unknown.first else { return }
        let known = (allowed ?? Array(readKeys)).sorted().joined(separator: ", ")
        throw error(first, "unknown key (allowed here: \(known))")
    }
}

func isBoolean(_ n: NSNumber) -> Bool {
    // Foundation on Linux bridges JSON true/false to NSNumber with objCType "c".
    String(cString: n.objCType) == "c"
}

package func jsonTypeName(_ value: Any) -> String {
    switch value {
    case let n as NSNumber: return isBoolean(n) ? "a boolean (\(n.boolValue))" : "a number (\(n))"
    case let s as String: return "a string (\"\(truncatedForMessage(s))\")"
    case is [Any]: return "an array"
    case is [String: Any]: return "an object"
    default: return "null"
    }
}
