// Typed attribute readers over `HDF5File.attribute(_:of:)`: plain Swift, no libhdf5 calls, so
// they live outside HDF5.swift (the one file that imports CHDF5).
extension HDF5File {
    // Typed readers: a missing attribute or one of another type gives an error saying which.

    public func stringAttribute(_ name: String, of path: String = "/") throws -> String {
        try attribute(name, of: path, expecting: "string") { if case .string(let v) = $0 { v } else { nil } }
    }

    public func int64Attribute(_ name: String, of path: String = "/") throws -> Int64 {
        try attribute(name, of: path, expecting: "int64") { if case .int64(let v) = $0 { v } else { nil } }
    }

    public func doubleAttribute(_ name: String, of path: String = "/") throws -> Double {
        try attribute(name, of: path, expecting: "float64") { if case .double(let v) = $0 { v } else { nil } }
    }

    public func stringsAttribute(_ name: String, of path: String = "/") throws -> [String] {
        try attribute(name, of: path, expecting: "string array") { if case .strings(let v) = $0 { v } else { nil } }
    }

    private func attribute<Value>(_ name: String, of path: String, expecting expected: String,
                                  _ extract: (HDF5Attribute) -> Value?) throws -> Value {
        let value = try attribute(name, of: path)
        guard let typed = extract(value) else {
            throw HDF5Error(file: self.path, object: Self.normalized(path),
                            message: "attribute '\(name)' has type \(value.typeName), expected \(expected)")
        }
        return typed
    }
}
