import Foundation
import QATCore
import QATIO

// How a config chooses the calibration that gives a layer its starting clip bounds
// (docs/CONFIG.md "Calibration"): `act_algo` names the method, and the method's own settings
// (`num_of_bins`, `max_percentile`, …) sit beside it, in a layer's `retrain_data_config` as in
// AMCT's `activation_quant_params`, or in the `calibration` section as every layer's default.

/// A layer's resolved calibration: the method with all of its settings.
public struct CalibrationMethod: Equatable, Sendable {
    public let calibrator: any Calibrator

    public init(_ calibrator: any Calibrator) { self.calibrator = calibrator }

    /// The config mapping: every method `act_algo` can name, the first being the default.
    /// A new method is one file conforming to `Calibrator` plus its line here.
    public static let known: [any Calibrator.Type] = [IFMRParameters.self, HFMGParameters.self, MaxMinCalibrator.self,
                                                      PercentileCalibrator.self, EntropyCalibrator.self, MSECalibrator.self,
                                                      DiffsCalibrator.self]

    /// IFMR with its defaults, when no config says otherwise (docs/ALGORITHMS.md §2).
    public static let `default` = CalibrationMethod(known[0].init())

    /// The method's `act_algo` name.
    public var name: String { type(of: calibrator).name }

    public static func == (a: CalibrationMethod, b: CalibrationMethod) -> Bool {
        type(of: a.calibrator) == type(of: b.calibrator)
            && a.calibrator.settingValues.elementsEqual(b.calibrator.settingValues) { $0.key == $1.key && $0.value == $1.value }
    }

    /// The method as a config writes it, every setting explicit.
    public var explicitConfig: CalibrationConfig {
        CalibrationConfig(method: type(of: calibrator),
                          settings: Dictionary(uniqueKeysWithValues: calibrator.recordedSettingValues.map { ($0.key, $0.value) }))
    }
}

extension Calibrator {
    /// The method's setting keys with their rules (usable on `any Calibrator.Type`).
    static var rules: [(key: String, rule: CalibratorSettingRule)] { settings.map { ($0.key, $0.rule) } }
    static var keys: [String] { settings.map { $0.key } }
}

/// The calibration keys of one `retrain_data_config`, or of the `calibration` section, as
/// written; what is left out comes from a less specific config or the default.
public struct CalibrationConfig: Equatable, Sendable {
    /// `act_algo`, or nil.
    public var method: (any Calibrator.Type)?
    /// The method settings given here, by config key.
    public var settings: [String: CalibratorSettingValue]

    public init(method: (any Calibrator.Type)? = nil, settings: [String: CalibratorSettingValue] = [:]) {
        self.method = method
        self.settings = settings
    }

    public var isEmpty: Bool { method == nil && settings.isEmpty }

    public static func == (a: CalibrationConfig, b: CalibrationConfig) -> Bool {
        a.method.map(ObjectIdentifier.init) == b.method.map(ObjectIdentifier.init) && a.settings == b.settings
    }

    /// Every key a calibration method reads, each once, in the order of `CalibrationMethod.known`.
    static var settingKeys: [String] {
        var keys: [String] = []
        for method in CalibrationMethod.known {
            for key in method.keys where !keys.contains(key) { keys.append(key) }
        }
        return keys
    }
}

// MARK: - Reading

extension CalibrationConfig {
    /// Reads `act_algo` and the method settings of `object` (other keys are left to the caller).
    /// The settings given in one object must all belong to one method: the one `act_algo` names,
    /// if it is given (AMCT: IFMR and HFMG parameters never share a layer).
    static func parse(_ object: JSONObject) throws -> CalibrationConfig {
        var config = CalibrationConfig()
        if let name = try object.string("act_algo") {
            guard let method = CalibrationMethod.known.first(where: { $0.name == name }) else {
                let names = CalibrationMethod.known.map { "\"\($0.name)\"" }.joined(separator: ", ")
                throw object.error("act_algo", "unsupported value \"\(truncatedForMessage(name))\" (allowed: \(names))")
            }
            config.method = method
        }
        // The methods every key read so far belongs to.
        var candidates = config.method.map { [$0] } ?? CalibrationMethod.known
        for key in settingKeys {
            guard try object.value(key) != nil else { continue }  // absent (null is an error)
            let owners = candidates.filter { $0.keys.contains(key) }
            guard let owner = owners.first else {
                throw object.error(key, mismatch(key, given: config.settings.keys.sorted(), actAlgo: config.method))
            }
            candidates = owners
            let rule = owner.rules.first { $0.key == key }!.rule
            config.settings[key] = try read(key, rule, in: object)
        }
        return config
    }

    /// Why `key` cannot sit beside the method settings already read, or beside `act_algo`.
    private static func mismatch(_ key: String, given: [String], actAlgo: (any Calibrator.Type)?) -> String {
        let methods = CalibrationMethod.known.filter { $0.keys.contains(key) }.map { $0.name }
        let ofMethods = "\(key) is a setting of \(methods.joined(separator: ", "))"
        if let actAlgo {
            return "\(ofMethods), not of act_algo \"\(actAlgo.name)\" given here "
                + "(\(actAlgo.name)'s settings: \(actAlgo.keys.joined(separator: ", ")))"
        }
        return "\(ofMethods) and cannot be given with \(given.joined(separator: ", ")): one layer's settings belong to one method"
    }

    /// The largest `search_range` end accepted (docs/CONFIG.md "Ranges"); IFMR's step count is
    /// bounded separately (`IFMRParameters.maxSearchSteps`).
    static let searchRangeEndLimit = 100.0

    /// A setting's value, checked against its rule.
    private static func read(_ key: String, _ rule: CalibratorSettingRule, in object: JSONObject) throws -> CalibratorSettingValue {
        switch rule {
        case .fraction(let above):
            let value = try object.double(key)!
            guard value > above && value <= 1 else { throw object.error(key, "must be in (\(above), 1], got \(value)") }
            return .number(value)
        case .positive:
            let value = try object.double(key)!
            guard value > 0 && value.isFinite else { throw object.error(key, "must be a finite number > 0, got \(value)") }
            return .number(value)
        case .increasingRange:
            let range = try object.doubleArray(key)!
            guard range.count == 2, range[0] > 0, range[0] < range[1], range[1] <= searchRangeEndLimit else {
                throw object.error(key, "expected [start, end] with 0 < start < end ≤ \(Int(searchRangeEndLimit)), e.g. [0.7, 1.3]")
            }
            return .range(range[0], range[1])
        case .oneOf(let allowed):
            let value = try object.int(key)!
            guard allowed.contains(value) else {
                throw object.error(key, "must be one of \(allowed.map(String.init).joined(separator: ", ")), got \(value)")
            }
            return .integer(value)
        case .boolean:
            return .flag(try object.bool(key)!)
        case .percentage(let above):
            let value = try object.double(key)!
            guard value > above && value <= 100 else { throw object.error(key, "must be in (\(above), 100], got \(value)") }
            return .number(value)
        case .oneOfNames(let allowed):
            let value = try object.string(key)!
            guard allowed.contains(value) else {
                let names = allowed.map { "\"\($0)\"" }.joined(separator: ", ")
                throw object.error(key, "unsupported value \"\(truncatedForMessage(value))\" (allowed: \(names))")
            }
            return .name(value)
        }
    }
}

// MARK: - Resolving and writing

extension CalibrationConfig {
    /// A layer's method from its calibration configs, least specific first, each with the key path
    /// of the object it sits in: `act_algo` and every setting come from the most specific config
    /// that gives them, else from the default. A setting of another method than the one chosen
    /// is a warning; settings that contradict each other are an error naming the key path.
    static func resolve(_ chain: [(config: CalibrationConfig, keyPath: String)], layer: String, file: String,
                        warnings: inout [String]) throws -> CalibrationMethod {
        let method = chain.last(where: { $0.config.method != nil })?.config.method ?? type(of: CalibrationMethod.default.calibrator)
        var values: [String: CalibratorSettingValue] = [:]
        var sources: [String: String] = [:]
        for (config, keyPath) in chain {
            for (key, value) in config.settings {
                values[key] = value
                sources[key] = keyPath.isEmpty ? key : "\(keyPath).\(key)"
            }
        }
        let ownKeys = method.keys
        for key in values.keys.sorted() where !ownKeys.contains(key) {
            warnings.append("\(layer): \(sources[key]!) is ignored: \(layer) calibrates with \(method.name), which has no \(key)")
        }
        let calibrator = method.init().with(values)
        if let conflict = calibrator.conflict() {
            // Blame the key named, or else the most specific setting of this method that was given.
            let blamed = sources[conflict.key] ?? ownKeys.compactMap { sources[$0] }.last ?? conflict.key
            throw InputError(file: file, keyPath: blamed, message: conflict.message)
        }
        return CalibrationMethod(calibrator)
    }

    /// The keys as a config writes them: `act_algo`, then the settings in the methods' order.
    var members: [JSONValue.Member] {
        var members: [JSONValue.Member] = []
        if let method { members.append(.init("act_algo", JSONValue(method.name))) }
        for key in Self.settingKeys {
            guard let value = settings[key] else { continue }
            switch value {
            case .number(let number): members.append(.init(key, JSONValue(number)))
            case .integer(let integer): members.append(.init(key, JSONValue(integer)))
            case .range(let start, let end): members.append(.init(key, .array([JSONValue(start), JSONValue(end)])))
            case .flag(let flag): members.append(.init(key, JSONValue(flag)))
            case .name(let name): members.append(.init(key, JSONValue(name)))
            }
        }
        return members
    }
}
