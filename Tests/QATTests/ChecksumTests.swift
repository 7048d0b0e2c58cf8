import Foundation
import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
import QAT

/// Issue 14, item 1: every checkpoint and deploy file qat writes carries a digest in its HDF5
/// user block, checked on the raw bytes before libhdf5 parses the file; item 4: a full disk ends
/// in exit 1 and one line, not a crash at exit.
final class ChecksumTests: XCTestCase {
    var folder = ""
    override func setUpWithError() throws { folder = try makeTemporaryFolder(self) }

    /// A one-epoch QAT run on 64 images (its final checkpoint) and the deploy file made from it.
    func makeFiles() throws -> (checkpoint: String, deployFile: String) {
        var s = RunSettings()
        s.modelSpec = repositoryPath("Configs/models/lenet5.json")
        s.initCheckpoint = repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")
        s.trainLimit = 64
        s.testLimit = 64
        s.batchSize = 64
        s.setEpochs(1)
        s.checkpointDirectory = folder + "/run"
        let lenet = try ModelSpec.load(file: s.modelSpec)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: lenet).utf8), file: "r.json"))
        let job = try TrainingRun(configFile: "r.json", config: config, settings: s)
        job.log = { _ in }
        let train = try fashionMNIST(.train, count: 64)
        try job.prepareFreshStart(train: train)
        let checkpoint = try job.train(on: train, test: try fashionMNIST(.test, count: 64))!
        let deployFile = folder + "/int8.h5"
        try Deployer.deploy(checkpoint: checkpoint).write(to: deployFile)
        return (checkpoint, deployFile)
    }

    /// The damage a flaky disk or a careless copy does, each applied to a fresh copy of `file`.
    func damagedCopies(of file: String) throws -> [(what: String, path: String)] {
        let good = try Data(contentsOf: URL(fileURLWithPath: file))
        XCTAssertGreaterThan(good.count, 3 * 4096)
        var flipped = good
        flipped[good.count / 2] ^= 0x01
        var zeroed = good
        zeroed.replaceSubrange(4096..<8192, with: Data(count: 4096))
        var header = good
        header[2] ^= 0x20  // "qat-digest" becomes "qAt-digest"
        var digestText = good
        digestText[25] = digestText[25] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        let cases: [(String, Data)] = [
            ("one flipped bit", flipped), ("a zeroed 4 KiB block", zeroed),
            ("truncated by 100 bytes", good.prefix(good.count - 100)), ("16 bytes appended", good + Data(repeating: 0xAB, count: 16)),
            ("damaged header magic", header), ("damaged digest digits", digestText),
            ("truncated inside the user block", good.prefix(300)),
        ]
        return try cases.enumerated().map { index, item in
            let path = folder + "/damaged-\(index).h5"
            try item.1.write(to: URL(fileURLWithPath: path))
            return (item.0, path)
        }
    }

    func assertChecksumMismatch<T>(_ body: @autoclosure () throws -> T, _ path: String, _ what: String,
                                   file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), what, file: file, line: line) { error in
            XCTAssertEqual("\(error)", "\(path): checksum mismatch: the file is damaged", what, file: file, line: line)
            XCTAssertTrue(error is any UserFacingError, "\(type(of: error))", file: file, line: line)
        }
    }

    func testDamagedCheckpointsAndDeployFilesAreRejectedByEveryReader() throws {
        let (checkpoint, deployFile) = try makeFiles()
        // The good files load through the same entry points.
        XCTAssertEqual(try HDF5File.open(at: checkpoint).digest, .verified)
        XCTAssertEqual(try HDF5File.open(at: deployFile).digest, .verified)
        XCTAssertNoThrow(try Model.load(checkpoint: checkpoint))
        XCTAssertNoThrow(try Int8Model.load(deployFile: deployFile))

        let job = try TrainingRun(configFile: "r.json", config: nil, settings: {
            var s = RunSettings()
            s.modelSpec = repositoryPath("Configs/models/lenet5.json")
            return s
        }())
        job.log = { _ in }
        for (what, path) in try damagedCopies(of: checkpoint) {
            assertChecksumMismatch(try Model.load(checkpoint: path), path, "eval: " + what)
            assertChecksumMismatch(try Deployer.deploy(checkpoint: path), path, "deploy: " + what)
            assertChecksumMismatch(try job.resume(from: path, force: true), path, "resume: " + what)
            assertChecksumMismatch(try CheckpointSummary.read(from: path), path, "inspect: " + what)
        }
        for (what, path) in try damagedCopies(of: deployFile) {
            assertChecksumMismatch(try Int8Model.load(deployFile: path), path, "eval --deploy: " + what)
            assertChecksumMismatch(try DeployFile.read(from: path), path, "deploy file: " + what)
        }
    }

    func testTheHeaderIsTheDocumentedLineAndCoversEveryByteAfterTheUserBlock() throws {
        let path = folder + "/small.h5"
        let file = try HDF5File.create(at: path)
        try file.write([Float(1.5), 2.5], shape: [2], at: "/x")
        try file.close()
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[512..<520]), FileDigest.hdf5Signature, "HDF5 proper starts after the user block")
        let crc = bitwiseCRC32(bytes[512...])
        let line = String(format: "qat-digest v1 crc32 %08x length %d\n", crc, bytes.count)
        XCTAssertEqual(String(decoding: bytes[..<line.utf8.count], as: UTF8.self), line)
        XCTAssertTrue(bytes[line.utf8.count..<512].allSatisfy { $0 == 0 }, "NUL padding")
        // The check value of CRC-32 (ISO-HDLC, as zlib and Python's zlib.crc32 compute it).
        XCTAssertEqual(bitwiseCRC32(Array("123456789".utf8)[...]), 0xcbf4_3926)
        XCTAssertEqual(try HDF5File.open(at: path).read(Float.self, at: "/x").values, [1.5, 2.5])
    }

    func testFilesWithoutADigestAreStillReadAndNoted() throws {
        let shipped = repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")   // written before digests
        var noted: [String] = []
        FileDigest.noteUndigestedFile = { noted.append($0) }
        defer { FileDigest.noteUndigestedFile = nil }
        XCTAssertEqual(try HDF5File.open(at: shipped).digest, .absent)
        XCTAssertNoThrow(try Model.load(checkpoint: shipped))
        XCTAssertEqual(noted.first, shipped)

        let plain = folder + "/plain.h5"
        let file = try HDF5File.create(at: plain, withDigest: false)
        try file.write([Int32(7)], shape: [1], at: "/n")
        try file.close()
        XCTAssertEqual(try HDF5File.open(at: plain).digest, .absent)
        XCTAssertEqual(try HDF5File.open(at: plain).read(Int32.self, at: "/n").values, [7])
    }

    func testH5dumpReadsADigestedFile() throws {
        let h5dump = "/usr/bin/h5dump"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: h5dump), "hdf5-tools is not installed (make installs it)")
        let path = folder + "/dumped.h5"
        let file = try HDF5File.create(at: path)
        try file.write([Float(3)], shape: [1], at: "/parameters/w")
        try file.close()
        let (status, output) = try run(h5dump, ["-n", path])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("/parameters/w"), output)
    }

    /// The Python check printed in docs/CHECKPOINT.md, run as documented on a good, a damaged and
    /// a digest-less file.
    func testThePythonCheckInTheDocsWorks() throws {
        let python = "/usr/bin/python3"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: python), "no python3 here")
        let doc = try String(contentsOfFile: repositoryPath("docs/CHECKPOINT.md"), encoding: .utf8)
        let marker = "no h5py):\n\n```python\n"
        let snippet = try XCTUnwrap(doc.components(separatedBy: marker).dropFirst().first?.components(separatedBy: "```").first)
        let script = folder + "/check.py"
        try snippet.write(toFile: script, atomically: true, encoding: .utf8)
        let (checkpoint, deployFile) = try makeFiles()
        for good in [checkpoint, deployFile] {
            let (status, output) = try run(python, [script, good])
            XCTAssertEqual(status, 0, output)
        }
        for (what, damaged) in try damagedCopies(of: checkpoint) {
            let (status, output) = try run(python, [script, damaged])
            XCTAssertEqual(status, 1, what)
            XCTAssertTrue(output.contains("checksum mismatch") || output.contains("damaged header"), what + ": " + output)
        }
        let (status, output) = try run(python, [script, repositoryPath("Tests/Fixtures/lenet5-float-before-digests.h5")])
        XCTAssertEqual(status, 1)
        XCTAssertEqual(output, "no qat digest (or a damaged header)\n")
    }

    func testAFolderGivenAsAFileIsOneLine() throws {
        XCTAssertEqual(hdf5ErrorText { _ = try CheckpointFile.read(from: self.folder) }, "\(folder): is a folder, not an HDF5 file")
        XCTAssertEqual(hdf5ErrorText { _ = try DeployFile.read(from: self.folder) }, "\(folder): is a folder, not an HDF5 file")
    }

    func hdf5ErrorText(_ body: () throws -> Void) -> String? {
        do { try body() } catch { return "\(error)" }
        return nil
    }

    /// A full disk: one line, exit 1, no crash in libhdf5's exit handler (it used to end in
    /// signal 11 after printing the error). Needs `mount` (root); skipped where it is not allowed.
    func testAFullDiskEndsInOneLineAndExit1() throws {
        let (_, deployFile) = try makeFiles()
        _ = deployFile
        let mountPoint = folder + "/full"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let (mounted, why) = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint])
        try XCTSkipUnless(mounted == 0, "cannot mount a small tmpfs here: \(why)")
        defer { _ = try? run("/bin/umount", [mountPoint]) }
        let checkpoint = folder + "/run/final.h5"
        let output = mountPoint + "/int8.h5"
        try Data(count: 40 * 1024).write(to: URL(fileURLWithPath: mountPoint + "/filler"))
        let (status, text) = try run(repositoryPath(".build/debug/qat"), ["deploy", "--checkpoint", checkpoint, "--output", output])
        XCTAssertEqual(status, 1, text)
        XCTAssertEqual(text.split(separator: "\n").count, 1, text)
        XCTAssertTrue(text.hasPrefix("Error: cannot write \(output)") && text.hasSuffix("(No space left on device)\n"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mountPoint), ["filler"], "no temporary left")
    }

    /// Issue 14: the digest must cost under 5 % of a checkpoint's save. Saves of a LeNet-5 QAT
    /// checkpoint (with optimizer state) with and without the digest alternate over many rounds
    /// (the save includes the fsync of `AtomicFile`); the medians are compared. Figures are in
    /// docs/CHECKPOINT.md. A timing, so it runs in `make bench` (QAT_TIMED_TESTS=1), not in
    /// `make test`: the save's fsync alone varies from 6 to 11 ms between machines and loads,
    /// which moved the ratio from 3 % to 5.1 % in one CI run.
    func testTheDigestCostsUnderFivePercentOfACheckpointSave() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["QAT_TIMED_TESTS"] == "1",
                          "a timing: make bench runs it (QAT_TIMED_TESTS=1)")
        let (source, _) = try makeFiles()
        let checkpoint = try CheckpointFile.read(from: source)
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        var with: [Double] = [], without: [Double] = [], sealOnly: [Double] = []
        for round in 0..<20 {
            let path = folder + "/save-\(round).h5"
            // Alternating which goes first, so that neither always replaces a file just written.
            for digested in round % 2 == 0 ? [false, true] : [true, false] {
                let time = try seconds { try checkpoint.write(to: path, withDigest: digested) }
                if digested { with.append(time) } else { without.append(time) }
            }
            sealOnly.append(try seconds { try FileDigest.seal(path) })
        }
        func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
        let size = try FileManager.default.attributesOfItem(atPath: folder + "/save-0.h5")[.size] as! Int
        print(String(format: "checkpoint of %d bytes: save %.2f ms without the digest, %.2f ms with it; the digest alone %.3f ms (%.1f %% of a save)",
                     size, median(without) * 1e3, median(with) * 1e3, median(sealOnly) * 1e3, 100 * median(sealOnly) / median(with)))
        // The digest's own work (read back, CRC-32, one 512-byte write) is what it adds to a save;
        // comparing it with the whole save is not swamped by the fsync's noise.
        XCTAssertLessThan(median(sealOnly), 0.05 * median(with))
    }

    /// CRC-32 bit by bit (reflected, polynomial 0xEDB88320): independent of zlib's table code.
    func bitwiseCRC32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        try runProgram(executable, arguments)
    }
}
