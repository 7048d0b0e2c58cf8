import QATIO
import QATModel

/// What `--model` and `model.spec` name: a spec file, or an ONNX file imported in memory
/// (recognised by its `.onnx` extension), which brings its weights along.
public struct ModelSource {
    public var spec: ModelSpec
    /// The ONNX file's weights as a float checkpoint; nil for a spec file.
    public var weights: CheckpointFile?

    public static func isONNX(_ file: String) -> Bool { file.lowercased().hasSuffix(".onnx") }

    public static func load(file: String) throws -> ModelSource {
        guard isONNX(file) else { return ModelSource(spec: try ModelSpec.load(file: file), weights: nil) }
        let imported = try ImportedModel.load(onnxFile: file)
        return ModelSource(spec: imported.spec, weights: imported.checkpoint)
    }
}
