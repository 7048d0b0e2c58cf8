import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATDeploy

/// The INT8 engine's pools and float-node kernels against the training ops they stand for:
/// max pool of any geometry on codes (quantizing the float pool of the dequantized codes) and on
/// floats (QATCore's padded max pool, bit for bit), conv fused with such a pool, unary ops
/// tabulated per code, global average pool and the squeeze-and-excitation multiply; every path.
final class Int8FloatNodeTests: XCTestCase {
    typealias Path = Int8Kernels.Path

    struct PoolCase {
        var height, width: Int
        var kernel: Size2D, stride: Size2D, padding: Padding2D, ceilMode: Bool

        /// The output size as QATCore's pool computes it.
        var geometry: Int8PoolGeometry {
            Int8PoolGeometry(height: height, width: width,
                             outputHeight: slidingWindowCount(input: height, kernel: kernel.height, stride: stride.height,
                                                              padBegin: padding.top, padEnd: padding.bottom, ceilMode: ceilMode),
                             outputWidth: slidingWindowCount(input: width, kernel: kernel.width, stride: stride.width,
                                                             padBegin: padding.left, padEnd: padding.right, ceilMode: ceilMode),
                             kernelHeight: kernel.height, kernelWidth: kernel.width, strideHeight: stride.height,
                             strideWidth: stride.width, padTop: padding.top, padLeft: padding.left)
        }

        func floatPool(_ x: [Float], planes: Int) -> [Float] {
            maxPool2d(Variable(Tensor(shape: [1, planes, height, width], storage: x)), kernel: kernel, stride: stride,
                      padding: padding, ceilMode: ceilMode, tape: nil).value.storage
        }
    }

    /// ResNet's 3×3/2 pad 1 stem pool on odd sizes, rectangular windows and strides, asymmetric
    /// padding, ceil mode, windows lying wholly in the padding (kernel 1, stride 2, pad 1 at the
    /// end), a window larger than the plane, and plain pools (the 2×2 fast path).
    static let poolCases: [PoolCase] = [
        PoolCase(height: 28, width: 28, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: false),
        PoolCase(height: 13, width: 11, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: false),
        PoolCase(height: 13, width: 11, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: true),
        PoolCase(height: 7, width: 9, kernel: Size2D(height: 2, width: 3), stride: Size2D(height: 1, width: 2),
                 padding: Padding2D(top: 0, left: 1, bottom: 1, right: 0), ceilMode: true),
        PoolCase(height: 7, width: 8, kernel: Size2D(3), stride: Size2D(3), padding: Padding2D(top: 1, left: 1, bottom: 0, right: 0),
                 ceilMode: true),
        PoolCase(height: 4, width: 5, kernel: Size2D(1), stride: Size2D(2), padding: Padding2D(top: 0, left: 0, bottom: 1, right: 1),
                 ceilMode: false),
        PoolCase(height: 3, width: 5, kernel: Size2D(4), stride: Size2D(1), padding: Padding2D(2), ceilMode: false),
        PoolCase(height: 9, width: 70, kernel: Size2D(3), stride: Size2D(1), padding: Padding2D(1), ceilMode: false),
        PoolCase(height: 10, width: 6, kernel: Size2D(2), stride: Size2D(2), padding: Padding2D(0), ceilMode: false),
        PoolCase(height: 9, width: 9, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(0), ceilMode: false),
    ]

    static func randomCodes(_ count: Int, _ rng: inout SeededGenerator) -> [Int8] {
        (0..<count).map { _ in Int8.random(in: -128...127, using: &rng) }
    }

    func testMaxPoolOnCodesQuantizesTheFloatPool() {
        var rng = SeededGenerator(seed: 151)
        let grid = QuantizationGrid(bits: 8, scale: 0.037, offset: -11)
        for c in Self.poolCases {
            let planes = 5, g = c.geometry
            XCTAssertTrue(g.outputHeight > 0 && g.outputWidth > 0, "test geometry \(c)")
            let codes = Self.randomCodes(planes * c.height * c.width, &rng)
            let expected = Int8Kernels.quantize(c.floatPool(Int8Kernels.dequantize(codes, grid, path: .portable), planes: planes),
                                                grid, path: .portable)
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                XCTAssertEqual(Int8Kernels.maxPool2d(codes, planes: planes, pool: g, path: path), expected, "\(path) \(c)")
            }
        }
    }

    /// A window with no pixel of the plane gives −128 (the float pool's −∞), by hand.
    func testMaxPoolOnCodesEmptyWindowByHand() {
        // 2×2 plane, kernel 1, stride 2, one row and column of padding at the end: windows at
        // rows/columns 0 and 2, the latter wholly padding.
        let g = Int8PoolGeometry(height: 2, width: 2, outputHeight: 2, outputWidth: 2, kernelHeight: 1, kernelWidth: 1,
                                 strideHeight: 2, strideWidth: 2)
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.maxPool2d([5, -7, 9, 100] as [Int8], planes: 1, pool: g, path: path), [5, -128, -128, -128], "\(path)")
        }
        // 3×3/2 pad 1 on a 3×3 plane: the corner windows see 2×2 pixels, by hand.
        let stem = Int8PoolGeometry(height: 3, width: 3, outputHeight: 2, outputWidth: 2, kernelHeight: 3, kernelWidth: 3,
                                    strideHeight: 2, strideWidth: 2, padTop: 1, padLeft: 1)
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.maxPool2d([1, 2, 3, 4, -5, 6, 7, 8, -9] as [Int8], planes: 1, pool: stem, path: path), [4, 6, 8, 8], "\(path)")
        }
    }

    /// The float pool equals QATCore's bit for bit: with ties of +0 and −0 (the first in scan
    /// order stays), two NaN payloads (the first NaN wins), ±∞ and all-padding windows (the
    /// scan-order kernel); and on planes without NaN and −0 (the separable kernel), with ties of +0.
    func testMaxPoolOnFloatsEqualsTheTrainingOp() {
        var rng = SeededGenerator(seed: 152)
        for c in Self.poolCases {
            for withNaNAndNegativeZero in [true, false] {
                let special: [Float] = withNaNAndNegativeZero ? [0, -Float.zero, .nan, Float(nan: 7, signaling: false), -.infinity, .infinity]
                                                              : [0, 0, -.infinity, .infinity, 1, 1]
                let planes = 4
                let x: [Float] = (0..<(planes * c.height * c.width)).map { _ in
                    let r = Int.random(in: 0..<40, using: &rng)
                    if r < special.count { return special[r] }
                    if r < 20 { return withNaNAndNegativeZero ? [0, -Float.zero][r % 2] : 0 }   // many ties between zeros
                    return Float.random(in: -3...3, using: &rng)
                }
                let expected = c.floatPool(x, planes: planes).map(\.bitPattern)
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    XCTAssertEqual(Int8Kernels.maxPool2d(x, planes: planes, pool: c.geometry, path: path).map(\.bitPattern), expected,
                                   "\(path) \(c) NaN and −0: \(withNaNAndNegativeZero)")
                }
            }
        }
    }

    /// The AVX2 / AVX-512 float pool (8 or 16 windows side by side) equals the loop it replaced
    /// and QATCore's pool, bit for bit: rows of full vectors and remainders, strides 1 and 2 with
    /// the even-element gather reaching past 16 floats, windows clipped at both edges, and planes
    /// with and without NaN, −0 and ±∞.
    func testVectorisedFloatMaxPoolEqualsTheLoop() {
        defer { Int8Kernels.vectoriseFloatMaxPool(true) }
        var rng = SeededGenerator(seed: 153)
        let cases = Self.poolCases + [
            PoolCase(height: 28, width: 45, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(1), ceilMode: false),
            PoolCase(height: 5, width: 37, kernel: Size2D(height: 1, width: 2), stride: Size2D(height: 1, width: 2),
                     padding: Padding2D(0), ceilMode: true),
            PoolCase(height: 6, width: 40, kernel: Size2D(height: 2, width: 5), stride: Size2D(height: 2, width: 1),
                     padding: Padding2D(top: 1, left: 2, bottom: 0, right: 1), ceilMode: false),
            PoolCase(height: 3, width: 17, kernel: Size2D(3), stride: Size2D(1), padding: Padding2D(0), ceilMode: false),
            PoolCase(height: 3, width: 33, kernel: Size2D(3), stride: Size2D(2), padding: Padding2D(0), ceilMode: false),
        ]
        for c in cases {
            for withNaNAndNegativeZero in [true, false] {
                let special: [Float] = withNaNAndNegativeZero ? [0, -Float.zero, .nan, Float(nan: 9, signaling: false), -.infinity, .infinity]
                                                              : [0, 0, -.infinity, 2, 1, 1]
                let planes = 3
                let x: [Float] = (0..<(planes * c.height * c.width)).map { _ in
                    let r = Int.random(in: 0..<60, using: &rng)
                    if r < special.count { return special[r] }
                    if r < 15 { return withNaNAndNegativeZero ? [0, -Float.zero][r % 2] : 0 }
                    return Float.random(in: -3...3, using: &rng)
                }
                let expected = c.floatPool(x, planes: planes).map(\.bitPattern)
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    for vectorised in [false, true] {
                        Int8Kernels.vectoriseFloatMaxPool(vectorised)
                        XCTAssertEqual(Int8Kernels.maxPool2d(x, planes: planes, pool: c.geometry, path: path).map(\.bitPattern), expected,
                                       "\(path) vectorised \(vectorised) \(c) NaN and −0: \(withNaNAndNegativeZero)")
                    }
                }
            }
        }
    }

    /// conv2d fused with a padded pool equals conv2d then the pool, on depthwise and grouped
    /// geometries, through both conv algorithms, on every path.
    func testConvFusedWithAnyPoolEqualsConvThenPool() {
        for c in Int8ConvTests.depthwiseCases() + Int8ConvTests.groupedCases() {
            let g = c.geometry
            let conv = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                          requantize: c.requantization, path: .portable, algorithm: .im2colGEMM)
            for pc in [PoolCase(height: g.outputHeight, width: g.outputWidth, kernel: Size2D(3), stride: Size2D(2),
                                padding: Padding2D(1), ceilMode: false),
                       PoolCase(height: g.outputHeight, width: g.outputWidth, kernel: Size2D(height: 2, width: 3),
                                stride: Size2D(height: 2, width: 1), padding: Padding2D(top: 1, left: 0, bottom: 0, right: 1),
                                ceilMode: true)] {
                let pool = pc.geometry
                guard pool.outputHeight > 0 && pool.outputWidth > 0 else { continue }
                let expected = Int8Kernels.maxPool2d(conv, planes: g.batch * g.outputChannels, pool: pool, path: .portable)
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    for algorithm in g.isDepthwise ? [Int8Kernels.ConvAlgorithm.depthwiseDirect, .im2colGEMM] : [.im2colGEMM] {
                        let fused = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                              requantize: c.requantization, pool: pool, path: path,
                                                              algorithm: algorithm)
                        XCTAssertEqual(fused, expected, "\(path) \(algorithm) \(g) \(pool)")
                    }
                }
            }
        }
    }

    /// conv2d with float output fused with QATCore's ReLU and/or a float max pool equals the
    /// separate passes (conv2dDequantized, the training ReLU, the training pool), bit for bit:
    /// resnet18's stem (1 → 16 channels, 28×28, pool 3×3/2 pad 1), a 4-channel-blocked small
    /// output (several images per GEMM), and the grouped geometries; with and without the ReLU
    /// and the pool, on every path.
    func testConvDequantizedFusedWithReLUAndOrFloatPoolEqualsThePasses() {
        var rng = SeededGenerator(seed: 158)
        let stem = Int8ConvGeometry(batch: 3, channels: 1, height: 28, width: 28, outputChannels: 16, kernelHeight: 3, kernelWidth: 3,
                                    strideHeight: 1, strideWidth: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 1)
        let blocked = Int8ConvGeometry(batch: 5, channels: 8, height: 9, width: 7, outputChannels: 12, kernelHeight: 3, kernelWidth: 3,
                                       strideHeight: 1, strideWidth: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 1)
        let cases = [Int8ConvTests.randomCase(stem, relu6: false, &rng), Int8ConvTests.randomCase(blocked, relu6: false, &rng)]
            + Int8ConvTests.groupedCases()
        for c in cases {
            let g = c.geometry
            let conv = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                     scales: c.scales, offsets: c.offsets, path: .portable, algorithm: .im2colGEMM)
            let pools: [PoolCase?] = [nil, PoolCase(height: g.outputHeight, width: g.outputWidth, kernel: Size2D(3), stride: Size2D(2),
                                                    padding: Padding2D(1), ceilMode: false),
                                      PoolCase(height: g.outputHeight, width: g.outputWidth, kernel: Size2D(height: 2, width: 3),
                                               stride: Size2D(height: 2, width: 1), padding: Padding2D(top: 1, left: 0, bottom: 0, right: 1),
                                               ceilMode: true)]
            for pc in pools {
                let pool = pc?.geometry
                if let pool, pool.outputHeight <= 0 || pool.outputWidth <= 0 { continue }
                for withReLU in [false, true] {
                    let shape = [g.batch, g.outputChannels, g.outputHeight, g.outputWidth]
                    let activated = withReLU ? relu(Variable(Tensor(shape: shape, storage: conv)), tape: nil).value.storage : conv
                    let expected = (pc?.floatPool(activated, planes: g.batch * g.outputChannels) ?? activated).map(\.bitPattern)
                    for path in Path.allCases where Int8Kernels.isSupported(path) {
                        let fused = Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                  scales: c.scales, offsets: c.offsets, relu: withReLU,
                                                                  pool: pool, path: path)
                        XCTAssertEqual(fused.map(\.bitPattern), expected, "\(path) ReLU \(withReLU) \(g) \(String(describing: pool))")
                    }
                }
            }
        }
    }

    /// Small output images share one GEMM (up to 64 columns, several images side by side): the
    /// codes, accumulators, floats and fused pool of a batch of 37 equal those of each image
    /// alone, for 2×2, 3×3 and 5×5 outputs, grouped and not, on every path.
    func testBatchedSmallImagesEqualImagesAlone() {
        var rng = SeededGenerator(seed: 157)
        let shapes: [(size: Int, stride: Int, groups: Int)] = [(4, 2, 1), (5, 2, 2), (5, 1, 1)]
        for s in shapes {
            let g = Int8ConvGeometry(batch: 37, channels: 4, height: s.size, width: s.size, outputChannels: 6, kernelHeight: 3,
                                     kernelWidth: 3, strideHeight: s.stride, strideWidth: s.stride,
                                     padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: s.groups)
            let c = Int8ConvTests.randomCase(g, relu6: false, &rng)
            var one = g
            one.batch = 1
            let (inputSize, outputSize) = (g.channels * g.height * g.width, g.outputChannels * g.outputHeight * g.outputWidth)
            let pool = Int8PoolGeometry(height: g.outputHeight, width: g.outputWidth, outputHeight: (g.outputHeight + 1) / 2,
                                        outputWidth: (g.outputWidth + 1) / 2, kernelHeight: 2, kernelWidth: 2,
                                        strideHeight: 2, strideWidth: 2, padTop: 1, padLeft: 1)
            let pooledSize = g.outputChannels * pool.outputHeight * pool.outputWidth
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                let codes = Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                               requantize: c.requantization, path: path, algorithm: .im2colGEMM)
                let acc = Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                         path: path, algorithm: .im2colGEMM)
                let pooled = Int8Kernels.conv2dMaxPool(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                       requantize: c.requantization, pool: pool, path: path, algorithm: .im2colGEMM)
                for image in [0, 15, 16, 31, 32, 36] {
                    let x = Array(c.x[(image * inputSize)..<((image + 1) * inputSize)])
                    XCTAssertEqual(Array(codes[(image * outputSize)..<((image + 1) * outputSize)]),
                                   Int8Kernels.conv2d(x, one, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      requantize: c.requantization, path: path, algorithm: .im2colGEMM),
                                   "codes \(path) image \(image) \(g)")
                    XCTAssertEqual(Array(acc[(image * outputSize)..<((image + 1) * outputSize)]),
                                   Int8Kernels.conv2dAccumulators(x, one, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                                  path: path, algorithm: .im2colGEMM),
                                   "accumulators \(path) image \(image) \(g)")
                    XCTAssertEqual(Array(pooled[(image * pooledSize)..<((image + 1) * pooledSize)]),
                                   Int8Kernels.conv2dMaxPool(x, one, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                             requantize: c.requantization, pool: pool, path: path,
                                                             algorithm: .im2colGEMM),
                                   "pooled \(path) image \(image) \(g)")
                }
            }
        }
    }

    /// The VNNI path's depthwise kernel with and without VBMI (where this CPU has it) gives the
    /// same codes, accumulators and floats, on the depthwise cases of Int8ConvTests.
    func testDepthwiseVBMIKernelEqualsRowsKernel() {
        guard Int8Kernels.isSupported(.vnni) else { return }
        defer { Int8Kernels.allowVBMI(true) }
        for c in Int8ConvTests.depthwiseCases() {
            let g = c.geometry
            func run(vbmi: Bool) -> ([Int8], [Int32], [UInt32]) {
                Int8Kernels.allowVBMI(vbmi)
                return (Int8Kernels.conv2d(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                           requantize: c.requantization, path: .vnni, algorithm: .depthwiseDirect),
                        Int8Kernels.conv2dAccumulators(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                       path: .vnni, algorithm: .depthwiseDirect),
                        Int8Kernels.conv2dDequantized(c.x, g, inputZeroPoint: c.zero, weights: c.weights, bias: c.bias,
                                                      scales: c.scales, offsets: c.offsets, path: .vnni,
                                                      algorithm: .depthwiseDirect).map(\.bitPattern))
            }
            let with = run(vbmi: true), without = run(vbmi: false)
            XCTAssertEqual(with.0, without.0, "codes \(g)")
            XCTAssertEqual(with.1, without.1, "accumulators \(g)")
            XCTAssertEqual(with.2, without.2, "floats \(g)")
        }
    }

    /// Every code, at many positions of a long odd-length array, looks up exactly what the
    /// training op computes on the dequantized array.
    func testTabulatedUnaryOpsEqualTheTrainingOps() {
        var rng = SeededGenerator(seed: 153)
        let kinds: [LayerKind] = [.hardSwish, .sigmoid, .hardSigmoid(HardSigmoidAttributes(alpha: 1 / 6, beta: 0.5)),
                                  .leakyReLU(LeakyReLUAttributes(negativeSlope: 0.1)), .clip(ClipAttributes(min: -1, max: 2.5)),
                                  .relu6]
        let grids = [QuantizationGrid(bits: 8, scale: 0.05, offset: -3), QuantizationGrid(bits: 8, scale: 0.0123, offset: -128),
                     QuantizationGrid(bits: 8, scale: 0.21, offset: 40)]
        var codes: [Int8] = []
        for _ in 0..<5 { codes += (-128...127).map { Int8($0) }.shuffled(using: &rng) }
        codes += [0, -128, 127]
        for kind in kinds {
            let op = statelessOperation(kind)!
            func apply(_ values: [Float]) -> [Float] {
                op([Variable(Tensor(shape: [1, values.count], storage: values))], nil).value.storage
            }
            for grid in grids {
                let table = Int8Kernels.unaryTable(on: grid, apply)
                let expected = apply(Int8Kernels.dequantize(codes, grid, path: .portable)).map(\.bitPattern)
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    XCTAssertEqual(Int8Kernels.lookup(codes, table: table, path: path).map(\.bitPattern), expected, "\(kind) \(grid) \(path)")
                }
            }
        }
    }

    /// The C hard swish equals QATCore's bit for bit: around the kinks at ±3, at ±0, ±∞, NaN,
    /// and on random values.
    /// An add or a HardSwish with its quantize fused (a block of 1,024 floats at a time) equals
    /// the training op then `quantize`: 2,500 values (two full blocks and a remainder) with ties
    /// on the grid, NaN, ±∞ and values past the code range, every tie rule and narrow range.
    func testAddAndHardSwishQuantizedEqualTheOpThenQuantize() {
        var rng = SeededGenerator(seed: 159)
        let count = 2_500
        func values() -> [Float] {
            (0..<count).map { i in
                switch i % 50 {
                case 0: return .nan
                case 1: return .infinity
                case 2: return -.infinity
                case 3: return Float(Int.random(in: -300...300, using: &rng)) * 0.025   // ties at scale 0.05
                default: return Float.random(in: -9...9, using: &rng)
                }
            }
        }
        let (a, b) = (values(), values())
        let shape = [5, count / 5]
        let sum = add(Variable(Tensor(shape: shape, storage: a)), Variable(Tensor(shape: shape, storage: b)), tape: nil).value.storage
        let swished = hardSwish(Variable(Tensor(shape: shape, storage: a)), tape: nil).value.storage
        for mode in RoundMode.allCases {
            for grid in [QuantizationGrid(bits: 8, scale: 0.05, offset: -3, roundMode: mode),
                         QuantizationGrid(bits: 8, scale: 0.013, offset: 100, roundMode: mode, narrowRange: true)] {
                for path in Path.allCases where Int8Kernels.isSupported(path) {
                    XCTAssertEqual(Int8Kernels.addQuantized(a, b, grid, path: path), Int8Kernels.quantize(sum, grid, path: .portable),
                                   "add \(path) \(grid)")
                    XCTAssertEqual(Int8Kernels.hardSwishQuantized(a, grid, path: path), Int8Kernels.quantize(swished, grid, path: .portable),
                                   "hard swish \(path) \(grid)")
                }
            }
        }
    }

    func testHardSwishEqualsTheTrainingOp() {
        var rng = SeededGenerator(seed: 156)
        var x: [Float] = [-3, 3, -0, 0, .infinity, -.infinity, .nan, -3.0000002, -2.9999998, 2.9999998, 3.0000002, 1e-40, -1e-40]
        x += (0..<1001).map { _ in Float.random(in: -8...8, using: &rng) }
        let expected = hardSwish(Variable(Tensor(shape: [x.count], storage: x)), tape: nil).value.storage.map(\.bitPattern)
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.hardSwish(x, path: path).map(\.bitPattern), expected, "\(path)")
        }
    }

    /// Sums in scan order as globalAveragePool, on floats and on codes, with plane counts that
    /// leave remainders after groups of four.
    func testGlobalAveragePoolEqualsTheTrainingOp() {
        var rng = SeededGenerator(seed: 154)
        let grid = QuantizationGrid(bits: 8, scale: 0.031, offset: 9)
        for (batch, channels, height, width) in [(1, 1, 1, 1), (2, 7, 13, 5), (3, 96, 7, 7), (1, 5, 14, 14)] {
            let count = batch * channels * height * width, planes = batch * channels, area = height * width
            let x = (0..<count).map { _ in Float.random(in: -5...5, using: &rng) }
            let codes = Self.randomCodes(count, &rng)
            func reference(_ values: [Float]) -> [UInt32] {
                globalAveragePool(Variable(Tensor(shape: [batch, channels, height, width], storage: values)), tape: nil)
                    .value.storage.map(\.bitPattern)
            }
            let expected = reference(x), expectedCodes = reference(Int8Kernels.dequantize(codes, grid, path: .portable))
            for path in Path.allCases where Int8Kernels.isSupported(path) {
                XCTAssertEqual(Int8Kernels.globalAveragePool(x, planes: planes, area: area, factor: 1 / Float(area), path: path)
                    .map(\.bitPattern), expected, "floats \(path) \(channels)×\(height)×\(width)")
                XCTAssertEqual(Int8Kernels.globalAveragePool(codes, grid, planes: planes, area: area, factor: 1 / Float(area), path: path)
                    .map(\.bitPattern), expectedCodes, "codes \(path) \(channels)×\(height)×\(width)")
            }
        }
    }

    /// [N, C, H, W] · [N, C, 1, 1] as the broadcasting multiply computes it, both operand orders.
    func testScaleRowsEqualsTheBroadcastingMultiply() {
        var rng = SeededGenerator(seed: 155)
        let (n, c, h, w) = (3, 5, 7, 3)
        let x = (0..<(n * c * h * w)).map { _ in Float.random(in: -4...4, using: &rng) }
        let gate = (0..<(n * c)).map { _ in Float.random(in: 0...1, using: &rng) }
        let a = Variable(Tensor(shape: [n, c, h, w], storage: x)), b = Variable(Tensor(shape: [n, c, 1, 1], storage: gate))
        let expected = multiply(a, b, tape: nil).value.storage.map(\.bitPattern)
        XCTAssertEqual(multiply(b, a, tape: nil).value.storage.map(\.bitPattern), expected)
        for path in Path.allCases where Int8Kernels.isSupported(path) {
            XCTAssertEqual(Int8Kernels.scaleRows(x, by: gate, path: path).map(\.bitPattern), expected, "\(path)")
        }
    }
}
