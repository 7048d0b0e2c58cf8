import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

final class HDF5Tests: XCTestCase {
    private var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory
            .appendingPathComponent("qat-hdf5-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        chmod(folder.path, 0o755)  // in case a test left it read-only
        try? FileManager.default.removeItem(at: folder)
    }

    private func path(_ name: String) -> String { folder.appendingPathComponent(name).path }

    /// The raw bytes of an array, so NaN payloads and -0.0 compare exactly.
    private func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    /// Runs `body`, expecting an HDF5Error, and returns it.
    private func hdf5Error(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> HDF5Error? {
        do {
            try body()
            XCTFail("expected an HDF5Error", file: file, line: line)
        } catch let error as HDF5Error {
            return error
        } catch {
            XCTFail("expected an HDF5Error, got \(error)", file: file, line: line)
        }
        return nil
    }

    // MARK: Datasets

    func testTensorsRoundTripBitForBit() throws {
        let special: [Float] = [
            0, -0.0, 1, -1, .pi, .leastNonzeroMagnitude, -.leastNonzeroMagnitude,
            .leastNormalMagnitude / 3, .leastNormalMagnitude, .greatestFiniteMagnitude,
            .infinity, -.infinity, Float(nan: 0x1234, signaling: false), -.nan,
        ]
        var rank4 = Tensor(shape: [2, 3, 4, 5])
        for i in 0..<rank4.count { rank4[flat: i] = i < special.count ? special[i] : Float(i) * 0.1 - 3 }
        let tensors: [String: Tensor] = [
            "/scalar": .scalar(-0.0),
            "/vector": Tensor(shape: [special.count], storage: special),
            "/deep/inside/rank4": rank4,
            "/empty": Tensor(shape: [0, 3]),
        ]
        let file = try HDF5File.create(at: path("t.h5"))
        for (name, tensor) in tensors { try file.write(tensor, at: name) }
        try file.close()

        let reopened = try HDF5File.open(at: path("t.h5"))
        for (name, tensor) in tensors {
            let back = try reopened.readTensor(at: name)
            XCTAssertEqual(back.shape, tensor.shape, name)
            XCTAssertEqual(bytes(back.storage), bytes(tensor.storage), name)
            XCTAssertEqual(try reopened.shape(at: name), tensor.shape)
            XCTAssertEqual(try reopened.elementType(at: name), .float32)
        }
    }

    private func checkRoundTrip<T: HDF5Element>(_ values: [T], shape: [Int], in file: HDF5File,
                                                line: UInt = #line) throws {
        let name = "/typed/\(T.self)"
        try file.write(values, shape: shape, at: name)
        let back = try file.read(T.self, at: name)
        XCTAssertEqual(back.shape, shape, "\(T.self)", line: line)
        XCTAssertEqual(bytes(back.values), bytes(values), "\(T.self)", line: line)
        XCTAssertEqual(try file.elementType(at: name), T.hdf5ElementType, line: line)
    }

    func testEveryElementTypeRoundTrips() throws {
        let file = try HDF5File.create(at: path("typed.h5"))
        try checkRoundTrip([Int8.min, -1, 0, 1, .max, 7], shape: [2, 3], in: file)
        try checkRoundTrip([Int16.min, -1, 0, .max], shape: [4], in: file)
        try checkRoundTrip([Int32.min, 0, .max, 42], shape: [1, 2, 1, 2], in: file)
        try checkRoundTrip([Int64.min, .max], shape: [2], in: file)
        try checkRoundTrip([UInt8.max, 0, 128], shape: [3], in: file)
        try checkRoundTrip([UInt16.max, 0], shape: [2], in: file)
        try checkRoundTrip([UInt32.max, 0], shape: [2], in: file)
        try checkRoundTrip([UInt64.max, 0, 1 << 63], shape: [3], in: file)
        try checkRoundTrip([-0.0, .leastNonzeroMagnitude, Double(nan: 7, signaling: false), .infinity],
                           shape: [2, 2], in: file)
        try checkRoundTrip([Float(-0.0)], shape: [], in: file)
        try checkRoundTrip([Int64](), shape: [0], in: file)
        try file.close()
        // And again after a reopen, as the stored bytes rather than the library's caches.
        let reopened = try HDF5File.open(at: path("typed.h5"))
        XCTAssertEqual(try reopened.read(UInt64.self, at: "typed/UInt64").values, [.max, 0, 1 << 63])
        XCTAssertEqual(try reopened.read(Int8.self, at: "/typed/Int8").shape, [2, 3])
    }

    func testDatasetErrorsNameObjectAndProblem() throws {
        let file = try HDF5File.create(at: path("e.h5"))
        try file.write([Int32(1), 2], shape: [2], at: "/parameters/conv1.weight")

        let mismatch = hdf5Error { _ = try file.readTensor(at: "/parameters/conv1.weight") }
        XCTAssertEqual(mismatch?.file, path("e.h5"))
        XCTAssertEqual(mismatch?.object, "/parameters/conv1.weight")
        XCTAssertEqual(mismatch?.message, "dataset has dtype int32, expected float32")

        let missing = hdf5Error { _ = try file.readTensor(at: "parameters/conv2.weight") }
        XCTAssertEqual(missing?.message, "no dataset /parameters/conv2.weight")
        XCTAssertTrue(missing?.description.contains(path("e.h5")) ?? false)

        let badShape = hdf5Error { try file.write([Float(1)], shape: [2, 2], at: "/x") }
        XCTAssertEqual(badShape?.message, "shape [2, 2] needs 4 values, got 1")
        let onGroup = hdf5Error { _ = try file.readTensor(at: "/parameters") }
        XCTAssertEqual(onGroup?.message, "is a group, expected a dataset")
        try file.close()

        let readOnly = try HDF5File.open(at: path("e.h5"))
        XCTAssertEqual(hdf5Error { try readOnly.write(.scalar(1), at: "/y") }?.message, "file is open read-only")
    }

    func testGroupsChildrenAndExistence() throws {
        let file = try HDF5File.create(at: path("g.h5"))
        try file.write(.scalar(1), at: "/a/b/c")
        try file.write(.scalar(2), at: "a/z")
        try file.createGroup(at: "/a/m/n")
        try file.createGroup(at: "/a/m")  // already there: nothing happens
        XCTAssertEqual(try file.children(of: "/a"), ["b", "m", "z"])
        XCTAssertEqual(try file.children(), ["a"])
        XCTAssertTrue(file.exists("/"))
        XCTAssertTrue(file.exists("/a/b/c"))
        XCTAssertFalse(file.exists("/a/b/c/d"))  // below a dataset
        XCTAssertFalse(file.exists("/nope/x"))
        XCTAssertEqual(file.kind(at: "/a/b"), .group)
        XCTAssertEqual(file.kind(at: "/a/b/c"), .dataset)
        XCTAssertNil(file.kind(at: "/q"))

        try file.write(Tensor(shape: [2], storage: [3, 4]), at: "/a/z")  // replaces
        XCTAssertEqual(try file.readTensor(at: "/a/z").storage, [3, 4])
        try file.remove("/a/b")
        XCTAssertEqual(try file.children(of: "/a"), ["m", "z"])
        XCTAssertNotNil(hdf5Error { _ = try file.children(of: "/a/z") })
        try file.close()
        try file.close()  // idempotent
    }

    // MARK: Attributes

    func testAttributesRoundTripOnRootGroupsAndDatasets() throws {
        let longJSON = "[" + (0..<5000).map { "{\"name\": \"layer\($0)\"}" }.joined(separator: ",") + "]"
        let values: [String: HDF5Attribute] = [
            "text": .string("µ-law ✓ \"quoted\""),
            "empty_text": .string(""),
            "long": .string(longJSON),
            "count": .int64(.min),
            "ratio": .double(-0.0),
            "names": .strings(["conv1.weight", "", "fc.bias"]),
            "no_names": .strings([]),
            "steps": .int64s([1, -2, .max]),
            "rates": .doubles([0.1, .infinity]),
        ]
        let file = try HDF5File.create(at: path("a.h5"))
        try file.write(.scalar(0), at: "/g/d")
        for object in ["/", "/g", "/g/d"] {
            for (name, value) in values { try file.setAttribute(name, to: value, on: object) }
        }
        try file.setAttribute("count", to: .int64(5), on: "/g")  // replaces
        try file.close()

        let reopened = try HDF5File.open(at: path("a.h5"))
        for object in ["/", "/g", "/g/d"] {
            XCTAssertEqual(try reopened.attributeNames(of: object), values.keys.sorted())
            for (name, value) in values where !(object == "/g" && name == "count") {
                XCTAssertEqual(try reopened.attribute(name, of: object), value, "\(object) \(name)")
            }
        }
        XCTAssertEqual(try reopened.int64Attribute("count", of: "/g"), 5)
        XCTAssertEqual(try reopened.stringAttribute("long"), longJSON)
        XCTAssertEqual(try reopened.stringsAttribute("names", of: "/g/d"), ["conv1.weight", "", "fc.bias"])
        XCTAssertEqual(try reopened.doubleAttribute("ratio").sign, .minus)
        XCTAssertTrue(try reopened.hasAttribute("text"))
        XCTAssertFalse(try reopened.hasAttribute("nope", on: "/g"))

        let wrongType = hdf5Error { _ = try reopened.int64Attribute("text", of: "/g") }
        XCTAssertEqual(wrongType?.object, "/g")
        XCTAssertEqual(wrongType?.message, "attribute 'text' has type string, expected int64")
        XCTAssertEqual(hdf5Error { _ = try reopened.attribute("nope") }?.message, "no attribute 'nope'")
    }

    // MARK: Checkpoints

    private func sampleCheckpoint() -> CheckpointFile {
        CheckpointFile(
            modelSpecJSON: #"{"layers": [{"name": "conv1", "type": "conv2d"}]}"#,
            attributes: ["config": #"{"train": {"epochs": 3}}"#, "config_hash": "abc123"],
            counters: ["epoch": 2, "step": 1234],
            // Deliberately not alphabetical: the stored order must win over name order.
            parameters: [
                NamedTensor(name: "conv1.weight", tensor: Tensor(shape: [2, 1, 3, 3], storage: (0..<18).map { Float($0) - 9 })),
                NamedTensor(name: "conv1.bias", tensor: Tensor(shape: [2], storage: [-0.0, .leastNonzeroMagnitude])),
                NamedTensor(name: "bn1.weight", tensor: Tensor(shape: [2], storage: [1, 1])),
                NamedTensor(name: "act.clip_max", tensor: .scalar(6)),
            ],
            buffers: [
                NamedTensor(name: "bn1.running_mean", tensor: Tensor(shape: [2], storage: [0.5, -0.5])),
                NamedTensor(name: "bn1.running_var", tensor: Tensor(shape: [2], storage: [1, 2])),
            ],
            extra: [
                "optimizer/momentum/conv1.weight": Tensor(shape: [2, 1, 3, 3], repeating: 0.25),
                "optimizer/learning_rate": .scalar(0.01),
                "metrics/train_loss": Tensor(shape: [3], storage: [2.3, 1.1, 0.7]),
            ])
    }

    func testCheckpointRoundTrip() throws {
        let checkpoint = sampleCheckpoint()
        try checkpoint.write(to: path("ck.h5"))
        let back = try CheckpointFile.read(from: path("ck.h5"))
        XCTAssertEqual(back, checkpoint)
        XCTAssertEqual(back.parameters.map(\.name), ["conv1.weight", "conv1.bias", "bn1.weight", "act.clip_max"])
        XCTAssertEqual(bytes(back.parameters[1].tensor.storage), bytes(checkpoint.parameters[1].tensor.storage))

        // The layout promised in CheckpointFile's documentation.
        let file = try HDF5File.open(at: path("ck.h5"))
        XCTAssertEqual(try file.stringAttribute("format"), "qat-checkpoint")
        XCTAssertEqual(try file.int64Attribute("format_version"), 1)
        XCTAssertEqual(try file.children(), ["buffers", "parameters", "state"])
        XCTAssertEqual(try file.shape(at: "/parameters/conv1.weight"), [2, 1, 3, 3])
        XCTAssertEqual(try file.shape(at: "/state/optimizer/learning_rate"), [])
        XCTAssertEqual(try file.int64Attribute("step"), 1234)

        // Writing the same checkpoint twice gives the same bytes (deterministic output).
        try checkpoint.write(to: path("ck2.h5"))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("ck.h5"))),
                       try Data(contentsOf: URL(fileURLWithPath: path("ck2.h5"))))
        // No temporary files left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(), ["ck.h5", "ck2.h5"])
    }

    func testEmptyCheckpointRoundTrips() throws {
        let checkpoint = CheckpointFile(modelSpecJSON: "[]")
        try checkpoint.write(to: path("empty.h5"))
        XCTAssertEqual(try CheckpointFile.read(from: path("empty.h5")), checkpoint)
    }

    func testCheckpointRejectsBadNamesBeforeWriting() {
        var checkpoint = sampleCheckpoint()
        checkpoint.attributes["format"] = "mine"
        XCTAssertEqual(hdf5Error { try checkpoint.write(to: path("bad.h5")) }?.message,
                       "attribute 'format' is reserved for the checkpoint format")
        checkpoint = sampleCheckpoint()
        checkpoint.parameters.append(checkpoint.parameters[0])
        XCTAssertEqual(hdf5Error { try checkpoint.write(to: path("bad.h5")) }?.object, "/parameters/conv1.weight")
        checkpoint = sampleCheckpoint()
        checkpoint.extra["metrics/train_loss/more"] = .scalar(1)
        XCTAssertNotNil(hdf5Error { try checkpoint.write(to: path("bad.h5")) })
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("bad.h5")))
    }

    func testWrongFormatAndVersionAreNamed() throws {
        let other = try HDF5File.create(at: path("other.h5"))
        try other.write(.scalar(1), at: "/x")
        try other.close()
        let notOurs = hdf5Error { _ = try CheckpointFile.read(from: path("other.h5")) }
        XCTAssertEqual(notOurs?.description, "\(path("other.h5")): not a qat checkpoint (no 'format' attribute)")

        try sampleCheckpoint().write(to: path("v2.h5"))
        let v2 = try HDF5File.create(at: path("v2.h5"))  // rewrite with a future version number
        try v2.setAttribute("format", to: .string("qat-checkpoint"))
        try v2.setAttribute("format_version", to: .int64(2))
        try v2.close()
        XCTAssertEqual(hdf5Error { _ = try CheckpointFile.read(from: path("v2.h5")) }?.message,
                       "checkpoint format version 2 is not supported (this qat reads version 1)")
    }

    func testReaderIgnoresLaterAdditionsAndChecksOrder() throws {
        let destination = path("ck.h5")
        try sampleCheckpoint().write(to: destination)
        // Copy it, adding what a later version of the format might add.
        let original = try HDF5File.open(at: destination)
        let file = try HDF5File.create(at: path("later.h5"))
        for name in try original.attributeNames() {
            try file.setAttribute(name, to: try original.attribute(name))
        }
        for group in ["parameters", "buffers"] {
            for name in try original.children(of: group) {
                try file.write(try original.readTensor(at: "\(group)/\(name)"), at: "\(group)/\(name)")
            }
            try file.setAttribute("order", to: try original.attribute("order", of: group), on: group)
        }
        try file.setAttribute("learning_rates", to: .doubles([0.1, 0.01]))
        try file.write([UInt64(1), 2, 3, 4], shape: [4], at: "/state/rng/words")
        try file.write(.scalar(1), at: "/state/optimizer/learning_rate")
        try file.write(.scalar(2), at: "/quantizers/conv1/clip_max")
        try file.close()
        try original.close()

        let later = try CheckpointFile.read(from: path("later.h5"))
        XCTAssertEqual(later.parameters, sampleCheckpoint().parameters)
        XCTAssertEqual(later.counters, sampleCheckpoint().counters)
        XCTAssertEqual(later.extra, ["optimizer/learning_rate": .scalar(1)])

        // An `order` that disagrees with the datasets is reported, naming both sides.
        let edited = try HDF5File.create(at: path("order.h5"))
        try edited.setAttribute("format", to: .string("qat-checkpoint"))
        try edited.setAttribute("format_version", to: .int64(1))
        try edited.setAttribute("model_spec", to: .string("[]"))
        try edited.write(.scalar(1), at: "/parameters/b")
        try edited.write(.scalar(2), at: "/parameters/a")
        try edited.createGroup(at: "/buffers")
        try edited.close()
        // Without `order` (a hand-made file) the names come sorted.
        XCTAssertEqual(try CheckpointFile.read(from: path("order.h5")).parameters.map(\.name), ["a", "b"])
        let again = try HDF5File.create(at: path("order.h5"))
        try again.setAttribute("format", to: .string("qat-checkpoint"))
        try again.setAttribute("format_version", to: .int64(1))
        try again.setAttribute("model_spec", to: .string("[]"))
        try again.write(.scalar(1), at: "/parameters/b")
        try again.setAttribute("order", to: .strings(["b", "c"]), on: "/parameters")
        try again.createGroup(at: "/buffers")
        try again.close()
        let mismatch = hdf5Error { _ = try CheckpointFile.read(from: path("order.h5")) }
        XCTAssertEqual(mismatch?.object, "/parameters")
        XCTAssertEqual(mismatch?.message, "listed in 'order' but missing: c")
    }

    func testTruncatedGarbageAndMissingFilesGiveErrorsNamingTheFile() throws {
        // A file qat wrote fails its digest before libhdf5 sees it (more in ChecksumTests)...
        try sampleCheckpoint().write(to: path("cut-digested.h5"))
        let digestedSize = try FileManager.default.attributesOfItem(atPath: path("cut-digested.h5"))[.size] as! Int
        XCTAssertEqual(truncate(path("cut-digested.h5"), off_t(digestedSize / 2)), 0)
        XCTAssertEqual(hdf5Error { _ = try CheckpointFile.read(from: path("cut-digested.h5")) }?.description,
                       path("cut-digested.h5") + ": checksum mismatch: the file is damaged")
        // ...and one without a digest (another tool's) is caught by libhdf5.
        try sampleCheckpoint().write(to: path("cut.h5"), withDigest: false)
        let size = try FileManager.default.attributesOfItem(atPath: path("cut.h5"))[.size] as! Int
        XCTAssertEqual(truncate(path("cut.h5"), off_t(size / 2)), 0)
        let truncated = hdf5Error { _ = try CheckpointFile.read(from: path("cut.h5")) }
        XCTAssertEqual(truncated?.file, path("cut.h5"))
        XCTAssertTrue(truncated?.description.hasPrefix(path("cut.h5") + ": not an HDF5 file or truncated") ?? false,
                      truncated?.description ?? "")

        var generator = SystemRandomNumberGenerator()
        let garbage = Data((0..<4096).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
        try garbage.write(to: URL(fileURLWithPath: path("garbage.h5")))
        let notHDF5 = hdf5Error { _ = try CheckpointFile.read(from: path("garbage.h5")) }
        XCTAssertEqual(notHDF5?.file, path("garbage.h5"))
        XCTAssertTrue(notHDF5?.message.hasPrefix("not an HDF5 file or truncated") ?? false)

        XCTAssertEqual(hdf5Error { _ = try CheckpointFile.read(from: path("absent.h5")) }?.description,
                       "\(path("absent.h5")): no such file")
    }

    // MARK: Atomic writes

    func testFailedWriteIntoReadOnlyFolderKeepsPreviousFile() throws {
        let destination = path("ck.h5")
        try sampleCheckpoint().write(to: destination)
        let before = try Data(contentsOf: URL(fileURLWithPath: destination))
        var changed = sampleCheckpoint()
        changed.counters["epoch"] = 3

        XCTAssertEqual(chmod(folder.path, 0o555), 0)
        defer { chmod(folder.path, 0o755) }
        // Root ignores folder permissions; only run this part where they really stop a write.
        let probe = path("probe")
        if FileManager.default.createFile(atPath: probe, contents: Data()) {
            unlink(probe)
        } else {
            XCTAssertThrowsError(try changed.write(to: destination)) { error in
                XCTAssertTrue("\(error)".contains(destination), "\(error)")
            }
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: destination)), before)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["ck.h5"])
        }
        chmod(folder.path, 0o755)

        // A folder that is really a regular file stops everyone, root included.
        let blocked = path("ck.h5") + "/inside.h5"
        XCTAssertThrowsError(try changed.write(to: blocked)) { error in
            XCTAssertTrue(error is AtomicWriteError)
            XCTAssertTrue("\(error)".hasPrefix("cannot write \(blocked): "), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: destination)), before)
    }

    func testFailureWhileWritingKeepsPreviousFileAndRemovesTemporary() throws {
        let destination = path("ck.h5")
        try sampleCheckpoint().write(to: destination)
        let before = try Data(contentsOf: URL(fileURLWithPath: destination))

        var broken = sampleCheckpoint()
        broken.parameters[2].tensor.storage.append(1)  // no longer matches its shape: fails mid-write
        XCTAssertThrowsError(try broken.write(to: destination)) { error in
            let atomic = error as? AtomicWriteError
            XCTAssertEqual(atomic?.destination, destination)
            XCTAssertTrue(atomic?.underlying is HDF5Error)
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: destination)), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["ck.h5"])
    }

    func testAtomicDataWrite() throws {
        let destination = path("notes.txt")
        try AtomicFile.write(Data("first".utf8), to: destination)
        try AtomicFile.write(Data("second".utf8), to: destination)
        XCTAssertEqual(try String(contentsOfFile: destination, encoding: .utf8), "second")
        XCTAssertEqual(AtomicFile.temporaryPath(for: "/a/b.h5"), "/a/.b.h5.tmp-\(getpid())")
        XCTAssertEqual(AtomicFile.temporaryPath(for: "b.h5"), ".b.h5.tmp-\(getpid())")
    }

    // MARK: Other tools

    func testH5dumpReadsCheckpoint() throws {
        let h5dump = "/usr/bin/h5dump"
        guard FileManager.default.isExecutableFile(atPath: h5dump) else { throw XCTSkip("h5dump is not installed") }
        try sampleCheckpoint().write(to: path("ck.h5"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: h5dump)
        process.arguments = [path("ck.h5")]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertTrue(text.contains("DATASET \"conv1.weight\""), text)
        XCTAssertTrue(text.contains("\"qat-checkpoint\""))
        XCTAssertTrue(text.contains("\"bn1.running_mean\""))
    }
}
