import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Removes what interrupted atomic writes left behind. `AtomicFile` writes `.NAME.tmp-PID` beside
/// its destination and renames it into place; a process killed in between leaves the temporary.
/// The next run that writes into the same folder calls `removeStale(in:)`, which deletes only
/// files of exactly that pattern whose PID is no longer a running process (a concurrent writer's
/// temporary is left alone).
public enum TempFileCleanup {
    /// Deletes stale temporaries in `folder`; returns the names removed. A missing folder is fine.
    @discardableResult
    public static func removeStale(in folder: String) -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return [] }
        var removed: [String] = []
        for name in names.sorted() {
            guard let pid = temporaryOwner(name), !isRunning(pid) else { continue }
            let path = (folder as NSString).appendingPathComponent(name)
            if unlink(path) == 0 { removed.append(name) }
        }
        return removed
    }

    /// The PID in a name of the form `.NAME.tmp-PID` (NAME non-empty, PID decimal), or nil.
    static func temporaryOwner(_ name: String) -> pid_t? {
        guard name.hasPrefix("."), let marker = name.range(of: ".tmp-", options: .backwards),
              marker.lowerBound > name.index(after: name.startIndex) else { return nil }
        let digits = name[marker.upperBound...]
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let pid = pid_t(digits), pid > 0 else { return nil }
        return pid
    }

    /// True if `pid` names a live process (ours included). EPERM means it exists but is not ours.
    static func isRunning(_ pid: pid_t) -> Bool {
        if pid == getpid() { return true }
        return kill(pid, 0) == 0 || errno == EPERM
    }
}
