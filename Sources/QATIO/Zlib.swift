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
}
