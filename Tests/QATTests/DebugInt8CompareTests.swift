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

/// `qat compare` with the INT8 engine as one side: train briefly, deploy, compare.
final class DebugInt8CompareTests: XCTestCase {
    func testFakeQuantAgainstINT8IsNearlyIdenticalLayerByLayer() throws {
        let folder = try makeTemporaryFolder(self)
        let checkpoint = folder + "/qat.h5", deployed = folder + "/int8.h5"
        let train = try runQAT(["train", "--config", "Configs/retrain.json", "--epochs", "1", "--train-limit", "512",
                                "--test-limit", "128", "--output", checkpoint])
        XCTAssertEqual(train.status, 0, train.stderr + train.stdout)
        let deploy = try runQAT(["deploy", "--checkpoint", checkpoint, "--output", deployed])
        XCTAssertEqual(deploy.status, 0, deploy.stderr + deploy.stdout)
        let compare = try runQAT(["compare", "--checkpoint", checkpoint, "--deploy", deployed, "--sides", "fakequant,int8",
                                  "--batches", "2", "--batch-size", "64", "--json"])
        XCTAssertEqual(compare.status, 0, compare.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(compare.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(json["sides"] as? [String], ["fakequant", "int8"])
        let layers = try XCTUnwrap(json["layers"] as? [[String: Any]])
        let compared = Dictionary(uniqueKeysWithValues: layers.compactMap { layer -> (String, Double)? in
            guard let name = layer["layer"] as? String, let metrics = layer["metrics"] as? [String: Any],
                  let cosine = metrics["cosine"] as? Double else { return nil }
            return (name, cosine)
        })
        // The INT8 engine reports fused outputs under the ReLU's name and the logits as fc3.
        for layer in ["relu1", "pool1", "relu2", "fc3"] {
            XCTAssertGreaterThan(try XCTUnwrap(compared[layer], "\(layer) not compared: \(compared.keys.sorted())"), 0.9999, layer)
        }
    }
}
