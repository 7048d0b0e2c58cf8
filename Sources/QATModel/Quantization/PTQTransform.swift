/// A transform of the float weights that calibration runs around itself when it starts from float
/// weights (docs/ALGORITHMS.md §2.5): Vitis AI's `include_cle` and `include_bias_corr`, or
/// `qat calibrate --cle --bias-correction`.
public enum PTQTransform: String, CaseIterable, Comparable, Sendable {
    /// Cross-layer equalization, before calibration.
    case crossLayerEqualization = "cle"
    /// Bias correction, after calibration.
    case biasCorrection = "bias_correction"

    public static func < (a: PTQTransform, b: PTQTransform) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
