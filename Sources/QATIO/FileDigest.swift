import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The digest qat writes into the HDF5 user block of every file it creates, checked on the raw
/// bytes before libhdf5 parses a file (so a damaged file never reaches libhdf5's own parser,
/// which can hang or crash on malformed metadata). Layout, in docs/CHECKPOINT.md:
///
///     bytes 0..<512   "qat-digest v1 crc32 <8 hex digits> length <file size>\n", then NUL padding
///     bytes 512...    the HDF5 file proper (libhdf5 finds its signature at offset 512)
///
/// The CRC-32 (zlib's, the one of gzip and PNG) covers every byte after the user block; the
/// length is the size of the whole file. CRC-32 catches every change confined to 32 consecutive
/// bits (any flipped byte) and misses a larger random change (a zeroed block) with probability
/// 2⁻³²; truncation and appended bytes change the length, which is compared exactly.
public enum FileDigest {
    /// Size of the HDF5 user block reserved for the header (HDF5 wants a power of two ≥ 512).
    public static let userBlockSize = 512
    static let magic = "qat-digest v1 crc32 "
    /// The 8 bytes every HDF5 file starts with (at offset 0, or after a user block).
    static let hdf5Signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]

    /// What `verify` found.
    public enum Status: Equatable, Sendable {
        /// The file carries a qat digest and its bytes match it.
        case verified
        /// The file has no qat digest (written by another tool or an older qat); it is read
        /// with the structural checks only.
        case absent
    }

    /// Called with the path of every file opened without a digest, so that the CLI can say so
    /// on stderr; nil (the default) for library users.
    nonisolated(unsafe) public static var noteUndigestedFile: ((String) -> Void)?

    /// The one-line error for a file whose bytes do not match its digest.
    public static func mismatch(_ path: String) -> HDF5Error {
        HDF5Error(file: path, message: "checksum mismatch: the file is damaged")
    }

    /// Writes the header into the user block of the closed file at `path`.
    public static func seal(_ path: String) throws {
        let descriptor = open(path, O_RDWR)
        guard descriptor >= 0 else { throw ioError(path, "cannot open to write its digest") }
        defer { Glibc.close(descriptor) }
        let (crc, length) = try checksum(descriptor, path)
        var header = Array(headerLine(crc: crc, length: length).utf8)
        header += [UInt8](repeating: 0, count: userBlockSize - header.count)
        let written = header.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        guard written == userBlockSize else { throw ioError(path, "cannot write its digest") }
    }

    /// Checks the file at `path` against its digest, if it has one, reading only raw bytes.
    public static func verify(_ path: String) throws -> Status {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw ioError(path, "cannot open") }
        defer { Glibc.close(descriptor) }
        let block = try readBytes(descriptor, path, count: userBlockSize + hdf5Signature.count, at: 0)
        if block.starts(with: Array(magic.utf8)) {
            guard let expected = parseHeader(block.prefix(userBlockSize)) else { throw mismatch(path) }
            let (crc, length) = try checksum(descriptor, path)
            guard crc == expected.crc, length == expected.length else { throw mismatch(path) }
            return .verified
        }
        // A 512-byte user block that does not hold our header: our header, damaged. (Files of
        // other tools rarely have a user block; one of exactly this size is treated as ours.)
        if block.count == userBlockSize + hdf5Signature.count,
           Array(block[userBlockSize...]) == hdf5Signature, !block.starts(with: hdf5Signature) {
            throw mismatch(path)
        }
        return .absent
    }

    static func headerLine(crc: UInt32, length: Int) -> String {
        let hex = String(crc, radix: 16)
        return magic + String(repeating: "0", count: 8 - hex.count) + hex + " length \(length)\n"
    }

    /// The CRC and length a well-formed header states: the exact line `headerLine` writes,
    /// followed by NUL bytes only; nil for anything else.
    static func parseHeader(_ block: ArraySlice<UInt8>) -> (crc: UInt32, length: Int)? {
        guard block.count == userBlockSize, let newline = block.firstIndex(of: 0x0a),
              block[(newline + 1)...].allSatisfy({ $0 == 0 }) else { return nil }
        let fields = String(decoding: block[..<newline], as: UTF8.self).split(separator: " ")
        guard fields.count == 6, fields[4] == "length", fields[3].count == 8,
              let crc = UInt32(fields[3], radix: 16), let length = Int(fields[5]), length >= userBlockSize,
              headerLine(crc: crc, length: length) == String(decoding: block[...newline], as: UTF8.self)
        else { return nil }
        return (crc, length)
    }

    /// CRC-32 of every byte after the user block, and the size of the whole file.
    private static func checksum(_ descriptor: Int32, _ path: String) throws -> (crc: UInt32, length: Int) {
        var crc = CRC32.initial
        var offset = userBlockSize
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ioError(path, "cannot read")
            }
            if count == 0 { break }
            crc = chunk.withUnsafeBytes { CRC32.update(crc, UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            offset += count
        }
        return (crc, max(offset, lseekEnd(descriptor)))
    }

    /// The file size (a file shorter than the user block still reports its true size).
    private static func lseekEnd(_ descriptor: Int32) -> Int {
        Int(lseek(descriptor, 0, SEEK_END))
    }

    /// Up to `count` bytes from `offset`; fewer only at the end of the file.
    private static func readBytes(_ descriptor: Int32, _ path: String, count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let got = bytes.withUnsafeMutableBytes {
                pread(descriptor, $0.baseAddress! + filled, count - filled, off_t(offset + filled))
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw ioError(path, "cannot read")
            }
            if got == 0 { break }
            filled += got
        }
        return Array(bytes[..<filled])
    }

    private static func ioError(_ path: String, _ what: String) -> HDF5Error {
        HDF5Error(file: path, message: "\(what): \(String(cString: strerror(errno)))")
    }
}
