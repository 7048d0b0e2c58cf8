/// An error the user caused and can fix (a file, a config key, data, a diverging run), as opposed
/// to a bug. Its description names the file, key path or layer; the CLI prints it on one line
/// and exits 1, and anything that is not a `UserFacingError` propagates as a crash worth reporting.
public protocol UserFacingError: Error, CustomStringConvertible {}

extension InputError: UserFacingError {}
extension AtomicWriteError: UserFacingError {}
extension HDF5Error: UserFacingError {}
