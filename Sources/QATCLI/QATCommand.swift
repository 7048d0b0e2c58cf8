import ArgumentParser

public struct QATCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "qat", abstract: "Quantization-aware retraining.")
    public init() {}
}
