import QATIO

/// How two shapes broadcast against each other (numpy rules): shapes are aligned at the right,
/// and along each axis the sizes are equal or one of them is 1 (that operand repeats).
///
/// Axes of the output are merged where both operands step through them contiguously (or both
/// repeat), so [N, C, H, W] · [1, C, 1, 1] walks as rows of H·W with a fixed b per row.
struct Broadcast {
    /// The output shape.
    let shape: [Int]
    /// Length of the innermost merged axis, and how far a and b step along it (0 or 1).
    let rowLength, rowStrideA, rowStrideB: Int
    /// The outer merged axes: their extents and each operand's strides.
    private let outerExtents, outerStridesA, outerStridesB: [Int]

    /// nil when the shapes do not broadcast.
    init?(_ a: [Int], _ b: [Int]) {
        let rank = max(a.count, b.count)
        let sa = Array(repeating: 1, count: rank - a.count) + a
        let sb = Array(repeating: 1, count: rank - b.count) + b
        var shape: [Int] = []
        for (p, q) in zip(sa, sb) {
            guard p == q || p == 1 || q == 1 else { return nil }
            shape.append(p == 1 ? q : p)
        }
        self.shape = shape
        // Row-major strides of each operand, 0 along axes where it repeats.
        func strides(_ s: [Int]) -> [Int] {
            var result = [Int](repeating: 0, count: rank), step = 1
            for axis in (0..<rank).reversed() {
                result[axis] = s[axis] == 1 ? 0 : step
                step *= s[axis]
            }
            return result
        }
        let (stridesA, stridesB) = (strides(sa), strides(sb))
        // Merge axes (dropping those of extent 1), innermost first.
        var extents: [Int] = [], mergedA: [Int] = [], mergedB: [Int] = []
        for axis in (0..<rank).reversed() where shape[axis] != 1 {
            if let last = extents.last,
               stridesA[axis] == mergedA.last! * last, stridesB[axis] == mergedB.last! * last {
                extents[extents.count - 1] *= shape[axis]
            } else {
                extents.append(shape[axis]); mergedA.append(stridesA[axis]); mergedB.append(stridesB[axis])
            }
        }
        if extents.isEmpty { (extents, mergedA, mergedB) = ([1], [0], [0]) }
        (rowLength, rowStrideA, rowStrideB) = (extents[0], mergedA[0], mergedB[0])
        (outerExtents, outerStridesA, outerStridesB) =
            (Array(extents.dropFirst()), Array(mergedA.dropFirst()), Array(mergedB.dropFirst()))
    }

    /// Calls body(output offset, a offset, b offset) at the start of every row, in output order.
    func forEachRow(_ body: (Int, Int, Int) -> Void) {
        var counter = [Int](repeating: 0, count: outerExtents.count)
        var (offsetA, offsetB, output) = (0, 0, 0)
        while true {
            body(output, offsetA, offsetB)
            output += rowLength
            // Odometer over the outer axes, innermost first.
            var axis = 0
            while axis < counter.count {
                counter[axis] += 1
                offsetA += outerStridesA[axis]
                offsetB += outerStridesB[axis]
                if counter[axis] < outerExtents[axis] { break }
                offsetA -= outerStridesA[axis] * outerExtents[axis]
                offsetB -= outerStridesB[axis] * outerExtents[axis]
                counter[axis] = 0
                axis += 1
            }
            if axis == counter.count { return }
        }
    }
}

/// The broadcast of two operands' shapes, or a precondition failure naming the op.
func broadcast(_ op: String, _ a: Variable, _ b: Variable) -> Broadcast {
    guard let plan = Broadcast(a.shape, b.shape) else {
        preconditionFailure("\(op): shapes \(a.shape) and \(b.shape) do not broadcast")
    }
    return plan
}

/// Adds `sums` (one Double accumulator per element of an operand, filled in output order) into
/// that operand's gradient.
func addReduced(_ sums: [Double], into operand: Variable) {
    operand.withGradient { g in for i in 0..<g.count { g[i] += Float(sums[i]) } }
}

/// The broadcast real nets use, [N, C, H, W] with [N, C, 1, 1] or [1, C, 1, 1] (or a scalar):
/// one operand ("big") has the output's shape, the other ("small") gives one value per output row,
/// row r using small[r mod smallCount]. Its loops are in CKernels/broadcast.c; they add in the
/// general path's order, so both give the same bits.
public struct RowBroadcast {
    /// false sends every broadcast through the general path (the reference of the agreement tests).
    nonisolated(unsafe) public static var enabled = true

    /// Whether a is the big operand.
    let bigIsA: Bool
    let rows, length, smallCount: Int

    /// nil when the plan is not of this form (then the general path runs).
    init?(_ plan: Broadcast, countA: Int, countB: Int) {
        let outputCount = plan.shape.reduce(1, *)
        let length = plan.rowLength
        guard RowBroadcast.enabled, outputCount > 0, length > 0 else { return nil }
        let bigIsA: Bool
        if plan.rowStrideA == 1 && plan.rowStrideB == 0 && countA == outputCount && countB > 0 {
            bigIsA = true
        } else if plan.rowStrideB == 1 && plan.rowStrideA == 0 && countB == outputCount && countA > 0 {
            bigIsA = false
        } else {
            return nil
        }
        let smallCount = bigIsA ? countB : countA
        var row = 0, matches = true
        plan.forEachRow { _, ia, ib in
            let (big, small) = bigIsA ? (ia, ib) : (ib, ia)
            if big != row * length || small != row % smallCount { matches = false }
            row += 1
        }
        guard matches else { return nil }
        (self.bigIsA, self.rows, self.length, self.smallCount) = (bigIsA, row, length, smallCount)
    }

    /// Calls body(r0, r1) on chunks of the rows (element-wise work: any split gives the same bits).
    func forEachRowChunk(_ body: (Int, Int) -> Void) {
        Parallel.forEachChunk(rows, minimumChunk: max(1, (1 << 14) / length)) { r in body(r.lowerBound, r.upperBound) }
    }
}
