import Foundation
import QATCore
import QATData
import QATIO
import QATModel

/// Learning rate as a function of the epoch (0-based), fixed within an epoch.
public enum LearningRateSchedule: Equatable, Sendable {
    case constant
    /// Multiply by `factor` every `every` epochs.
    case step(every: Int, factor: Float)
    /// Cosine from the base rate down to `floor` over `epochs` epochs.
    case cosine(epochs: Int, floor: Float)

    public func rate(base: Float, epoch: Int) -> Float {
        switch self {
        case .constant:
            return base
        case let .step(every, factor):
            return base * Float(pow(Double(factor), Double(epoch / max(every, 1))))
        case let .cosine(epochs, floor):
            let progress = Double(min(epoch, epochs)) / Double(max(epochs, 1))
            return floor + (base - floor) * Float((1 + cos(Double.pi * progress)) / 2)
        }
    }
}
