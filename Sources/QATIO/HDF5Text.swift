import Foundation

// The parts of the HDF5 wrapper that need no libhdf5 call: checks made before the library sees a
// file, and turning the library's bytes and messages into Swift strings. HDF5.swift stays the
// only file that imports CHDF5.

extension HDF5File {
    /// Throws a one-line error unless `path` is an existing, readable, ordinary file.
    static func checkReadableFile(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw HDF5Error(file: path, message: "no such file")
        }
        if isDirectory.boolValue {
            throw HDF5Error(file: path, message: "is a folder, not an HDF5 file")
        }
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw HDF5Error(file: path, message: "file is not readable (permission denied)")
        }
    }

    static func string<Bytes: Collection>(fromNulTerminated bytes: Bytes) -> String
        where Bytes.Element == CChar
    {
        String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Splits fixed-length string storage into its slots of `slotSize` bytes, each ended by a NUL
    /// or, for space-padded types, by trailing spaces.
    static func strings(fromFixedSlots bytes: [CChar], slotSize: Int, spacePadded: Bool) -> [String] {
        (0..<(bytes.count / slotSize)).map { slot in
            var text = string(fromNulTerminated: bytes[(slot * slotSize)..<((slot + 1) * slotSize)])
            if spacePadded { while text.hasSuffix(" ") { text.removeLast() } }
            return text
        }
    }

    /// The library's innermost error description as " (…)" on one line.
    static func briefLibraryDetail(_ innermost: String) -> String {
        // A failed system call is described over two lines with a timestamp, the descriptor, buffer
        // addresses and sizes; the system's own message ("No space left on device") is what matters.
        if let start = innermost.range(of: "error message = '"),
           let end = innermost[start.upperBound...].firstIndex(of: "'") {
            return " (\(innermost[start.upperBound..<end]))"
        }
        let oneLine = innermost.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        return " (\(oneLine.joined(separator: " ")))"
    }
}
