import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Writing `destination` failed. Whatever file was there before is still there, unchanged.
public struct AtomicWriteError: Error, CustomStringConvertible {
    /// The file that was to be written.
    public var destination: String
    /// What went wrong.
    public var reason: String
    /// The error thrown by the code that filled the temporary file, if that is what failed.
    public var underlying: Error?

    public var description: String { "cannot write \(destination): \(reason)" }
}

/// Replaces files all at once, so that a crash or a full disk mid-write never leaves a
/// half-written file where a good one used to be.
///
/// The new contents go to a temporary file in the same folder (`.name.tmp-<pid>`; the same
/// folder so that the final rename stays on one file system and is atomic). The temporary is
/// flushed to disk with fsync and then renamed over the destination. On any failure the
/// temporary is removed and the destination is left as it was.
public enum AtomicFile {
    /// Lets `body` write the new contents to the temporary path it is given (for example with
    /// `HDF5File.create(at:)`, closing the file before returning), then moves them into place.
    public static func write(to destination: String,
                             using body: (_ temporaryPath: String) throws -> Void) throws {
        let temporary = temporaryPath(for: destination)
        func fail(_ reason: String, _ underlying: Error? = nil) -> AtomicWriteError {
            unlink(temporary)
            return AtomicWriteError(destination: destination, reason: reason, underlying: underlying)
        }

        // Create the temporary ourselves first: an unwritable folder then fails here with the
        // system's own reason, before any library gets involved.
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw AtomicWriteError(destination: destination,
                                   reason: "cannot create temporary file \(temporary): \(systemError())")
        }
        Glibc.close(descriptor)

        do {
            try body(temporary)
        } catch {
            throw fail("\(error)", error)
        }
        if let reason = syncToDisk(temporary) { throw fail(reason) }
        guard rename(temporary, destination) == 0 else {
            throw fail("cannot rename \(temporary) to \(destination): \(systemError())")
        }
        // Make the rename itself durable. Best effort: some file systems refuse to sync folders.
        _ = syncToDisk(folder(of: destination))
    }

    /// Atomically replaces `destination` with `data`.
    public static func write(_ data: Data, to destination: String) throws {
        try write(to: destination) { temporary in
            let descriptor = open(temporary, O_WRONLY | O_TRUNC)
            guard descriptor >= 0 else { throw PlainError("cannot open \(temporary): \(systemError())") }
            defer { Glibc.close(descriptor) }
            try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
                var offset = 0
                // write(2) may write less than asked; keep going until everything is out.
                while offset < bytes.count {
                    let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw PlainError("cannot write \(temporary): \(systemError())")
                    }
                    offset += written
                }
            }
        }
    }

    /// `.name.tmp-<pid>` beside `destination`; the pid keeps two processes from colliding.
    static func temporaryPath(for destination: String) -> String {
        guard let slash = destination.lastIndex(of: "/") else { return ".\(destination).tmp-\(getpid())" }
        let folder = destination[...slash]  // keeps the trailing slash
        let name = destination[destination.index(after: slash)...]
        return "\(folder).\(name).tmp-\(getpid())"
    }

    private static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let folder = String(path[..<slash])
        return folder.isEmpty ? "/" : folder
    }

    /// fsyncs a file or folder; returns a reason on failure.
    private static func syncToDisk(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return "cannot open \(path) to sync it: \(systemError())" }
        defer { Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else { return "cannot sync \(path) to disk: \(systemError())" }
        return nil
    }

    private static func systemError() -> String {
        String(cString: strerror(errno))
    }

    private struct PlainError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
