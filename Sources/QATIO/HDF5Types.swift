import Foundation

// The value types of the HDF5 layer. They hold no HDF5 handles, so they live apart from
// HDF5.swift, the one file that talks to the C library.

// MARK: - Errors

/// A failure reading or writing an HDF5 file: which file, which object inside it, and what went wrong.
public struct HDF5Error: Error, CustomStringConvertible, Equatable {
    /// The file on disk.
    public var file: String
    /// The object inside the file (`/parameters/conv1.weight`), or nil when the whole file is meant.
    public var object: String?
    /// What went wrong, e.g. "dataset has dtype int32, expected float32".
    public var message: String

    public init(file: String, object: String? = nil, message: String) {
        self.file = file
        self.object = object
        self.message = message
    }

    public var description: String {
        if let object { return "\(file): \(object): \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: - Element types

/// The element type of a dataset or attribute, named like NumPy dtypes.
public enum HDF5ElementType: String, CustomStringConvertible, Sendable {
    case float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64
    case string
    /// Anything this module does not read (compound, enum, reference, …).
    case other

    public var description: String { rawValue }
}

/// A Swift number type that maps one to one onto an HDF5 native type.
///
/// Only the standard conformances below are meant to exist: values are copied as raw bytes,
/// so a conforming type must have exactly the layout of `hdf5ElementType`.
public protocol HDF5Element {
    static var hdf5ElementType: HDF5ElementType { get }
}

extension Float: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .float32 } }
extension Double: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .float64 } }
extension Int8: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .int8 } }
extension Int16: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .int16 } }
extension Int32: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .int32 } }
extension Int64: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .int64 } }
extension UInt8: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .uint8 } }
extension UInt16: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .uint16 } }
extension UInt32: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .uint32 } }
extension UInt64: HDF5Element { public static var hdf5ElementType: HDF5ElementType { .uint64 } }

// MARK: - Attribute values

/// The value of an attribute. Strings are stored as variable-length UTF-8, which h5py reads
/// back as `str` and h5dump prints as text; numbers as int64 or float64, arrays as rank-1.
public enum HDF5Attribute: Equatable, Sendable {
    case string(String), int64(Int64), double(Double)
    case strings([String]), int64s([Int64]), doubles([Double])

    /// A short name for error messages: "string", "int64 array", …
    public var typeName: String {
        switch self {
        case .string: return "string"
        case .int64: return "int64"
        case .double: return "float64"
        case .strings: return "string array"
        case .int64s: return "int64 array"
        case .doubles: return "float64 array"
        }
    }
}

/// What a path inside a file names.
public enum HDF5ObjectKind: Sendable {
    case group, dataset
}

// MARK: - Paths inside a file

extension HDF5File {
    /// "/a//b/" and "a/b" both name "/a/b"; "" names the root.
    static func normalized(_ path: String) -> String {
        "/" + components(of: path).joined(separator: "/")
    }

    static func parent(of path: String) -> String {
        "/" + components(of: path).dropLast().joined(separator: "/")
    }

    static func components(of path: String) -> [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    }
}
