import Foundation
import XCTest
@testable import QATCore
@testable import QATDeploy

/// A conv's prepared weights (Int8ConvCache: packed weights, the AVX2 pair kernel's pairs,
/// Winograd's transformed weights) give the reference's outputs on the call that makes them and
/// on the calls that reuse them: every path, Winograd and the pair kernel switched on and off
/// with one cache (each layout its own entry), and threads sharing one cache.
final class Int8ConvCacheTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 1_701)
        func conv(_ n: Int, _ c: Int, _ o: Int, _ h: Int, _ w: Int, k: Int, stride: Int, pad: Int, groups: Int = 1) -> Case {
            let g = Int8ConvGeometry(batch: n, channels: c, height: h, width: w, outputChannels: o,
                                     kernelHeight: k, kernelWidth: k, strideHeight: stride, strideWidth: stride,
                                     padTop: pad, padLeft: pad, padBottom: pad, padRight: pad, groups: groups)
            return Int8ConvTests.randomCase(g, relu6: false, &rng)
        }
        return [
            conv(17, 32, 24, 6, 6, k: 3, stride: 1, pad: 1),    // Winograd on AVX2; blocked weights without it
            conv(5, 32, 24, 16, 16, k: 3, stride: 1, pad: 1),   // Winograd on AVX2; plain weights without it
            conv(5, 8, 16, 14, 14, k: 3, stride: 2, pad: 1),    // stride 2 on a narrow plane: blocked weights
            conv(3, 1, 8, 28, 28, k: 3, stride: 1, pad: 1),     // one channel, wide rows: plain packing
            conv(4, 16, 12, 9, 9, k: 3, stride: 1, pad: 1, groups: 2),  // grouped
            conv(6, 64, 20, 2, 2, k: 1, stride: 1, pad: 0),     // 1×1
        ]
    }

    override func tearDown() {
        Int8Kernels.allowWinograd(true)   // the defaults
        Int8Kernels.allowAVX2PairTiles(true)
    }

    func testCachedWeightsMatchTheReferenceOnEveryCall() {
        let paths = Int8Kernels.Path.allCases.filter(Int8Kernels.isSupported)
        for c in Self.cases() {
            let expected = Int8ConvReferenceOutputs(c)
            let cache = Int8ConvCache()
            for round in 0..<2 {
                for path in paths {
                    for (winograd, pairs) in [(true, true), (false, true), (false, false)] {
                        Int8Kernels.allowWinograd(winograd)
                        Int8Kernels.allowAVX2PairTiles(pairs)
                        expected.assertMatched(c, path: path, "round \(round) \(path) Winograd \(winograd) pairs \(pairs) \(c.geometry)",
                                               cache: cache)
                    }
                }
            }
        }
    }

    /// Four calls at once on one fresh cache: whichever makes an entry, all read complete weights.
    func testThreadsShareOneCache() {
        for c in Self.cases() {
            let expected = Int8ConvReferenceOutputs(c).codes
            let cache = Int8ConvCache()
            let results = ResultSlots(4)
            DispatchQueue.concurrentPerform(iterations: 4) { i in
                results.store(i, Int8Kernels.conv2d(c.x, c.geometry, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                    requantize: c.requantization, cache: cache))
            }
            for (i, codes) in results.values.enumerated() { XCTAssertEqual(codes, expected, "thread \(i) \(c.geometry)") }
        }
    }

    private final class ResultSlots: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [[Int8]]
        init(_ count: Int) { values = Array(repeating: [], count: count) }
        func store(_ i: Int, _ codes: [Int8]) { lock.lock(); values[i] = codes; lock.unlock() }
    }
}
