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

/// What `qat compare` and `qat sensitivity` decide from a checkpoint and a config, now in QATDebug:
/// QAT vs float, refusals, the note when a config's layer rules give way, the overrides.
final class DebugSubjectTests: XCTestCase {
    let retrainConfig = repositoryPath("Configs/retrain.json")

    /// A QAT LeNet-5 checkpoint (the default plan, calibrated) in a temporary folder.
    func qatCheckpoint() throws -> String {
        let model = try DebugFixtures.fakeQuantLeNet()
        let plan = try DebugFixtures.config().resolve(for: DebugFixtures.lenetSpec)
        let file = try makeTemporaryFolder(self) + "/qat.h5"
        try model.checkpointFile(attributes: ["kind": "qat", "quantization": plan.explicitConfig().jsonText()],
                                 extra: model.quantizerStateTensors()).write(to: file)
        return file
    }

    func testTheSubjectReadsTheCheckpointAndAppliesTheOverrides() throws {
        let subject = try DebugSubject(checkpoint: DebugFixtures.floatCheckpoint, configFile: retrainConfig,
                                       dataPath: "/elsewhere", trainLimit: 5)
        XCTAssertFalse(subject.isQAT)
        XCTAssertEqual(subject.spec.name, DebugFixtures.lenetSpec.name)
        XCTAssertEqual(subject.settings.dataPath, "/elsewhere")
        XCTAssertEqual(subject.settings.trainLimit, 5)
        XCTAssertEqual(subject.settings.batchSize, 64)   // from the config
        XCTAssertNotNil(try subject.plan())
        XCTAssertNil(try DebugSubject(checkpoint: DebugFixtures.floatCheckpoint, configFile: nil).plan())
    }

    func testSensitivityRefusesAFloatCheckpointWithNothingToQuantize() throws {
        let floatConfig = repositoryPath("Configs/float.json")
        let withoutRules = try DebugSubject(checkpoint: DebugFixtures.floatCheckpoint, configFile: floatConfig)
        XCTAssertThrowsError(try SensitivityAnalysis.load(withoutRules)) { error in
            XCTAssertEqual("\(error)", "\(floatConfig): the config has no layer rules, so no layer is quantized to study")
        }
        let withoutConfig = try DebugSubject(checkpoint: DebugFixtures.floatCheckpoint, configFile: nil)
        XCTAssertThrowsError(try SensitivityAnalysis.load(withoutConfig)) { error in
            XCTAssertTrue("\(error)".contains("is a float checkpoint: give --config"), "\(error)")
        }
    }

    func testAQATCheckpointKeepsItsQuantizersAndSaysTheConfigRulesAreNotUsed() throws {
        let file = try qatCheckpoint()
        let subject = try DebugSubject(checkpoint: file, configFile: retrainConfig)
        XCTAssertTrue(subject.isQAT)
        var notes: [String] = []
        let analysis = try SensitivityAnalysis.load(subject) { notes.append($0) }
        XCTAssertTrue(analysis.boundsDescription.contains("checkpoint's trained clip bounds"), analysis.boundsDescription)
        XCTAssertEqual(notes, ["note: \(file) is a QAT checkpoint: its own quantizers and trained clip bounds are studied; "
                               + "the layer rules of \(retrainConfig) are not (its runtime sections still apply)"])

        notes = []
        let report = try LayerComparison.run(subject, sides: (.float, .fakequant), deployFile: nil, batches: 2, batchSize: 8) {
            notes.append($0)
        }
        XCTAssertEqual(notes, ["note: \(file) is a QAT checkpoint: its own quantizers and trained clip bounds are used; "
                               + "the layer rules of \(retrainConfig) are not"])
        XCTAssertEqual([report.batches, report.samples], [2, 16])
        XCTAssertEqual(report.sides, ["float", "fakequant"])

        // Without a config there is nothing to say.
        notes = []
        _ = try SensitivityAnalysis.load(try DebugSubject(checkpoint: file, configFile: nil)) { notes.append($0) }
        XCTAssertEqual(notes, [])
    }

    func testAnINT8SideWithoutADeployFileFailsBeforeCalibrating() throws {
        // A data path that does not exist: calibration would fail on it, so the error shows what ran first.
        let subject = try DebugSubject(checkpoint: DebugFixtures.floatCheckpoint, configFile: retrainConfig, dataPath: "/nonexistent")
        XCTAssertThrowsError(try LayerComparison.run(subject, sides: (.fakequant, .int8), deployFile: nil, batches: 1, batchSize: 4)) { error in
            XCTAssertTrue("\(error)".contains("needs --deploy"), "\(error)")
        }
    }
}
