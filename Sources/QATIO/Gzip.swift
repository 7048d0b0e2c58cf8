import CZlib
import Foundation

/// zlib's gzip reader (the other use of zlib is the CRC-32 of `FileDigest`): reads a whole `.gz`
/// file (or a plain file) into memory.
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
