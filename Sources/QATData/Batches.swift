import QATCore

/// One batch drawn from a dataset: the images [B, C, H, W], their labels, and where they came from.
public struct Batch {
    /// The batch's position in its sequence: batch `index` of the epoch (or of the pass).
    public var index: Int
    /// The samples' indices in the dataset, in batch order.
    public var indices: ArraySlice<Int>
    /// The samples at `part` of the batch (all of them unless drawn for one rank, `BatchShard`).
    public var images: Tensor
    public var labels: [Int32]
    /// The positions within the batch that `images` and `labels` hold.
    public var part: Range<Int>

    /// Samples in the whole batch (on every rank the same).
    public var count: Int { indices.count }
    /// True when `images` and `labels` hold one rank's part only.
    public var isPart: Bool { part.count != indices.count }
}

/// One rank's part of every batch in data-parallel training: contiguous, in rank order, the
/// remainder going one sample each to the lowest ranks (10 over 4: 3, 3, 2, 2). Each rank builds
/// only its part's images; together the parts are the one-process batch.
public struct BatchShard: Equatable, Sendable {
    public let rank: Int
    public let ranks: Int

    public init(rank: Int, ranks: Int) {
        precondition(ranks > 0 && (0..<ranks).contains(rank), "rank \(rank) of \(ranks)")
        self.rank = rank
        self.ranks = ranks
    }

    /// The positions of a batch of `count` samples that this rank holds.
    public func range(of count: Int) -> Range<Int> {
        let base = count / ranks, extra = count % ranks
        let start = rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }
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
    /// Builds only this rank's part of each batch (data-parallel training).
    private let shard: BatchShard?

    init(dataset: Dataset, size: Int, order: BatchOrder, first: Int, limit: Int?, cycles: Bool, augmentation: Augmentation?,
         shard: BatchShard? = nil) {
        self.shard = shard
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
        let part = shard?.range(of: indices.count) ?? 0..<indices.count
        let built = indices[(indices.startIndex + part.lowerBound)..<(indices.startIndex + part.upperBound)]
        let transforms = augmentation.map { a in
            built.map { a.transform(seed: augmentationKey.seed, epoch: augmentationKey.epoch, index: $0) }
        }
        let (images, labels) = dataset.batch(built, transforms: transforms)
        defer { position += 1 }
        return Batch(index: position, indices: indices, images: images, labels: labels, part: part)
    }
}

extension Dataset {
    /// One pass over the dataset in batches of `size`, visiting samples in `order`: batch b
    /// holds the samples at positions b·size ..< min((b + 1)·size, count) of the order.
    /// The pass starts at batch `first` (a resumed epoch) and yields at most `limit` batches.
    /// `augmentation` (training) crops and flips each sample as a function of the order's
    /// (seed, epoch) and the sample's index.
    /// With `shard`, each batch holds only that rank's part of the samples (`Batch.part`).
    public func batches(size: Int, order: BatchOrder = .sequential, first: Int = 0, limit: Int? = nil,
                        augmentation: Augmentation? = nil, shard: BatchShard? = nil) -> Batches {
        Batches(dataset: self, size: size, order: order, first: first, limit: limit, cycles: false, augmentation: augmentation,
                shard: shard)
    }

    /// `count` full-size batches that cycle through the dataset in `order`: batch k holds the
    /// samples at positions s ..< s + size with s = k·size mod (count − size + 1), so none is cut
    /// short at the end (used where a fixed number of steps matters, not one pass).
    public func cyclingBatches(size: Int, order: BatchOrder = .sequential, count: Int, augmentation: Augmentation? = nil) -> Batches {
        Batches(dataset: self, size: size, order: order, first: 0, limit: count, cycles: true, augmentation: augmentation)
    }
}
