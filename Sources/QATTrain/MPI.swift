import CMPI
import Foundation
import QATCore
import QATData

/// The processes of one data-parallel run, and the one collective training needs: an element-wise
/// sum whose result does not depend on timing.
///
/// `mpirun -np K qat train …` starts K processes (ranks). Under mpirun Open MPI sets
/// `OMPI_COMM_WORLD_SIZE`; only then is MPI initialised, so a plain `qat` never needs mpirun.
/// One process is the trivial communicator (rank 0 of 1), so the training loop has one code path.
/// This is the only file that imports CMPI.
public final class Communicator {
    public let rank: Int
    public let size: Int
    /// False for the one-process communicator: nothing to send, MPI untouched.
    private let usesMPI: Bool

    private init(rank: Int, size: Int, usesMPI: Bool) {
        self.rank = rank
        self.size = size
        self.usesMPI = usesMPI
    }

    /// One process alone: every sum is the identity.
    public static let single = Communicator(rank: 0, size: 1, usesMPI: false)

    /// Rank 0 alone writes checkpoints, metrics and progress.
    public var isRoot: Bool { rank == 0 }

    nonisolated(unsafe) private static var world: Communicator?

    /// The communicator of this process: MPI's world when started by mpirun, else `single`.
    /// MPI is initialised on the first call and stays up until `finish()`.
    public static func fromEnvironment() -> Communicator {
        if let world { return world }
        guard ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil else { return single }
        // Only the main thread calls MPI, but not always the thread that initialised it: serialized.
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, qat_mpi_thread_serialized(), &provided)
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(qat_mpi_comm_world(), &rank)
        MPI_Comm_size(qat_mpi_comm_world(), &size)
        let communicator = Communicator(rank: Int(rank), size: Int(size), usesMPI: true)
        world = communicator
        return communicator
    }

    /// Shuts MPI down after a successful run. A process that exits without it (an error, a
    /// crash, a kill) makes mpirun stop every other rank of the job.
    public func finish() {
        guard usesMPI else { return }
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    /// Replaces `values` on every rank by the element-wise sum over the ranks, added in rank order
    /// (((v₀ + v₁) + v₂) + …), so the result is the same bits on every rank and in every run.
    public func sum(_ values: inout [Float]) {
        guard size > 1 else { return }
        let all = allGather(values, type: qat_mpi_float())
        addInRankOrder(all, into: &values)
    }

    /// The same in Double.
    public func sum(_ values: inout [Double]) {
        guard size > 1 else { return }
        let all = allGather(values, type: qat_mpi_double())
        addInRankOrder(all, into: &values)
    }

    /// Both sums in one exchange, so a step waits for the slowest rank once instead of twice: the
    /// same bits as `sum(&floats)` followed by `sum(&doubles)`.
    public func sum(_ floats: inout [Float], _ doubles: inout [Double]) {
        guard size > 1 else { return }
        let floatBytes = floats.count * MemoryLayout<Float>.stride
        var local = [UInt8](repeating: 0, count: floatBytes + doubles.count * MemoryLayout<Double>.stride)
        local.withUnsafeMutableBytes { bytes in
            floats.withUnsafeBytes { bytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            doubles.withUnsafeBytes { (bytes.baseAddress! + floatBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        let all = allGather(local, type: qat_mpi_byte())
        var allFloats = [Float](repeating: 0, count: floats.count * size)
        var allDoubles = [Double](repeating: 0, count: doubles.count * size)
        all.withUnsafeBytes { gathered in
            allFloats.withUnsafeMutableBytes { out in
                allDoubles.withUnsafeMutableBytes { outDoubles in
                    for r in 0..<size {
                        let part = gathered.baseAddress! + r * local.count
                        (out.baseAddress! + r * floatBytes).copyMemory(from: part, byteCount: floatBytes)
                        (outDoubles.baseAddress! + r * (local.count - floatBytes))
                            .copyMemory(from: part + floatBytes, byteCount: local.count - floatBytes)
                    }
                }
            }
        }
        addInRankOrder(allFloats, into: &floats)
        addInRankOrder(allDoubles, into: &doubles)
    }

    /// Every rank's `values` (all of the same count), rank 0's first.
    private func allGather<T: Numeric>(_ values: [T], type: MPI_Datatype) -> [T] {
        var all = [T](repeating: 0, count: values.count * size)
        values.withUnsafeBufferPointer { local in
            all.withUnsafeMutableBufferPointer { gathered in
                _ = MPI_Allgather(local.baseAddress, Int32(values.count), type,
                                  gathered.baseAddress, Int32(values.count), type, qat_mpi_comm_world())
            }
        }
        return all
    }

    private func addInRankOrder<T: BinaryFloatingPoint>(_ all: [T], into values: inout [T]) {
        let n = values.count
        all.withUnsafeBufferPointer { gathered in
            values.withUnsafeMutableBufferPointer { sum in
                for i in 0..<n { sum[i] = gathered[i] }
                for r in 1..<size {
                    let part = gathered.baseAddress! + r * n
                    for i in 0..<n { sum[i] += part[i] }
                }
            }
        }
    }

    /// This rank's part of every batch (`BatchShard`).
    public var batchShard: BatchShard { BatchShard(rank: rank, ranks: size) }

    /// This rank's part of a global batch of `count` samples.
    public func shard(of count: Int) -> Range<Int> { batchShard.range(of: count) }

    /// Rank `rank`'s part of a batch of `count` samples over `ranks` ranks (`BatchShard`).
    public static func shard(of count: Int, rank: Int, ranks: Int) -> Range<Int> {
        BatchShard(rank: rank, ranks: ranks).range(of: count)
    }
}
