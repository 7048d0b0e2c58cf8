import QATCore
import QATIO

/// The on-disk container for a checkpoint: one HDF5 file, independent of the model classes.
///
/// Layout (format "qat-checkpoint", version 1):
///
///     /                               root group, attributes:
///         format         = "qat-checkpoint"   string
///         format_version = 1                  int64
///         model_spec     = "<JSON>"           string: the model spec the parameters belong to
///         <key>          = "<text>"           string, one per `attributes` entry (run_settings, quantization, …)
///         <key>          = <integer>          int64, one per `counters` entry (epoch, step, …)
///     /parameters/                    group; attribute `order` = parameter names, canonical order
///         <dotted.name>               float32 dataset, e.g. /parameters/conv1.weight [6, 1, 5, 5]
///     /buffers/                       group; attribute `order` = buffer names, canonical order
///         <dotted.name>               float32 dataset, e.g. /buffers/bn1.running_mean [6]
///     /state/                         group of free-form float32 datasets, `extra["a/b"]` at /state/a/b
///                                     (optimizer moments, quantizer state, RNG words, metric history)
///
/// Strings are variable-length UTF-8; h5py and h5dump read all of it. Scalars are rank-0 datasets.
///
/// Growing the format without a version bump: new state goes under /state (or a new top-level
/// group) and new root attributes under new names. Readers of version 1 ignore top-level groups,
/// /state datasets that are not float32, and root attributes that are neither a string nor an
/// int64, so files written by later versions still load here. `format_version` changes only
/// when the meaning of something already listed above changes.
public struct CheckpointFile: Equatable, Sendable {
    public static let formatName = "qat-checkpoint"
    public static let formatVersion = 1

    /// Root attribute names this type writes itself; `attributes` and `counters` may not use them.
    public static let reservedAttributeNames: Set<String> = ["format", "format_version", "model_spec"]

    /// The model spec JSON, stored as root attribute "model_spec".
    public var modelSpecJSON: String
    /// Other root string attributes, e.g. "run_settings" and "config_hash".
    public var attributes: [String: String]
    /// Root integer attributes, e.g. "epoch" and "step".
    public var counters: [String: Int64]
    /// Trainable parameters in canonical order, stored under /parameters.
    public var parameters: [NamedTensor]
    /// Non-trainable buffers (BatchNorm running statistics) in canonical order, under /buffers.
    public var buffers: [NamedTensor]
    /// Free-form float state keyed by a slash path relative to /state, e.g. "optimizer/step_size".
    public var extra: [String: Tensor]

    public init(modelSpecJSON: String, attributes: [String: String] = [:], counters: [String: Int64] = [:],
                parameters: [NamedTensor] = [], buffers: [NamedTensor] = [], extra: [String: Tensor] = [:]) {
        self.modelSpecJSON = modelSpecJSON
        self.attributes = attributes
        self.counters = counters
        self.parameters = parameters
        self.buffers = buffers
        self.extra = extra
    }

    // MARK: Writing

    /// Writes the checkpoint atomically: the file at `path` is either the previous one or the
    /// complete new one, never a mix (see `AtomicFile`).
    /// The file carries a digest of its bytes (see `FileDigest`); `withDigest: false` exists to
    /// measure what the digest costs.
    public func write(to path: String) throws {
        try write(to: path, withDigest: true)
    }

    package func write(to path: String, withDigest: Bool) throws {
        try validate(path: path)
        try AtomicFile.write(to: path) { temporary in
            let file = try HDF5File.create(at: temporary, withDigest: withDigest)
            defer { try? file.close() }
            try file.setAttribute("format", to: .string(Self.formatName))
            try file.setAttribute("format_version", to: .int64(Int64(Self.formatVersion)))
            try file.setAttribute("model_spec", to: .string(modelSpecJSON))
            // Sorted so that equal checkpoints give identical files.
            for (key, value) in attributes.sorted(by: { $0.key < $1.key }) {
                try file.setAttribute(key, to: .string(value))
            }
            for (key, value) in counters.sorted(by: { $0.key < $1.key }) {
                try file.setAttribute(key, to: .int64(value))
            }
            try Self.writeNamed(parameters, group: "/parameters", in: file)
            try Self.writeNamed(buffers, group: "/buffers", in: file)
            try file.createGroup(at: "/state")
            for (key, tensor) in extra.sorted(by: { $0.key < $1.key }) {
                try file.write(tensor, at: "/state/" + key)
            }
            try file.close()  // everything on disk before AtomicFile syncs and renames
        }
    }

    private static func writeNamed(_ tensors: [NamedTensor], group: String, in file: HDF5File) throws {
        try file.createGroup(at: group)
        for item in tensors {
            try file.write(item.tensor, at: group + "/" + item.name)
        }
        try file.setAttribute("order", to: .strings(tensors.map(\.name)), on: group)
    }

    /// Rejects names the layout cannot hold, before anything touches the disk.
    private func validate(path: String) throws {
        func fail(_ object: String, _ message: String) -> HDF5Error {
            HDF5Error(file: path, object: object, message: message)
        }
        for key in Set(attributes.keys).union(counters.keys) {
            if key.isEmpty { throw fail("/", "attribute names must not be empty") }
            if Self.reservedAttributeNames.contains(key) {
                throw fail("/", "attribute '\(key)' is reserved for the checkpoint format")
            }
            if attributes[key] != nil && counters[key] != nil {
                throw fail("/", "'\(key)' is both a string attribute and a counter")
            }
        }
        for (group, tensors) in [("/parameters", parameters), ("/buffers", buffers)] {
            var seen: Set<String> = []
            for name in tensors.map(\.name) {
                let object = group + "/" + name
                if name.isEmpty || name == "." || name.contains("/") {
                    throw fail(object, "name must be non-empty, not '.', and without '/'")
                }
                if !seen.insert(name).inserted { throw fail(object, "name appears twice") }
            }
        }
        for key in extra.keys {
            let object = "/state/" + key
            let parts = key.split(separator: "/", omittingEmptySubsequences: false)
            if parts.contains(where: { $0.isEmpty || $0 == "." }) {
                throw fail(object, "state key must be a relative path without empty or '.' parts")
            }
            // A dataset cannot also be a group: "a" and "a/b" cannot both hold a tensor.
            for end in parts.indices.dropLast() where extra[parts[...end].joined(separator: "/")] != nil {
                throw fail(object, "state key lies inside another state tensor")
            }
        }
    }

    // MARK: Reading

    /// Reads a checkpoint, checking its format name and version. Errors name the file and, where
    /// it applies, the object inside it.
    public static func read(from path: String) throws -> CheckpointFile {
        let file = try HDF5File.open(at: path)
        defer { try? file.close() }
        func fail(_ object: String?, _ message: String) -> HDF5Error {
            HDF5Error(file: path, object: object, message: message)
        }

        guard try file.hasAttribute("format") else {
            throw fail(nil, "not a qat checkpoint (no 'format' attribute)")
        }
        let format = try file.stringAttribute("format")
        guard format == formatName else {
            throw fail(nil, "not a qat checkpoint: format is '\(format)', expected '\(formatName)'")
        }
        let version = try file.int64Attribute("format_version")
        guard version == formatVersion else {
            throw fail(nil, "checkpoint format version \(version) is not supported (this qat reads version \(formatVersion))")
        }

        var checkpoint = CheckpointFile(modelSpecJSON: try file.stringAttribute("model_spec"))
        for name in try file.attributeNames() where !reservedAttributeNames.contains(name) {
            switch try file.attribute(name) {
            case .string(let text): checkpoint.attributes[name] = text
            case .int64(let number): checkpoint.counters[name] = number
            default: break  // a later version's addition: ignored, see the layout notes
            }
        }
        checkpoint.parameters = try readNamed(group: "/parameters", in: file, fail: fail)
        checkpoint.buffers = try readNamed(group: "/buffers", in: file, fail: fail)
        if file.kind(at: "/state") == .group {
            try readState(group: "/state", prefix: "", in: file, into: &checkpoint.extra)
        }
        return checkpoint
    }

    /// Reads the datasets of a group in the order its `order` attribute lists (sorted by name
    /// when a hand-made file has none), insisting that the list and the datasets agree.
    private static func readNamed(group: String, in file: HDF5File,
                                  fail: (String?, String) -> HDF5Error) throws -> [NamedTensor] {
        guard file.kind(at: group) == .group else { throw fail(group, "no group \(group)") }
        let stored = try file.children(of: group)
        let order = try file.hasAttribute("order", on: group)
            ? try file.stringsAttribute("order", of: group) : stored
        let missing = order.filter { !stored.contains($0) }
        let unlisted = stored.filter { !order.contains($0) }
        if !missing.isEmpty || !unlisted.isEmpty || Set(order).count != order.count {
            var problems: [String] = []
            if !missing.isEmpty { problems.append("listed in 'order' but missing: \(missing.joined(separator: ", "))") }
            if !unlisted.isEmpty { problems.append("not listed in 'order': \(unlisted.joined(separator: ", "))") }
            if problems.isEmpty { problems.append("'order' lists a name twice") }
            throw fail(group, problems.joined(separator: "; "))
        }
        return try order.map { NamedTensor(name: $0, tensor: try file.readTensor(at: group + "/" + $0)) }
    }

    private static func readState(group: String, prefix: String, in file: HDF5File,
                                  into extra: inout [String: Tensor]) throws {
        for child in try file.children(of: group) {
            let path = group + "/" + child
            let key = prefix + child
            switch file.kind(at: path) {
            case .group:
                try readState(group: path, prefix: key + "/", in: file, into: &extra)
            case .dataset where try file.elementType(at: path) == .float32:
                extra[key] = try file.readTensor(at: path)
            default:
                break  // not float32: a later version's addition, ignored
            }
        }
    }
}

/// A tensor with its dotted name, e.g. "conv1.weight".
public struct NamedTensor: Equatable, Sendable {
    public var name: String
    public var tensor: Tensor

    public init(name: String, tensor: Tensor) {
        self.name = name
        self.tensor = tensor
    }
}
