import XCTest
@testable import QATCore
@testable import QATDeploy

/// The channel-blocked conv operands (int8_internal.h): 1×1 convs without a column matrix and
/// the word-wise im2col for outputs narrower than 16, with several images per GEMM. On every path
/// the accumulators equal the Int64 reference of Int8ConvTests, the codes and floats its Swift
/// requantization, and a batch gives the same results whole or split (as Int8Model splits it
/// over threads), so the image blocking changes nothing.
final class Int8BlockedConvTests: XCTestCase {
    typealias Case = Int8ConvTests.Case

    /// Odd shapes on the blocked operands (channels per group a multiple of 4), and two on the
    /// byte-wise one beside them (6 channels; 17 wide). Batches leave a short last block of images.
    static func cases() -> [Case] {
        var rng = SeededGenerator(seed: 41)
        let shapes: [(n: Int, c: Int, o: Int, groups: Int, size: (Int, Int), kernel: Int, stride: Int, pad: Int, dilation: Int)] = [
            (7, 20, 13, 1, (5, 3), 1, 1, 0, 1),      // 1×1 direct, 15 pixels: 5 images per GEMM, then 2
            (3, 12, 67, 1, (11, 13), 1, 1, 0, 1),    // 1×1 direct, 143 pixels (not a multiple of 16), 67 rows
            (2, 8, 6, 2, (9, 9), 1, 1, 0, 1),        // 1×1 direct, 2 groups of 4 channels
            (2, 8, 16, 1, (14, 14), 1, 2, 0, 1),     // 1×1 stride 2: 7 wide
            (2, 8, 9, 1, (40, 40), 1, 2, 0, 1),      // 1×1 stride 2: 20 wide, two 16-column chunks
            (17, 64, 64, 1, (2, 2), 3, 1, 1, 1),     // ResNet's 2×2 layers: 16 images per GEMM, then 1
            (5, 32, 64, 1, (4, 4), 3, 2, 1, 1),      // stride 2, 4×4 → 2×2
            (6, 16, 16, 1, (7, 7), 3, 1, 1, 1),      // 7×7: 5 images per GEMM, then 1
            (3, 16, 5, 1, (17, 17), 5, 3, 2, 1),     // 5×5 stride 3: 6 wide
            (2, 8, 7, 1, (8, 8), 3, 1, 2, 2),        // dilation 2
            (4, 12, 9, 3, (9, 11), 3, 2, 1, 1),      // 3 groups of 4 channels, stride 2
            (2, 6, 11, 1, (4, 4), 3, 1, 1, 1),       // 6 channels: byte-wise im2col
            (2, 8, 13, 1, (14, 14), 3, 1, 1, 1),     // 14 wide: 16 columns of a row in one vector
            (2, 8, 5, 1, (9, 17), 3, 1, 1, 1),       // 17 wide: byte-wise im2col
            (3, 8, 12, 1, (4, 4), 3, 1, 1, 1),       // 4 wide, stride 1: a 16-byte copy per row
            (3, 4, 5, 1, (3, 2), 3, 1, 1, 1),        // 2 wide, 3 rows: the last row alone
            (2, 4, 3, 1, (1, 4), 3, 1, 1, 1),        // 4 pixels in one row: the 2×2 planes' transpose
            (2, 4, 3, 1, (4, 1), 3, 1, 1, 1),        // 1 wide
        ]
        return shapes.enumerated().map { i, s in
            let g = Int8ConvGeometry(batch: s.n, channels: s.c, height: s.size.0, width: s.size.1, outputChannels: s.o,
                                     kernelHeight: s.kernel, kernelWidth: s.kernel, strideHeight: s.stride, strideWidth: s.stride,
                                     dilationHeight: s.dilation, dilationWidth: s.dilation,
                                     padTop: s.pad, padLeft: s.pad, padBottom: s.pad, padRight: s.pad, groups: s.groups)
            return Int8ConvTests.randomCase(g, relu6: i % 3 == 0, &rng)
        }
    }

    func testBlockedOperandsMatchReferenceOnEveryPath() {
        for c in Self.cases() {
            let g = c.geometry, plane = g.outputHeight * g.outputWidth
            let expected = Int8ConvTests.referenceAccumulators(c)
            let channel = { (i: Int) in i / plane % g.outputChannels }
            let codes = expected.indices.map { Int8ConvTests.referenceCode(expected[$0], channel: channel($0), c.requantization) }
            let floats = expected.indices.map { Int8ConvTests.referenceFloat(expected[$0], channel: channel($0), c).bitPattern }
            for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
                let acc = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, path: path)
                XCTAssertEqual(acc.map(Int64.init), expected, "accumulators \(path) \(g)")
                let q = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, path: path)
                XCTAssertEqual(q, codes, "codes \(path) \(g)")
                let y = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      scales: c.scales, offsets: c.offsets, path: path)
                XCTAssertEqual(y.map(\.bitPattern), floats, "floats \(path) \(g)")
                if g.outputHeight >= 2 && g.outputWidth >= 2 {
                    let pooled = Int8Kernels.maxPool2d(codes, planes: g.batch * g.outputChannels, height: g.outputHeight,
                                                       width: g.outputWidth, kernel: 2, stride: 2, path: .portable)
                    let fused = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                          requantize: c.requantization, poolKernel: 2, poolStride: 2, path: path)
                    XCTAssertEqual(fused, pooled, "conv + pool \(path) \(g)")
                }
            }
        }
    }

    /// Int8Model splits a batch over threads, and the kernels group images by the batch they get:
    /// every split (here each one of the batch into two parts, run on 2 threads) must give the
    /// whole batch's codes.
    func testSplittingTheBatchChangesNothing() {
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        Parallel.threads = 2
        for c in Self.cases() where c.geometry.batch > 2 {
            let g = c.geometry, sample = g.channels * g.height * g.width
            let outputs = g.outputChannels * g.outputHeight * g.outputWidth
            let whole = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias, requantize: c.requantization)
            for first in 1..<g.batch {
                var parts = [[Int8]](repeating: [], count: 2)
                parts.withUnsafeMutableBufferPointer { parts in
                    Parallel.forEachChunk(2) { chunk in
                        for part in chunk {
                            let images = part == 0 ? 0..<first : first..<g.batch
                            var pg = g
                            pg.batch = images.count
                            parts[part] = Int8Kernels.conv2d(Array(c.x[(images.lowerBound * sample)..<(images.upperBound * sample)]), pg,
                                                             inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                             requantize: c.requantization)
                        }
                    }
                }
                XCTAssertEqual(parts[0] + parts[1], whole, "split after \(first) images \(g)")
                XCTAssertEqual(parts[0].count, first * outputs)
            }
        }
    }
}
