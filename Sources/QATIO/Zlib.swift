import CZlib
import Foundation

/// The only door to zlib: CRC-32 (for `FileDigest`) and the gzip reader.
package enum CRC32 {
    /// The CRC-32 of an empty input, where a running checksum starts.
    package static let initial = UInt32(crc32(0, nil, 0))

    /// `crc` extended by `bytes`.
    package static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(crc32(uLong(crc), bytes.bindMemory(to: Bytef.self).baseAddress, uInt(bytes.count)))
    }
}

/// Reads a whole `.gz` file (or a plain file) into memory.
package enum Gzip {
    package static func readFile(_ path: String) throws -> [UInt8] {
        guard let handle = gzopen(path, "rb") else {
            throw InputError(file: path, message: "cannot open the file (missing or unreadable)")
        }
        defer { gzclose(handle) }
        var bytes: [UInt8] = []
        // Growing by doubling would briefly hold two copies of a large file: reserve it whole.
        bytes.reserveCapacity(uncompressedSize(path) ?? 0)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(handle, $0.baseAddress, UInt32($0.count)) }
            if n < 0 { throw InputError(file: path, message: "corrupt gzip data") }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<Int(n)])
        }
        // gzread stops quietly at a truncated stream; zlib reports it through gzerror.
        var code: Int32 = 0
        _ = gzerror(handle, &code)
        if code != Z_OK && code != Z_STREAM_END { throw InputError(file: path, message: "corrupt or truncated gzip data") }
        return bytes
    }

    /// A gzip file's size once decompressed, from its trailer (ISIZE: the size mod 2³², little-endian),
    /// or the size of a plain file. Only a hint for reserving memory: gzread decides what is read.
    private static func uncompressedSize(_ path: String) -> Int? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let magic = try? handle.read(upToCount: 2), let end = try? handle.seekToEnd() else { return nil }
        guard magic == Data([0x1F, 0x8B]) else { return Int(end) }
        guard end >= 4, (try? handle.seek(toOffset: end - 4)) != nil, let trailer = try? handle.read(upToCount: 4), trailer.count == 4 else {
            return nil
        }
        let size = trailer.reversed().reduce(0) { $0 << 8 | Int($1) }
        return size <= 1 << 31 ? size : nil   // a damaged trailer must not reserve gigabytes
    }
}
