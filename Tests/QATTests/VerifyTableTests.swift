import XCTest
import QATCore
@testable import QATDeploy

/// The text table of `qat verify`.
final class VerifyTableTests: XCTestCase {
    /// Long layer names (as ONNX import makes them) widen the first column instead of pushing the
    /// other columns out of line; short names keep the old 16-character column.
    func testColumnsStayAlignedWithLongLayerNames() {
        let long = "blocks_blocks_3_block_block_6_reduce_Conv"
        var report = DeployVerification(layers: [.init(name: "stem", count: 100, equal: 100, maxDifference: 0),
                                                 .init(name: long, count: 100, equal: 99, maxDifference: 2)])
        report.samples = 1
        report.equalPredictions = 1
        let lines = report.table().split(separator: "\n").map(String.init)
        let column = long.count + 2
        XCTAssertEqual(lines[0].range(of: "input codes")?.lowerBound.utf16Offset(in: lines[0]), column)
        XCTAssertEqual(lines[1], "stem".padded(to: column) + "100".padded(to: 14) + "100.0000%".padded(to: 12) + "0")
        XCTAssertEqual(lines[2], long + "  " + "100".padded(to: 14) + "99.0000%".padded(to: 12) + "2   FAIL")

        let short = DeployVerification(layers: [.init(name: "conv1", count: 1, equal: 1, maxDifference: 0)]).table()
        XCTAssertTrue(short.hasPrefix("layer           input codes   equal       max diff\nconv1           1"), short)
    }
}
