import ArgumentParser
import Foundation
import QAT

/// Where `qat eval` and `qat verify` read their test set: a Fashion-MNIST IDX folder (`--data`,
/// the default) or the `data` section of a run config (`--config`), which also reads HDF5 and
/// `.npy` files (docs/DATASETS.md) exactly as `qat train` does.
struct TestDataOptions: ParsableArguments {
    @Option(help: "Folder of Fashion-MNIST IDX files (default: \(FashionMNIST.defaultPath)).") var data: String?
    @Option(help: "Run config whose data section gives the test set (IDX, HDF5 or npy: docs/DATASETS.md).") var config: String?
    @Option(name: .customLong("test-limit"), help: "Use only the first N test images (default: the config's data.test_limit).")
    var testLimit: Int?

    func validate() throws {
        if data != nil && config != nil { throw ValidationError("give at most one of --data and --config") }
        if let testLimit, testLimit <= 0 { throw ValidationError("--test-limit must be positive") }
    }

    /// The IDX folder named in errors about IDX files.
    var folder: String { data ?? FashionMNIST.defaultPath }

    /// The test split. `inputShape` is the model's [C, H, W]: with `--config` it decides an
    /// undeclared layout and is what channels and mean/std are checked against.
    func loadTest(inputShape: [Int]?) throws -> (test: Dataset, folder: String) {
        guard let config else {
            return (try FashionMNIST.load(folder: folder, split: .test, limit: testLimit), folder)
        }
        if let bytes = FileManager.default.contents(atPath: config), ConfigFormat.isProtoText(bytes) {
            throw InputError(file: config, message: "is an \(ConfigFormat.amctSimpleProtoText.name), which has no data "
                             + "section: give --data, or a JSON run config with a data section")
        }
        let settings = try RunSettings.parse(JSONObject.load(file: config))
        let test = try settings.data.load(.test, limit: testLimit ?? settings.testLimit, inputShape: inputShape, configFile: config)
        return (test, settings.dataPath)
    }
}
