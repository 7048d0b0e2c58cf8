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

/// The repository root, found from this file's path, so tests can read Configs/.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

func repositoryPath(_ relative: String) -> String { repositoryRoot + "/" + relative }

/// Runs a program from the repository root; returns its status and stdout + stderr together.
func runProgram(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// A fresh temporary folder, removed when the test ends.
func makeTemporaryFolder(_ test: XCTestCase) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("qat-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.path
}

/// Loads the first `count` Fashion-MNIST samples of a split (the real dataset, from Debian's package).
func fashionMNIST(_ split: FashionMNIST.Split, count: Int) throws -> Dataset {
    try FashionMNIST.load(folder: FashionMNIST.defaultPath, split: split, limit: count)
}

/// Asserts that `body` throws an InputError whose text contains every one of `fragments`.
func assertInputError<T>(_ body: @autoclosure () throws -> T, mentions fragments: [String],
                         file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \(fragments)", file: file, line: line)
    } catch let error as InputError {
        for fragment in fragments {
            XCTAssertTrue(error.description.contains(fragment), "\"\(error)\" should mention \"\(fragment)\"", file: file, line: line)
        }
    } catch {
        XCTFail("expected InputError, got \(error)", file: file, line: line)
    }
}

extension XCTestCase {
    /// Runs the debug `qat` binary that `swift build --build-tests` builds; (exit code, output).
    func qat(_ arguments: [String]) throws -> (Int32, String) {
        let binary = repositoryPath(".build/debug/qat")
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            XCTFail("\(binary) is missing: run `swift build --build-tests` (make test does)")
            return (-1, "")
        }
        return try runProgram(binary, arguments)
    }
}
