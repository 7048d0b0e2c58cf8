import Foundation
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// Shared helpers of the Debug*Tests: a LeNet-5 from the shipped float checkpoint, quantized
/// by a config and calibrated with IFMR on the first 64 training images.
enum DebugFixtures {
    static let floatCheckpoint = repositoryPath("Checkpoints/lenet5-float.h5")
    static let lenetSpec = try! ModelSpec.load(file: repositoryPath("Configs/models/lenet5.json"))

    static func config(_ json: String? = nil, spec: ModelSpec = lenetSpec) throws -> RetrainConfig {
        try RetrainConfig.parse(JSONObject.parse(Data((json ?? createDefaultConfig(for: spec)).utf8), file: "test.json"))
    }

    static func calibrationBatch() throws -> Tensor {
        try fashionMNIST(.train, count: 64).batch(Array(0..<64)[...]).images
    }

    static func fakeQuantLeNet(_ json: String? = nil) throws -> Model {
        let plan = try config(json).resolve(for: lenetSpec)
        return try DebugModels.fakeQuant(checkpoint: floatCheckpoint, plan: plan, calibration: { [try calibrationBatch()] })
    }

    /// A config: the default with extra keys merged into one layer's retrain_data_config.
    static func defaultConfig(with layer: String, data: [String: Any]) throws -> String {
        var root = try JSONSerialization.jsonObject(with: Data(createDefaultConfig(for: lenetSpec).utf8)) as! [String: Any]
        var entry = root[layer] as! [String: Any]
        var dataConfig = entry["retrain_data_config"] as! [String: Any]
        for (k, v) in data { dataConfig[k] = v }
        entry["retrain_data_config"] = dataConfig
        root[layer] = entry
        return String(decoding: try JSONSerialization.data(withJSONObject: root), as: UTF8.self)
    }
}

/// `qat compare`: a model against itself, float against fake quant, clipping, JSON and HTML.
final class DebugCompareTests: XCTestCase {
    func compare(_ a: any LayerOutputSource, _ b: any LayerOutputSource, batches: Int = 2, batchSize: Int = 32) throws -> ComparisonReport {
        let test = try fashionMNIST(.test, count: batches * batchSize)
        let comparison = LayerComparison(spec: DebugFixtures.lenetSpec, reference: a, candidate: b)
        comparison.add(test, batchSize: batchSize)
        return comparison.report()
    }

    func testAModelAgainstItselfIsIdentical() throws {
        let fakeQuant = try DebugFixtures.fakeQuantLeNet()
        let float = try DebugModels.float(checkpoint: DebugFixtures.floatCheckpoint)
        let floatAgain = try DebugModels.float(checkpoint: DebugFixtures.floatCheckpoint)
        for (a, b) in [(ModelOutputSource(name: "fakequant", model: fakeQuant), ModelOutputSource(name: "fakequant", model: fakeQuant)),
                       (ModelOutputSource(name: "float", model: float), ModelOutputSource(name: "float", model: floatAgain))] {
            let report = try compare(a, b)
            XCTAssertEqual(report.rows.map(\.layer), DebugFixtures.lenetSpec.layers.map(\.name))
            XCTAssertEqual(report.samples, 64)
            XCTAssertEqual(report.agreement, 1)
            XCTAssertEqual(report.accuracy?[0], report.accuracy?[1])
            for row in report.rows {
                XCTAssertEqual(row.metrics.cosine, 1, accuracy: 1e-12, row.layer)
                XCTAssertEqual(row.metrics.mse, 0, row.layer)
                XCTAssertEqual(row.metrics.l1, 0, row.layer)
                XCTAssertEqual(row.metrics.kl, 0, accuracy: 1e-15, row.layer)
                XCTAssertEqual(row.metrics.maxAbsDifference, 0, row.layer)
                XCTAssertEqual(row.metrics.sqnrDB, ComparisonMetrics.sqnrCapDB, row.layer)   // +∞, capped
                XCTAssertEqual(row.metrics.a, row.metrics.b, row.layer)
            }
            XCTAssertTrue(report.textReport().contains("≥200"), report.textReport())
        }
    }

    func testFloatAgainstFakeQuantMeasuresClippingOnTheQuantizedLayersInput() throws {
        // conv1 reads the normalised image (about [−0.81, 2.02]); bounds [−0.5, 1] clip both ends.
        let json = try DebugFixtures.defaultConfig(with: "conv1", data: ["clip_max": 1.0, "clip_min": -0.5])
        let fakeQuant = try DebugFixtures.fakeQuantLeNet(json)
        let float = try DebugModels.float(checkpoint: DebugFixtures.floatCheckpoint)
        let report = try compare(ModelOutputSource(name: "float", model: float), ModelOutputSource(name: "fakequant", model: fakeQuant))
        XCTAssertEqual(report.sides, ["float", "fakequant"])
        let quantized: Set = ["conv1", "conv2", "fc1", "fc2", "fc3"]
        for row in report.rows {
            XCTAssertEqual(row.clipping != nil, quantized.contains(row.layer), row.layer)
            XCTAssertLessThan(row.metrics.cosine, 1, row.layer)
            XCTAssertGreaterThan(row.metrics.cosine, 0.9, row.layer)
            XCTAssertGreaterThan(row.metrics.mse, 0, row.layer)
            XCTAssertLessThan(row.metrics.sqnrDB, ComparisonMetrics.sqnrCapDB, row.layer)
        }
        // conv1's clipping, counted by hand on the same 64 images against the grid-aligned bounds.
        let conv1 = report.rows[0].clipping!
        let q = QuantizationGrid(bits: 8, scale: 1.5 / 255, offset: Int((-128 + 0.5 / (1.5 / 255)).rounded(.toNearestOrEven)))
        XCTAssertEqual(conv1.quantization.scale, q.scale, accuracy: 1e-7)
        XCTAssertEqual(conv1.quantization.offset, q.offset)
        let images = try fashionMNIST(.test, count: 64).normalizedImages
        XCTAssertEqual(conv1.count, images.count)
        XCTAssertEqual(conv1.below, images.filter { $0 < conv1.quantization.lower }.count)
        XCTAssertEqual(conv1.above, images.filter { $0 > conv1.quantization.upper }.count)
        XCTAssertGreaterThan(conv1.fractionBelow, 0.3)   // the background pixels
        XCTAssertGreaterThan(conv1.fractionAbove, 0.05)
        XCTAssertEqual(conv1.side, "fakequant")
        // The text says where clipping is measured.
        XCTAssertTrue(report.textReport().contains("INPUT"))
        XCTAssertTrue(report.textReport().contains("clip<L"))
    }

    func testJSONAndSelfContainedHTML() throws {
        let report = try compare(ModelOutputSource(name: "float", model: try DebugModels.float(checkpoint: DebugFixtures.floatCheckpoint)),
                                 ModelOutputSource(name: "fakequant", model: try DebugFixtures.fakeQuantLeNet()), batches: 1)
        let json = try JSONSerialization.jsonObject(with: Data(try report.jsonString().utf8)) as! [String: Any]
        let layers = json["layers"] as! [[String: Any]]
        XCTAssertEqual(layers.count, 12)
        let metrics = layers[0]["metrics"] as! [String: Any]
        for key in ["cosine", "mse", "l1", "kl", "sqnr_db", "max_abs_diff", "a", "b"] { XCTAssertNotNil(metrics[key], key) }
        XCTAssertNotNil((layers[0]["clipping"] as? [String: Any])?["fraction_above"])
        XCTAssertNil(layers[1]["clipping"])
        XCTAssertEqual(try JSONDecoder().decode(ComparisonReport.self, from: Data(try report.jsonString().utf8)).rows.count, 12)

        let html = report.htmlReport()
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertTrue(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart\""))
        XCTAssertEqual(html.components(separatedBy: "class=\"bar\"").count - 1, 2 * 12, "a cosine and an SQNR bar per layer")
        // No network: the only "http" is the SVG namespace.
        XCTAssertEqual(html.components(separatedBy: "http").count - 1, 1)
        XCTAssertEqual(html.components(separatedBy: "http://www.w3.org/2000/svg").count - 1, 1)
        for external in ["<script", "<link", "<img", "url(", "@import", "src="] { XCTAssertFalse(html.contains(external), external) }
        for layer in DebugFixtures.lenetSpec.layers { XCTAssertTrue(html.contains(">\(layer.name)<"), layer.name) }

        // A hostile layer name is escaped everywhere it is written: the chart stays well-formed XML.
        var hostile = report
        hostile.rows[0].layer = "fc1<script>&'\""
        hostile.unmatchedLayers = ["<b>x</b>"]
        let hostileHTML = hostile.htmlReport()
        XCTAssertFalse(hostileHTML.contains("<script") || hostileHTML.contains("<b>"))
        XCTAssertTrue(hostileHTML.contains(">fc1&lt;script&gt;&amp;&#39;&quot;<"))
        let chart = hostileHTML[hostileHTML.range(of: "<svg")!.lowerBound..<hostileHTML.range(of: "</svg>")!.upperBound]
        let parser = XMLParser(data: Data(chart.utf8))
        XCTAssertTrue(parser.parse(), "the chart is well-formed XML: \(String(describing: parser.parserError))")
    }

    func testCommandLine() throws {
        let folder = try makeTemporaryFolder(self)
        let htmlFile = folder + "/report.html"
        let result = try runQAT(["compare", "--checkpoint", DebugFixtures.floatCheckpoint, "--config", repositoryPath("Configs/retrain.json"),
                                 "--batches", "1", "--batch-size", "32", "--train-limit", "256", "--json", "--html", htmlFile])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["sides"] as? [String], ["float", "fakequant"])
        XCTAssertEqual(json["samples"] as? Int, 32)
        XCTAssertTrue(try String(contentsOfFile: htmlFile, encoding: .utf8).contains("<svg"))

        let int8 = try runQAT(["compare", "--checkpoint", DebugFixtures.floatCheckpoint, "--sides", "fakequant,int8"])
        XCTAssertEqual(int8.status, 1)
        XCTAssertTrue(int8.stderr.contains("needs --deploy"), int8.stderr)
        let unknown = try runQAT(["compare", "--checkpoint", DebugFixtures.floatCheckpoint, "--sides", "float,int4"])
        XCTAssertEqual(unknown.status, 64)
        XCTAssertTrue(unknown.stderr.contains("int4"), unknown.stderr)
        let noConfig = try runQAT(["compare", "--checkpoint", DebugFixtures.floatCheckpoint])
        XCTAssertEqual(noConfig.status, 1)
        XCTAssertTrue(noConfig.stderr.contains("float checkpoint") && noConfig.stderr.contains("--config"), noConfig.stderr)
    }
}
