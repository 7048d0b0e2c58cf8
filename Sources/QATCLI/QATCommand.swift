import ArgumentParser
import QAT

/// `qat`: the command-line entry point. Each subcommand lives in its own file.
public struct QATCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qat",
        abstract: "Quantization-aware retraining for CNNs: float training, fake-quant QAT, INT8 deployment.",
        subcommands: [TrainCommand.self, EvalCommand.self, InspectCommand.self, CreateConfigCommand.self, PlanCommand.self,
                      CheckCommand.self, DeployCommand.self, VerifyCommand.self])

    public init() {}
}

/// Turns the errors a user can cause (bad files, configs, data, diverging runs) into one
/// "error: …" line and exit code 1; anything else is a bug and propagates as is.
func reportingUserErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as InputError {
        throw UserError(message: "\(error)")
    } catch let error as TrainingError {
        throw UserError(message: "\(error)")
    } catch let error as RunError {
        throw UserError(message: "\(error)")
    } catch let error as HDF5Error {
        throw UserError(message: "\(error)")
    } catch let error as CheckpointMismatchError {
        throw UserError(message: "\(error)")
    } catch let error as AtomicWriteError {
        throw UserError(message: "\(error)")
    } catch let error as CalibrationError {
        throw UserError(message: "\(error)")
    }
}

/// ArgumentParser prints this as "Error: <message>" and exits with status 1.
struct UserError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
