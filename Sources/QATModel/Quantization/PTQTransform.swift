/// A transform of the float weights that calibration runs around itself when it starts from float
/// weights (docs/ALGORITHMS.md §2.5): Vitis AI's `include_cle` and `include_bias_corr`, or
/// `qat calibrate --cle --bias-correction`, and AMCT's per-layer `dmq_balancer_param`.
public enum PTQTransform: String, CaseIterable, Comparable, Sendable {
    /// Cross-layer equalization, before calibration.
    case crossLayerEqualization = "cle"
    /// DMQ (AMCT's `dmq_balancer_param`), after CLE and before calibration; the plan adds it when
    /// a layer has a strength.
    case dmq = "dmq"
    /// Bias correction, after calibration.
    case biasCorrection = "bias_correction"

    public static func < (a: PTQTransform, b: PTQTransform) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}
