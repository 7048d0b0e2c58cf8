import CHDF5
import Foundation

// The only file in the project that imports CHDF5: everything else uses the Swift API below and
// never sees `hid_t` or raw pointers. Objects are addressed by slash paths ("/parameters/conv1.weight");
// a path without a leading slash means the same as with one.

// MARK: - Native types

extension HDF5ElementType {
    /// The in-memory HDF5 type for the numeric cases; nil for `string` and `other`.
    fileprivate var nativeType: hid_t? {
        switch self {
        case .float32: return qat_H5T_NATIVE_FLOAT()
        case .float64: return qat_H5T_NATIVE_DOUBLE()
        case .int8: return qat_H5T_NATIVE_INT8()
        case .int16: return qat_H5T_NATIVE_INT16()
        case .int32: return qat_H5T_NATIVE_INT32()
        case .int64: return qat_H5T_NATIVE_INT64()
        case .uint8: return qat_H5T_NATIVE_UINT8()
        case .uint16: return qat_H5T_NATIVE_UINT16()
        case .uint32: return qat_H5T_NATIVE_UINT32()
        case .uint64: return qat_H5T_NATIVE_UINT64()
        case .string, .other: return nil
        }
    }

    /// Classifies a stored type by class, size and sign; byte order does not matter because
    /// HDF5 converts it on read.
    fileprivate init(storedType type: hid_t) {
        let size = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_FLOAT:
            self = size == 4 ? .float32 : size == 8 ? .float64 : .other
        case H5T_INTEGER:
            let bySize: [Int: (signed: HDF5ElementType, unsigned: HDF5ElementType)] =
                [1: (.int8, .uint8), 2: (.int16, .uint16), 4: (.int32, .uint32), 8: (.int64, .uint64)]
            let signed = H5Tget_sign(type) == H5T_SGN_2
            self = bySize[size].map { signed ? $0.signed : $0.unsigned } ?? .other
        case H5T_STRING:
            self = .string
        default:
            self = .other
        }
    }
}

// MARK: - File

/// An open HDF5 file.
///
/// Not thread-safe: use one `HDF5File` from one thread at a time. Using a file after `close()`
/// is a programmer error and stops the program.
public final class HDF5File {
    /// The path the file was opened or created at.
    public let path: String
    /// False for files opened with `open(at:)`.
    public let isWritable: Bool
    /// For files opened for reading: whether a qat digest was found and matched (see
    /// `FileDigest`). For created files: `.verified` when `close()` writes a digest.
    public let digest: FileDigest.Status
    /// The HDF5 file id, or -1 once closed.
    private var id: hid_t

    private init(path: String, id: hid_t, isWritable: Bool, digest: FileDigest.Status) {
        self.path = path
        self.id = id
        self.isWritable = isWritable
        self.digest = digest
    }

    deinit { try? close() }

    /// Creates a new file for writing, replacing any file already at `path`. With `withDigest`
    /// (the default) the file starts with a user block that `close()` fills with a digest of the
    /// rest (`FileDigest`); without it the file is a plain HDF5 file, as other tools write.
    public static func create(at path: String, withDigest: Bool = true) throws -> HDF5File {
        silenceLibraryErrors()
        let access = try fileAccessList(path)
        defer { H5Pclose(access) }
        let creation = H5Pcreate(qat_H5P_FILE_CREATE())
        defer { if creation >= 0 { H5Pclose(creation) } }
        guard creation >= 0,
              H5Pset_userblock(creation, hsize_t(withDigest ? FileDigest.userBlockSize : 0)) >= 0 else {
            throw HDF5Error(file: path, message: "cannot set up file creation" + libraryDetail())
        }
        let id = H5Fcreate(path, qat_H5F_ACC_TRUNC(), creation, access)
        guard id >= 0 else { throw HDF5Error(file: path, message: "cannot create file" + libraryDetail()) }
        return HDF5File(path: path, id: id, isWritable: true, digest: withDigest ? .verified : .absent)
    }

    /// Opens an existing file read-only.
    public static func open(at path: String) throws -> HDF5File {
        silenceLibraryErrors()
        try checkReadableFile(path)
        // The raw bytes are checked before libhdf5 sees any of them.
        let digest = try FileDigest.verify(path)
        let access = try fileAccessList(path)
        defer { H5Pclose(access) }
        let id = H5Fopen(path, qat_H5F_ACC_RDONLY(), access)
        guard id >= 0 else {
            throw HDF5Error(file: path, message: "not an HDF5 file or truncated" + libraryDetail())
        }
        if digest == .absent { FileDigest.noteUndigestedFile?(path) }
        return HDF5File(path: path, id: id, isWritable: false, digest: digest)
    }

    /// A file-access property list whose close also closes any objects still open, so that
    /// `close()` really releases the file (needed before an atomic rename).
    private static func fileAccessList(_ path: String) throws -> hid_t {
        let access = H5Pcreate(qat_H5P_FILE_ACCESS())
        // A small sieve buffer: streamed datasets read rows of a few hundred bytes scattered over
        // the file, and the default 64 KiB buffer copied 64 KiB for each of them.
        guard access >= 0, H5Pset_fclose_degree(access, H5F_CLOSE_STRONG) >= 0,
              H5Pset_sieve_buf_size(access, 4096) >= 0 else {
            throw HDF5Error(file: path, message: "cannot set up file access" + libraryDetail())
        }
        return access
    }

    public var isOpen: Bool { id >= 0 }

    /// Closes the file, writing out everything still buffered. Calling it again does nothing.
    public func close() throws {
        guard id >= 0 else { return }
        Self.silenceLibraryErrors()
        let status = H5Fclose(id)
        id = -1
        guard status >= 0 else { throw error(nil, "cannot close file" + libraryDetail()) }
        // Only now are all of libhdf5's bytes in the file, so only now can they be digested.
        if isWritable && digest == .verified { try FileDigest.seal(path) }
    }

    /// Writes buffered data to the operating system (not necessarily to the disk: see AtomicFile).
    public func flush() throws {
        try prepare(writing: true)
        guard H5Fflush(id, H5F_SCOPE_GLOBAL) >= 0 else {
            throw error(nil, "cannot flush file" + libraryDetail())
        }
    }

    // MARK: Groups and paths

    /// True when `path` names a group or a dataset ("/" always exists).
    public func exists(_ path: String) -> Bool {
        try? prepare(writing: false)
        var prefix = ""
        // H5Lexists needs every parent to exist, so test one component at a time.
        for part in Self.components(of: path) {
            prefix += "/" + part
            guard H5Lexists(id, prefix, qat_H5P_DEFAULT()) > 0 else { return false }
        }
        return prefix.isEmpty || H5Oexists_by_name(id, prefix, qat_H5P_DEFAULT()) > 0
    }

    /// Whether `path` is a group or a dataset, or nil when nothing is there.
    public func kind(at path: String) -> HDF5ObjectKind? {
        guard exists(path) else { return nil }
        let object = H5Oopen(id, Self.normalized(path), qat_H5P_DEFAULT())
        guard object >= 0 else { return nil }
        defer { H5Oclose(object) }
        switch H5Iget_type(object) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        default: return nil
        }
    }

    /// Creates a group and any missing parents; does nothing if the group already exists.
    public func createGroup(at path: String) throws {
        try prepare(writing: true)
        var prefix = ""
        for part in Self.components(of: path) {
            prefix += "/" + part
            switch kind(at: prefix) {
            case .group: continue
            case .dataset: throw error(prefix, "is a dataset, cannot create a group there")
            case nil: break
            }
            let properties = try creationList(qat_H5P_GROUP_CREATE())
            defer { H5Pclose(properties) }
            let group = H5Gcreate2(id, prefix, qat_H5P_DEFAULT(), properties, qat_H5P_DEFAULT())
            guard group >= 0 else { throw error(prefix, "cannot create group" + libraryDetail()) }
            H5Gclose(group)
        }
    }

    /// The names of the objects directly inside a group, sorted.
    public func children(of path: String = "/") throws -> [String] {
        try prepare(writing: false)
        let path = Self.normalized(path)
        guard kind(at: path) == .group else { throw error(path, "no group \(path)") }
        let group = H5Gopen2(id, path, qat_H5P_DEFAULT())
        guard group >= 0 else { throw error(path, "cannot open group" + libraryDetail()) }
        defer { H5Gclose(group) }
        var info = H5G_info_t()
        guard H5Gget_info(group, &info) >= 0 else { throw error(path, "cannot list group" + libraryDetail()) }
        var names: [String] = []
        for index in 0..<info.nlinks {
            // First call asks for the length, second fills the buffer.
            let length = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0,
                                            qat_H5P_DEFAULT())
            guard length >= 0 else { throw error(path, "cannot list group" + libraryDetail()) }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            _ = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, index, &buffer,
                                   buffer.count, qat_H5P_DEFAULT())
            names.append(Self.string(fromNulTerminated: buffer))
        }
        return names.sorted()
    }

    /// Removes the link to a group or dataset. The space it used is not reclaimed in the file.
    public func remove(_ path: String) throws {
        try prepare(writing: true)
        let path = Self.normalized(path)
        guard path != "/", exists(path) else { throw error(path, "nothing to remove at \(path)") }
        guard H5Ldelete(id, path, qat_H5P_DEFAULT()) >= 0 else {
            throw error(path, "cannot remove" + libraryDetail())
        }
    }

    // MARK: Datasets

    /// Writes `values` in row-major order as a dataset of the given shape, creating parent groups.
    /// An empty shape writes a scalar (one value). An existing dataset at `path` is replaced.
    public func write<Element: HDF5Element>(_ values: [Element], shape: [Int], at path: String) throws {
        try prepare(writing: true)
        let path = Self.normalized(path)
        let type = Element.hdf5ElementType
        precondition(MemoryLayout<Element>.stride == H5Tget_size(type.nativeType!),
                     "\(Element.self) does not have the layout of \(type)")
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw error(path, "shape \(shape) needs \(shape.reduce(1, *)) values, got \(values.count)")
        }
        switch kind(at: path) {
        case .group: throw error(path, "is a group, cannot write a dataset there")
        case .dataset: try remove(path)
        case nil: break
        }
        let space = try makeDataspace(shape, for: path)
        defer { H5Sclose(space) }
        try createGroup(at: Self.parent(of: path))
        let properties = try creationList(qat_H5P_DATASET_CREATE())
        defer { H5Pclose(properties) }
        let dataset = H5Dcreate2(id, path, type.nativeType!, space, qat_H5P_DEFAULT(), properties,
                                 qat_H5P_DEFAULT())
        guard dataset >= 0 else { throw error(path, "cannot create dataset" + libraryDetail()) }
        defer { H5Dclose(dataset) }
        // HDF5 refuses a nil buffer even for zero values, and there is nothing to write anyway.
        guard !values.isEmpty else { return }
        let status = values.withUnsafeBytes {
            H5Dwrite(dataset, type.nativeType!, qat_H5S_ALL(), qat_H5S_ALL(), qat_H5P_DEFAULT(),
                     $0.baseAddress)
        }
        guard status >= 0 else { throw error(path, "cannot write dataset" + libraryDetail()) }
    }

    /// Reads a whole dataset whose stored dtype is exactly `Element`'s (no silent conversions).
    public func read<Element: HDF5Element>(_ type: Element.Type, at path: String) throws
        -> (shape: [Int], values: [Element])
    {
        try withDataset(at: path) { dataset, path in
            let (shape, storedType) = try describe(dataset: dataset, path: path)
            let expected = Element.hdf5ElementType
            guard storedType == expected else {
                throw error(path, "dataset has dtype \(storedType), expected \(expected)")
            }
            let count = shape.reduce(1, *)
            let values = try [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
                guard count > 0 else { return }
                let status = H5Dread(dataset, expected.nativeType!, qat_H5S_ALL(), qat_H5S_ALL(),
                                     qat_H5P_DEFAULT(), buffer.baseAddress)
                guard status >= 0 else { throw error(path, "cannot read dataset" + libraryDetail()) }
                initialized = count
            }
            return (shape, values)
        }
    }

    /// Reads rows `rows` (ascending, distinct) along a dataset's first axis into one buffer in
    /// that order, converted by the library to `Element` (so any integer labels read as int64).
    /// Consecutive rows are one hyperslab: a whole dataset is one read.
    public func readRows<Element: HDF5Element>(_ type: Element.Type, at path: String, rows: [Int]) throws -> [Element] {
        try withDataset(at: path) { dataset, path in
            let shape = try describe(dataset: dataset, path: path).shape
            guard !shape.isEmpty, rows.allSatisfy({ 0 <= $0 && $0 < shape[0] }) else { throw error(path, "has no such rows") }
            let count = rows.count * shape.dropFirst().reduce(1, *)
            guard count > 0 else { return [] }
            let fileSpace = H5Dget_space(dataset)
            let memorySpace = H5Screate_simple(Int32(shape.count), ([rows.count] + shape.dropFirst()).map { hsize_t($0) }, nil)
            defer { H5Sclose(fileSpace); H5Sclose(memorySpace) }
            var start = 0
            while start < rows.count {
                var end = start + 1
                while end < rows.count && rows[end] == rows[end - 1] + 1 { end += 1 }
                let corner = [hsize_t(rows[start])] + shape.dropFirst().map { _ in 0 }
                let extent = [hsize_t(end - start)] + shape.dropFirst().map { hsize_t($0) }
                guard H5Sselect_hyperslab(fileSpace, start == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, corner, nil, extent, nil) >= 0 else {
                    throw error(path, "cannot select rows" + libraryDetail())
                }
                start = end
            }
            return try [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
                guard H5Dread(dataset, Element.hdf5ElementType.nativeType!, memorySpace, fileSpace, qat_H5P_DEFAULT(),
                              buffer.baseAddress) >= 0 else { throw error(path, "cannot read dataset" + libraryDetail()) }
                initialized = count
            }
        }
    }

    /// The shape of a dataset; [] for a scalar.
    public func shape(at path: String) throws -> [Int] {
        try withDataset(at: path) { try describe(dataset: $0, path: $1).shape }
    }

    /// The stored element type of a dataset.
    public func elementType(at path: String) throws -> HDF5ElementType {
        try withDataset(at: path) { try describe(dataset: $0, path: $1).type }
    }

    // MARK: Attributes

    /// Sets an attribute on the group or dataset at `path` (the root by default), replacing
    /// any attribute of the same name.
    public func setAttribute(_ name: String, to value: HDF5Attribute, on path: String = "/") throws {
        try withObject(at: path, writing: true) { object, path in
            if H5Aexists(object, name) > 0, H5Adelete(object, name) < 0 {
                throw error(path, "cannot replace attribute '\(name)'" + libraryDetail())
            }
            func writeNumbers<Element: HDF5Element>(_ values: [Element], shape: [Int]) throws {
                let type = Element.hdf5ElementType.nativeType!
                try values.withUnsafeBytes {
                    try writeAttribute(name, on: object, path: path, type: type, shape: shape, bytes: $0)
                }
            }
            func writeStrings(_ texts: [String], shape: [Int]) throws {
                let type = Self.variableStringType()
                defer { H5Tclose(type) }
                // HDF5 takes variable-length strings as an array of C string pointers.
                let cStrings = texts.map { strdup($0) }
                defer { cStrings.forEach { free($0) } }
                try cStrings.withUnsafeBytes {
                    try writeAttribute(name, on: object, path: path, type: type, shape: shape, bytes: $0)
                }
            }
            switch value {
            case .string(let text): try writeStrings([text], shape: [])
            case .strings(let texts): try writeStrings(texts, shape: [texts.count])
            case .int64(let number): try writeNumbers([number], shape: [])
            case .int64s(let numbers): try writeNumbers(numbers, shape: [numbers.count])
            case .double(let number): try writeNumbers([number], shape: [])
            case .doubles(let numbers): try writeNumbers(numbers, shape: [numbers.count])
            }
        }
    }

    /// Reads an attribute. Strings may be fixed or variable length; any integer type reads as
    /// int64 and any float type as float64. Scalars give the single cases, rank-1 the arrays.
    public func attribute(_ name: String, of path: String = "/") throws -> HDF5Attribute {
        try withObject(at: path) { object, path in try readAttribute(name, of: object, path: path) }
    }

    private func readAttribute(_ name: String, of object: hid_t, path: String) throws -> HDF5Attribute {
        guard H5Aexists(object, name) > 0 else { throw error(path, "no attribute '\(name)'") }
        let attribute = H5Aopen(object, name, qat_H5P_DEFAULT())
        guard attribute >= 0 else { throw error(path, "cannot open attribute '\(name)'" + libraryDetail()) }
        defer { H5Aclose(attribute) }
        let space = H5Aget_space(attribute)
        defer { H5Sclose(space) }
        let isScalar = H5Sget_simple_extent_type(space) == H5S_SCALAR
        let count = Int(max(0, H5Sget_simple_extent_npoints(space)))
        let storedType = H5Aget_type(attribute)
        defer { H5Tclose(storedType) }
        let failure = { self.error(path, "cannot read attribute '\(name)'" + libraryDetail()) }

        switch HDF5ElementType(storedType: storedType) {
        case .string:
            let texts = try readStrings(attribute, storedType: storedType, count: count, failure)
            return isScalar ? .string(texts.first ?? "") : .strings(texts)
        case .float32, .float64:
            let numbers = try readNumbers(attribute, as: Double.self, count: count, failure)
            return isScalar ? .double(numbers.first ?? 0) : .doubles(numbers)
        case .other:
            throw error(path, "attribute '\(name)' has a type this reader does not support")
        default:
            let numbers = try readNumbers(attribute, as: Int64.self, count: count, failure)
            return isScalar ? .int64(numbers.first ?? 0) : .int64s(numbers)
        }
    }

    /// The names of all attributes on the group or dataset at `path`, sorted.
    public func attributeNames(of path: String = "/") throws -> [String] {
        try withObject(at: path) { object, path in
            var names: [String] = []
            let status = withUnsafeMutablePointer(to: &names) { namesPointer in
                H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, nil, { _, name, _, context in
                    if let name, let context {
                        context.assumingMemoryBound(to: [String].self).pointee.append(String(cString: name))
                    }
                    return 0
                }, namesPointer)
            }
            guard status >= 0 else { throw error(path, "cannot list attributes" + libraryDetail()) }
            return names.sorted()
        }
    }

    public func hasAttribute(_ name: String, on path: String = "/") throws -> Bool {
        try withObject(at: path) { object, _ in H5Aexists(object, name) > 0 }
    }

    // MARK: - Private helpers

    private func error(_ object: String?, _ message: String) -> HDF5Error {
        HDF5Error(file: path, object: object, message: message)
    }

    /// Runs `body` with the group or dataset at `path` open, and its normalized path.
    private func withObject<Result>(at path: String, writing: Bool = false,
                                    _ body: (hid_t, String) throws -> Result) throws -> Result {
        try prepare(writing: writing)
        let path = Self.normalized(path)
        let object = try openObject(path)
        defer { H5Oclose(object) }
        return try body(object, path)
    }

    /// Runs `body` with the dataset at `path` open, and its normalized path.
    private func withDataset<Result>(at path: String, _ body: (hid_t, String) throws -> Result) throws -> Result {
        try prepare(writing: false)
        let path = Self.normalized(path)
        let dataset = try openDataset(path)
        defer { H5Dclose(dataset) }
        return try body(dataset, path)
    }

    /// Checks the file is usable and silences HDF5's own error printing, which is per thread
    /// in thread-safe builds of the library.
    private func prepare(writing: Bool) throws {
        precondition(id >= 0, "HDF5 file \(path) used after close()")
        Self.silenceLibraryErrors()
        if writing && !isWritable { throw error(nil, "file is open read-only") }
    }

    private static func silenceLibraryErrors() {
        _ = noCleanupAtExit
        H5Eset_auto2(qat_H5E_DEFAULT(), nil, nil)
    }

    /// Keeps libhdf5 from running its own cleanup at process exit. That cleanup flushes every
    /// file still open in the library, and a file whose close failed (a full disk) stays open
    /// there: flushing it at exit crashed the process after the error had been printed. Every
    /// file qat writes is closed explicitly (and a failed one is discarded by `AtomicFile`), so
    /// nothing is lost. Must run before any other libhdf5 call, hence first in
    /// `silenceLibraryErrors`, which every entry point calls first.
    private static let noCleanupAtExit: Void = { H5dont_atexit() }()

    /// Creation properties without modification times, so that writing the same data twice
    /// gives byte-identical files.
    private func creationList(_ propertyClass: hid_t) throws -> hid_t {
        let properties = H5Pcreate(propertyClass)
        guard properties >= 0, H5Pset_obj_track_times(properties, false) >= 0 else {
            throw error(nil, "cannot set up object creation" + libraryDetail())
        }
        return properties
    }

    private func makeDataspace(_ shape: [Int], for path: String) throws -> hid_t {
        let space: hid_t
        if shape.isEmpty {
            space = H5Screate(H5S_SCALAR)
        } else {
            let dims = shape.map { hsize_t($0) }
            space = H5Screate_simple(Int32(dims.count), dims, nil)
        }
        guard space >= 0 else { throw error(path, "cannot create dataspace for shape \(shape)" + libraryDetail()) }
        return space
    }

    private func openObject(_ path: String) throws -> hid_t {
        guard exists(path) else { throw error(path, "no group or dataset \(path)") }
        let object = H5Oopen(id, path, qat_H5P_DEFAULT())
        guard object >= 0 else { throw error(path, "cannot open" + libraryDetail()) }
        return object
    }

    private func openDataset(_ path: String) throws -> hid_t {
        switch kind(at: path) {
        case .dataset: break
        case .group: throw error(path, "is a group, expected a dataset")
        case nil: throw error(path, "no dataset \(path)")
        }
        let dataset = H5Dopen2(id, path, qat_H5P_DEFAULT())
        guard dataset >= 0 else { throw error(path, "cannot open dataset" + libraryDetail()) }
        return dataset
    }

    private func describe(dataset: hid_t, path: String) throws -> (shape: [Int], type: HDF5ElementType) {
        let space = H5Dget_space(dataset)
        guard space >= 0 else { throw error(path, "cannot read dataspace" + libraryDetail()) }
        defer { H5Sclose(space) }
        let shape: [Int]
        switch H5Sget_simple_extent_type(space) {
        case H5S_SCALAR:
            shape = []
        case H5S_NULL:
            shape = [0]  // h5py's "Empty": no values at all
        default:
            let rank = Int(H5Sget_simple_extent_ndims(space))
            var dims = [hsize_t](repeating: 0, count: rank)
            guard rank >= 0, H5Sget_simple_extent_dims(space, &dims, nil) >= 0 else {
                throw error(path, "cannot read dataspace" + libraryDetail())
            }
            shape = dims.map { Int($0) }
        }
        let storedType = H5Dget_type(dataset)
        guard storedType >= 0 else { throw error(path, "cannot read dtype" + libraryDetail()) }
        defer { H5Tclose(storedType) }
        return (shape, HDF5ElementType(storedType: storedType))
    }

    /// A variable-length UTF-8 string type; the caller closes it.
    private static func variableStringType(cset: H5T_cset_t = H5T_CSET_UTF8) -> hid_t {
        let type = H5Tcopy(qat_H5T_C_S1())
        H5Tset_size(type, qat_H5T_VARIABLE())
        H5Tset_cset(type, cset)
        return type
    }

    /// Creates attribute `name` on `object` and writes `bytes`, which hold every value.
    private func writeAttribute(_ name: String, on object: hid_t, path: String, type: hid_t,
                                shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let space = try makeDataspace(shape, for: path)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(object, name, type, space, qat_H5P_DEFAULT(), qat_H5P_DEFAULT())
        guard attribute >= 0 else { throw error(path, "cannot create attribute '\(name)'" + libraryDetail()) }
        defer { H5Aclose(attribute) }
        // HDF5 refuses a nil buffer even for zero values, and there is nothing to write anyway.
        guard !bytes.isEmpty, H5Awrite(attribute, type, bytes.baseAddress) < 0 else { return }
        throw error(path, "cannot write attribute '\(name)'" + libraryDetail())
    }

    private func readNumbers<Element: HDF5Element>(_ attribute: hid_t, as: Element.Type, count: Int,
                                                   _ failure: () -> HDF5Error) throws -> [Element] {
        try [Element](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard count > 0 else { return }
            guard H5Aread(attribute, Element.hdf5ElementType.nativeType!, buffer.baseAddress) >= 0 else {
                throw failure()
            }
            initialized = count
        }
    }

    private func readStrings(_ attribute: hid_t, storedType: hid_t, count: Int,
                             _ failure: () -> HDF5Error) throws -> [String] {
        guard count > 0 else { return [] }
        if H5Tis_variable_str(storedType) > 0 {
            let type = Self.variableStringType(cset: H5Tget_cset(storedType))
            defer { H5Tclose(type) }
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            guard H5Aread(attribute, type, &pointers) >= 0 else { throw failure() }
            // The library allocated each string; hand them back to it.
            defer { pointers.forEach { if let pointer = $0 { H5free_memory(pointer) } } }
            return pointers.map { $0.map { String(cString: $0) } ?? "" }
        }
        // Fixed length: `count` slots of `size` bytes, padded with NULs or spaces.
        let size = H5Tget_size(storedType)
        var bytes = [CChar](repeating: 0, count: count * size)
        guard size > 0, H5Aread(attribute, storedType, &bytes) >= 0 else { throw failure() }
        return Self.strings(fromFixedSlots: bytes, slotSize: size,
                            spacePadded: H5Tget_strpad(storedType) == H5T_STR_SPACEPAD)
    }
}

/// The most specific message on HDF5's error stack, e.g. " (truncated file: eof = 512, …)", or ""
/// when the stack is empty. Call it right after the failing call: the next call clears the stack.
private func libraryDetail() -> String {
    var innermost: String?
    withUnsafeMutablePointer(to: &innermost) { context in
        // Walking upward starts at the function that detected the error.
        _ = H5Ewalk2(qat_H5E_DEFAULT(), H5E_WALK_UPWARD, { index, entry, context in
            if index == 0, let description = entry?.pointee.desc, let context {
                context.assumingMemoryBound(to: String?.self).pointee = String(cString: description)
            }
            return 0
        }, context)
    }
    return innermost.map(HDF5File.briefLibraryDetail) ?? ""
}
