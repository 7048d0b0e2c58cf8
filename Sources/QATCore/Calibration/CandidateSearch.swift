/// The first candidate with the smallest score, of `count` candidates scored by `score(i)`.
///
/// Every range search (IFMR, HFMG, MSE, entropy) ends this way. Candidates are independent, so
/// threads split them without changing any score; a tie keeps the lowest index, whatever the
/// thread count.
func firstBestCandidate(count: Int, score: (Int) -> Double) -> (index: Int, score: Double) {
    precondition(count > 0, "firstBestCandidate: no candidates")
    var scores = [Double](repeating: 0, count: count)
    scores.withUnsafeMutableBufferPointer { out in
        Parallel.forEachChunk(count) { chunk in
            for i in chunk { out[i] = score(i) }
        }
    }
    var best = 0
    for i in 1..<count where scores[i] < scores[best] { best = i }
    return (best, scores[best])
}
