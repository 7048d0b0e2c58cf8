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

/// The qat binary the CLI tests run: $QAT_BIN, else the debug build (`swift build --build-tests`
/// builds it alongside the tests).
func qatBinary() throws -> String {
    let path = ProcessInfo.processInfo.environment["QAT_BIN"] ?? repositoryPath(".build/debug/qat")
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw XCTSkip("\(path) is not built (run swift build first, or set QAT_BIN)")
    }
    return path
}

/// Runs `qat` (or another executable) with `arguments` and returns its status and output.
func runQAT(_ arguments: [String], executable: String? = nil, environment: [String: String] = [:],
            directory: String = repositoryRoot) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try executable ?? qatBinary())
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("qat-run-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let (out, err) = (folder + "/stdout", folder + "/stderr")
    _ = FileManager.default.createFile(atPath: out, contents: nil)
    _ = FileManager.default.createFile(atPath: err, contents: nil)
    let outHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    let errHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
    process.standardOutput = outHandle
    process.standardError = errHandle
    try process.run()
    process.waitUntilExit()
    try outHandle.close()
    try errHandle.close()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    return (process.terminationStatus, try String(contentsOfFile: out, encoding: .utf8), try String(contentsOfFile: err, encoding: .utf8))
}

/// examples/debug-walkthrough/run.sh end to end, with the quick limits.
final class DebugWalkthroughTests: XCTestCase {
    func testWalkthroughFindsConfirmsAndFixesTheSensitiveLayer() throws {
        let binary = try qatBinary()
        let folder = try makeTemporaryFolder(self)
        let result = try runQAT([repositoryPath("examples/debug-walkthrough/run.sh")], executable: "/bin/bash",
                                environment: ["QAT_BIN": binary, "QAT_WALKTHROUGH_QUICK": "1", "QAT_WALKTHROUGH_DIR": folder])
        XCTAssertEqual(result.status, 0, result.stdout + result.stderr)
        let text = result.stdout
        // sensitivity ranks conv2 first, compare shows a rounding (not clipping) problem, INT16 fixes it.
        XCTAssertTrue(text.contains("   1  conv2"), text)
        XCTAssertTrue(text.contains("most sensitive layer: conv2"), text)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/compare-before.html"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/fixed-int16.json"))
        let plan = try RetrainConfig.load(file: folder + "/fixed-int16.json").resolve(for: DebugFixtures.lenetSpec)
        XCTAssertEqual(plan.layer(named: "conv2")?.quantizer?.activationType, .int16)
        // The summary at the end: "float: X%", "before: … Y%", "after, INT16: … Z%", "after, skip: … W%".
        func accuracy(_ label: String) -> Double? {
            guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix(label) }),
                  let number = line.split(separator: " ").last(where: { $0.hasSuffix("%") }) else { return nil }
            return Double(number.dropLast())
        }
        let before = try XCTUnwrap(accuracy("before:"), text)
        let after = try XCTUnwrap(accuracy("after, INT16:"), text)
        let skipped = try XCTUnwrap(accuracy("after, skip:"), text)
        let float = try XCTUnwrap(accuracy("float:"), text)
        XCTAssertLessThan(before, float - 20, text)
        XCTAssertGreaterThan(after, float - 3, text)
        XCTAssertGreaterThan(skipped, float - 3, text)
    }
}
