import ArgumentParser
import Foundation
import QAT

/// `qat`: the command-line entry point. Each subcommand lives in its own file.
public struct QATCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "qat",
        abstract: "Quantization-aware retraining for CNNs: float training, fake-quant QAT, INT8 deployment.",
        // In workflow order: set up, train, check, deploy, debug.
        subcommands: [ImportCommand.self, CreateConfigCommand.self, PlanCommand.self, CalibrateCommand.self, TrainCommand.self, EvalCommand.self, InspectCommand.self,
                      CheckCommand.self, DeployCommand.self, ExportCommand.self, VerifyCommand.self, CompareCommand.self, SensitivityCommand.self])

    public init() {}
}

/// Turns the errors a user can cause (bad files, configs, data, diverging runs) into one
/// "Error: …" line and exit code 1; anything else is a bug and propagates as is.
/// Notes about files read without a digest are printed once the command has succeeded, so a
/// failing command still prints exactly one line.
func reportingUserErrors<T>(_ body: () throws -> T) throws -> T {
    FileDigest.noteUndigestedFile = { undigestedFiles.append($0) }
    do {
        let result = try body()
        for path in Set(undigestedFiles).sorted() {
            FileHandle.standardError.write(Data("note: \(path) has no qat digest (written by another tool or an older qat); read without a checksum check\n".utf8))
        }
        return result
    } catch let error as any UserFacingError {
        // One line whatever the message quotes (a damaged file's names reach library messages).
        throw UserError(message: escapingLineBreaks(error.description))
    }
}

/// ArgumentParser prints this as "Error: <message>" and exits with status 1.
struct UserError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// HDF5 files read without a qat digest (written by another tool or an older qat): such a file
/// is trusted on its structural checks alone, and the user is told so.
nonisolated(unsafe) private var undigestedFiles: [String] = []
