import ArgumentParser
import QAT

/// `qat`: the command-line entry point. Each subcommand lives in its own file.
public struct QATCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qat",
        abstract: "Quantization-aware retraining for CNNs: float training, fake-quant QAT, INT8 deployment.",
        subcommands: [TrainCommand.self])

    public init() {}
}

/// Prints a user error (file, key path, message) the same way for every subcommand and exits non-zero.
func failWithUserError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as InputError {
        throw ValidationErrorWithExit(message: "error: \(error)", code: 1)
    } catch let error as TrainingError {
        throw ValidationErrorWithExit(message: "error: \(error)", code: 1)
    }
}

/// An error ArgumentParser prints as-is and exits with `code`.
struct ValidationErrorWithExit: Error, CustomStringConvertible {
    var message: String
    var code: Int32
    var description: String { message }
}
