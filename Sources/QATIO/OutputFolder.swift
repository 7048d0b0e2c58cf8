import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Checked when a run starts, so that a bad output path fails in the first second rather than at
/// the final save: output folders must be creatable and writable.
public enum OutputFolder {
    /// Creates `folder` if needed and proves it writable by creating and removing a probe file.
    /// `setting` names the config key or flag the folder came from.
    public static func requireWritable(_ folder: String, setting: String) throws {
        let path = folder.isEmpty ? "." : folder
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw InputError(file: path, keyPath: setting, message: "is a file, not a folder")
            }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw InputError(file: path, keyPath: setting, message: "cannot create the output folder")
            }
        }
        let probe = (path as NSString).appendingPathComponent(".qat-write-probe-\(getpid())")
        let descriptor = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw InputError(file: path, keyPath: setting, message: "output folder is not writable (\(reason))")
        }
        Glibc.close(descriptor)
        unlink(probe)
    }

    /// The folder a file path lies in ("." for a bare name).
    public static func folder(of file: String) -> String {
        let folder = (file as NSString).deletingLastPathComponent
        return folder.isEmpty ? "." : folder
    }
}
