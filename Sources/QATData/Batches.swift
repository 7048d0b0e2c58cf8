import QATCore

/// One batch drawn from a dataset: the images [B, C, H, W], their labels, and where they came from.
public struct Batch {
    /// The batch's position in its sequence: batch `index` of the epoch (or of the pass).
    public var index: Int
    /// The samples' indices in the dataset, in batch order.
    public var indices: ArraySlice<Int>
    public var images: Tensor
    public var labels: [Int32]

    public var count: Int { indices.count }
}

/// The order in which a pass over a dataset visits its samples.
public enum BatchOrder: Equatable, Sendable {
    /// 0, 1, 2, …: evaluation, verification, comparison.
    case sequential
    /// The shuffle of training epoch `epoch` under `seed`. A pure function of (seed, epoch), so
    /// a run resumed at any step draws exactly the batches the uninterrupted run would have.
    case shuffled(seed: UInt64, epoch: Int)

    /// The sample indices of a dataset of `count` samples, in this order.
    public func indices(count: Int) -> [Int] {
        switch self {
        case .sequential:
            return Array(0..<count)
        case let .shuffled(seed, epoch):
            var generator = SeededGenerator(seed: seed &* 0x2545_F491_4F6C_DD1D &+ UInt64(epoch))
            return generator.permutation(count)
        }
    }
}

/// The batches of a dataset, drawn in a `BatchOrder`: the one batch loop of training,
/// calibration, evaluation, verification, comparison and sensitivity.
///
/// A pass cuts the order into consecutive batches of `size`, the last one shorter when `size`
/// does not divide the dataset; it may start at a later batch (resuming mid-epoch) and stop
/// after a number of batches. A cycling sequence (the lr = 0 check) instead draws full-size
/// windows for as long as asked: window k starts at k·size mod (count − size + 1).
public struct Batches: Sequence, IteratorProtocol {
    public let dataset: Dataset
    public let size: Int
    /// The sample indices in drawing order.
    public let order: [Int]
    /// Batches in a whole pass over the dataset: ⌈count / size⌉.
    public var batchesPerPass: Int { (dataset.count + size - 1) / size }
    /// Training batches only: each sample's crop and flip, keyed by the order's (seed, epoch).
    public let augmentation: Augmentation?
    private let augmentationKey: (seed: UInt64, epoch: Int)
    private let cycles: Bool
    private let end: Int
    private var position: Int

    init(dataset: Dataset, size: Int, order: BatchOrder, first: Int, limit: Int?, cycles: Bool, augmentation: Augmentation?) {
        precondition(size > 0, "batch size must be positive, got \(size)")
        self.dataset = dataset
        self.size = size
        self.order = order.indices(count: dataset.count)
        self.augmentation = augmentation.flatMap { $0.isIdentity ? nil : $0 }
        switch order {
        case .sequential: augmentationKey = (0, 0)
        case let .shuffled(seed, epoch): augmentationKey = (seed, epoch)
        }
        self.cycles = cycles
        position = first
        let available = cycles ? Int.max : (dataset.count + size - 1) / size
        end = limit.map { Swift.min(available, first + Swift.max($0, 0)) } ?? available
    }

    public mutating func next() -> Batch? {
        guard position < end else { return nil }
        let count = dataset.count
        let start = cycles ? (position * size) % Swift.max(count - size + 1, 1) : position * size
        let indices = order[start..<Swift.min(start + size, count)]
        let transforms = augmentation.map { a in
            indices.map { a.transform(seed: augmentationKey.seed, epoch: augmentationKey.epoch, index: $0) }
        }
        let (images, labels) = dataset.batch(indices, transforms: transforms)
        defer { position += 1 }
        return Batch(index: position, indices: indices, images: images, labels: labels)
    }
}

extension Dataset {
    /// One pass over the dataset in batches of `size`, visiting samples in `order`: batch b
    /// holds the samples at positions b·size ..< min((b + 1)·size, count) of the order.
    /// The pass starts at batch `first` (a resumed epoch) and yields at most `limit` batches.
    /// `augmentation` (training) crops and flips each sample as a function of the order's
    /// (seed, epoch) and the sample's index.
    public func batches(size: Int, order: BatchOrder = .sequential, first: Int = 0, limit: Int? = nil,
                        augmentation: Augmentation? = nil) -> Batches {
        Batches(dataset: self, size: size, order: order, first: first, limit: limit, cycles: false, augmentation: augmentation)
    }

    /// `count` full-size batches that cycle through the dataset in `order`: batch k holds the
    /// samples at positions s ..< s + size with s = k·size mod (count − size + 1), so none is cut
    /// short at the end (used where a fixed number of steps matters, not one pass).
    public func cyclingBatches(size: Int, order: BatchOrder = .sequential, count: Int, augmentation: Augmentation? = nil) -> Batches {
        Batches(dataset: self, size: size, order: order, first: 0, limit: count, cycles: true, augmentation: augmentation)
    }
}
