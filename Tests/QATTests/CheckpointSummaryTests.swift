import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
import QAT

/// `qat inspect`'s summary, read from the file alone.
final class CheckpointSummaryTests: XCTestCase {
    func testTheSummaryListsQuantizersInModelOrderWithTheirState() throws {
        let spec = try ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))
        let model = try Model(spec: spec, seed: 1)
        let config = try RetrainConfig.parse(JSONObject.parse(Data(createDefaultConfig(for: spec).utf8), file: "default"))
        model.applyQuantization(try config.resolve(for: spec))
        model.fakeQuantizers[0].activation.scale = 0.25
        let file = model.checkpointFile(attributes: [CheckpointFile.RunKey.kind: "qat"],
                                        counters: [CheckpointFile.RunKey.epoch: 2, CheckpointFile.RunKey.step: 7],
                                        extra: model.quantizerStateTensors().merging(["optimizer/a": .scalar(1)]) { a, _ in a })
        let summary = try CheckpointSummary(checkpoint: file, path: "test.h5")
        XCTAssertEqual(summary.kind, "qat")
        XCTAssertEqual([summary.epoch, summary.step], [2, 7])
        XCTAssertNil(summary.configHash)
        XCTAssertEqual(summary.quantizers.map(\.layer), model.fakeQuantizers.map(\.layerName))
        XCTAssertEqual(summary.quantizers[0].activationScale, 0.25)
        XCTAssertEqual(summary.quantizers[0].clipMax, model.fakeQuantizers[0].activation.clipMax.value.storage[0])
        XCTAssertEqual(summary.quantizers[0].weightScales, model.fakeQuantizers[0].weight.scales)
        XCTAssertEqual(summary.optimizerTensorCount, 1)

        let float = try CheckpointSummary(checkpoint: try Model(spec: spec).checkpointFile(), path: "float.h5")
        XCTAssertEqual(float.kind, "float")
        XCTAssertTrue(float.quantizers.isEmpty)
    }
}
