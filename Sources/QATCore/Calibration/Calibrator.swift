import QATIO

/// A calibration method (docs/ALGORITHMS.md §2): from the activations one quantized layer received
/// during calibration, the clip bounds its training starts from. A conforming value *is* the
/// method's settings, and `settings` names them as configs do (AMCT's names, e.g.
/// `num_of_bins`), so the config reader, the config writer and the checkpoint record handle
/// every method alike.
///
/// Adding a method (as max-min, percentile, entropy and MSE were added) takes one new file with a type that
/// conforms to `Calibrator`, and its entry in `CalibrationMethod.known` (QATModel), the list
/// that maps `act_algo` names to methods.
public protocol Calibrator: Sendable {
    /// The method's `act_algo` name in a config, e.g. "hfmg".
    static var name: String { get }
    /// The method's settings, in the order configs and records list them.
    static var settings: [CalibratorSetting<Self>] { get }
    /// Every setting at its default.
    init()
    /// Starting clip bounds (clipMax ≥ 0 ≥ clipMin) from the layer's input batches, in the order
    /// they ran. Errors name `layer`.
    func startingClipRange(batches: [Tensor], layer: String) throws -> (clipMax: Float, clipMin: Float)
    /// A problem between settings that each passed their own rule, with the key to blame.
    func conflict() -> (key: String, message: String)?
}

extension Calibrator {
    public func conflict() -> (key: String, message: String)? { nil }
}

/// A setting's value as a config holds it.
public enum CalibratorSettingValue: Equatable, Sendable {
    case number(Double)
    case integer(Int)
    /// `[start, end]`.
    case range(Double, Double)
    /// true or false.
    case flag(Bool)
    /// One of a fixed set of names, e.g. `calib_statistic_method: "max"`.
    case name(String)
}

/// The values a setting allows; the config reader checks them and quotes them in its errors.
public enum CalibratorSettingRule: Equatable, Sendable {
    /// A number in (above, 1].
    case fraction(above: Double)
    /// A number > 0.
    case positive
    /// `[start, end]` with 0 < start < end.
    case increasingRange
    /// One of these integers.
    case oneOf([Int])
    /// true or false.
    case boolean
    /// A percentage in (above, 100].
    case percentage(above: Double)
    /// One of these names.
    case oneOfNames([String])
}

/// One setting of a calibration method: its config key, the values it allows, and where it
/// lives in the method's value.
public struct CalibratorSetting<Method> {
    public let key: String
    public let rule: CalibratorSettingRule
    public let get: (Method) -> CalibratorSettingValue
    /// Stores a value that passed `rule` (other kinds of value are ignored).
    public let set: (inout Method, CalibratorSettingValue) -> Void
    /// True for a setting added after checkpoints began recording every setting: a record lists
    /// it only when it differs from its default, so older records keep their bytes.
    public let isRecordedOnlyWhenChanged: Bool

    public init(_ key: String, _ rule: CalibratorSettingRule, get: @escaping (Method) -> CalibratorSettingValue,
                set: @escaping (inout Method, CalibratorSettingValue) -> Void, isRecordedOnlyWhenChanged: Bool = false) {
        self.key = key
        self.rule = rule
        self.get = get
        self.set = set
        self.isRecordedOnlyWhenChanged = isRecordedOnlyWhenChanged
    }

    /// A number stored in `field`.
    public static func number(_ key: String, _ rule: CalibratorSettingRule, _ field: WritableKeyPath<Method, Double>) -> Self {
        Self(key, rule, get: { .number($0[keyPath: field]) },
             set: { method, value in if case .number(let number) = value { method[keyPath: field] = number } })
    }

    /// A flag stored in `field`.
    public static func flag(_ key: String, _ field: WritableKeyPath<Method, Bool>, isRecordedOnlyWhenChanged: Bool = false) -> Self {
        Self(key, .boolean, get: { .flag($0[keyPath: field]) },
             set: { method, value in if case .flag(let flag) = value { method[keyPath: field] = flag } },
             isRecordedOnlyWhenChanged: isRecordedOnlyWhenChanged)
    }

    /// A choice among a string enum's cases, stored in `field`.
    public static func choice<Choice: RawRepresentable & CaseIterable>(_ key: String, _ field: WritableKeyPath<Method, Choice>) -> Self
    where Choice.RawValue == String {
        Self(key, .oneOfNames(Choice.allCases.map(\.rawValue)), get: { .name($0[keyPath: field].rawValue) },
             set: { method, value in
                 if case .name(let name) = value, let choice = Choice(rawValue: name) { method[keyPath: field] = choice }
             })
    }

    /// An integer stored in `field`.
    public static func integer(_ key: String, _ rule: CalibratorSettingRule, _ field: WritableKeyPath<Method, Int>) -> Self {
        Self(key, rule, get: { .integer($0[keyPath: field]) },
             set: { method, value in if case .integer(let integer) = value { method[keyPath: field] = integer } })
    }
}

extension Calibrator {
    /// Every setting with its value, in the method's order.
    public var settingValues: [(key: String, value: CalibratorSettingValue)] {
        Self.settings.map { ($0.key, $0.get(self)) }
    }

    /// The settings a record lists: every one, except those recorded only when changed that hold
    /// their default value.
    public var recordedSettingValues: [(key: String, value: CalibratorSettingValue)] {
        let defaults = Self()
        return Self.settings.filter { !$0.isRecordedOnlyWhenChanged || $0.get(self) != $0.get(defaults) }
            .map { ($0.key, $0.get(self)) }
    }

    /// This method with `values` (keys it does not have are ignored).
    public func with(_ values: [String: CalibratorSettingValue]) -> Self {
        var method = self
        for setting in Self.settings {
            if let value = values[setting.key] { setting.set(&method, value) }
        }
        return method
    }
}

/// The batches' values in order, as one array.
func concatenated(_ batches: [Tensor]) -> [Float] {
    var values: [Float] = []
    values.reserveCapacity(batches.reduce(0) { $0 + $1.count })
    for batch in batches { values.append(contentsOf: batch.storage) }
    return values
}
