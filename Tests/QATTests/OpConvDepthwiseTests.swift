import XCTest
import QAT

/// The depthwise kernels (Conv2DDepthwise.swift) on every path this CPU runs: finite-difference
/// gradient checks on odd shapes, agreement with a Double reference and with the general loops on
/// MobileNet-sized planes, and identical bytes for 1 and 2 threads.
final class OpConvDepthwiseTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var batch, channels, height, width: Int
        var stride = 1
        var pads: (top: Int, left: Int, bottom: Int, right: Int) = (1, 1, 1, 1)
        var kernel = (3, 3)
        var multiplier = 1
        var bias = true

        var outputs: Int { channels * multiplier }
        var xShape: [Int] { [batch, channels, height, width] }
        var wShape: [Int] { [outputs, 1, kernel.0, kernel.1] }
        var outputHeight: Int { (height + pads.top + pads.bottom - kernel.0) / stride + 1 }
        var outputWidth: Int { (width + pads.left + pads.right - kernel.1) / stride + 1 }
        var description: String {
            "\(batch)×\(channels)×\(height)×\(width) k\(kernel) m\(multiplier) s\(stride) pads \(pads)"
        }
    }

    /// Odd shapes for the 3×3 kernels: odd sizes, stride 2 with odd and even sizes, asymmetric
    /// padding (TensorFlow's "same" for stride 2 pads only bottom and right), 1×1 planes.
    static let oddCases = [
        Case(batch: 2, channels: 3, height: 7, width: 5),
        Case(batch: 2, channels: 3, height: 9, width: 7, stride: 2),
        Case(batch: 2, channels: 2, height: 8, width: 6, stride: 2, pads: (0, 0, 1, 1)),
        Case(batch: 1, channels: 3, height: 7, width: 6, stride: 2, pads: (1, 0, 2, 1), bias: false),
        Case(batch: 2, channels: 2, height: 6, width: 5, pads: (2, 0, 0, 2)),
        Case(batch: 2, channels: 2, height: 5, width: 7, stride: 2, pads: (2, 2, 0, 1)),
        Case(batch: 3, channels: 2, height: 1, width: 1),
        Case(batch: 3, channels: 2, height: 1, width: 1, stride: 2),
        Case(batch: 2, channels: 2, height: 2, width: 3, stride: 2, pads: (1, 1, 0, 0)),
        Case(batch: 1, channels: 2, height: 3, width: 19, pads: (0, 1, 0, 1)),
    ]

    /// Shapes the 3×3 kernels leave to the loops on every path.
    static let loopCases = [
        Case(batch: 2, channels: 3, height: 7, width: 6, stride: 2, pads: (1, 1, 1, 1), kernel: (3, 3), multiplier: 2),
        Case(batch: 2, channels: 2, height: 7, width: 7, stride: 1, pads: (2, 2, 2, 2), kernel: (5, 5)),
        Case(batch: 2, channels: 2, height: 8, width: 8, stride: 3, pads: (1, 1, 1, 1)),
        Case(batch: 2, channels: 2, height: 8, width: 8, stride: 1, pads: (3, 1, 0, 1)),
    ]

    static var paths: [DepthwiseConvPath] { DepthwiseConvPath.allCases.filter(\.isSupported) }

    func variables(_ t: Case, seed: UInt64) -> (Variable, Variable, Variable?) {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable(t.xShape, &rng)
        let w = randomVariable(t.wShape, bound: 0.5, &rng)
        let b: Variable? = t.bias ? randomVariable([t.outputs], &rng) : nil
        return (x, w, b)
    }

    func run(_ t: Case, _ x: Variable, _ w: Variable, _ b: Variable?, tape: Tape?) -> Variable {
        conv2d(x, weight: w, bias: b, stride: Size2D(t.stride),
               padding: Padding2D(top: t.pads.top, left: t.pads.left, bottom: t.pads.bottom, right: t.pads.right),
               dilation: Size2D(1), groups: t.channels, tape: tape)
    }

    func withPath<R>(_ path: DepthwiseConvPath, _ body: () -> R) -> R {
        let saved = ConvKernels.depthwisePath
        defer { ConvKernels.depthwisePath = saved }
        ConvKernels.depthwisePath = path
        return body()
    }

    /// y, dx, dw, db after backward from Σ r ⊙ y with fixed random r.
    func results(_ t: Case, seed: UInt64) -> [[Float]] {
        let (x, w, b) = variables(t, seed: seed)
        let tape = Tape()
        let y = run(t, x, w, b, tape: tape)
        var rng = SeededGenerator(seed: seed &+ 1)
        tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }, tape: tape))
        return [y.value.storage, x.grad!.storage, w.grad!.storage, b?.grad!.storage ?? []]
    }

    func testEveryPathPassesTheGradientCheck() {
        for path in Self.paths {
            for (k, t) in (Self.oddCases + Self.loopCases).enumerated() {
                withPath(path) {
                    let (x, w, b) = variables(t, seed: 700 + UInt64(k))
                    var inputs = [OpInput("x", x), OpInput("weight", w)]
                    if let b { inputs.append(OpInput("bias", b)) }
                    let reference = { (v: [[Double]]) in
                        groupedConvReference(x: v[0], xShape: t.xShape, w: v[1], wShape: t.wShape, b: t.bias ? v[2] : nil,
                                             stride: (t.stride, t.stride), pads: t.pads, dilation: (1, 1),
                                             groups: t.channels)
                    }
                    checkOp("depthwise \(path) \(t)", inputs: inputs,
                            outputShape: [t.batch, t.outputs, t.outputHeight, t.outputWidth],
                            reference: { v in reference(v).values },
                            forward: { tape in self.run(t, x, w, b, tape: tape) }, seed: 750 + UInt64(k))
                }
            }
        }
    }

    /// The Double reference of y, dx, dw and db for output gradient r, each with the sum of the
    /// magnitudes of its terms (the scale its Float rounding error grows with).
    func reference(_ t: Case, x: [Float], w: [Float], b: [Float], r: [Float]) -> [(values: [Double], scale: [Double])] {
        let (oh, ow) = (t.outputHeight, t.outputWidth)
        let yShape = [t.batch, t.channels, oh, ow]
        var y = [Double](repeating: 0, count: r.count), yScale = y
        var gx = [Double](repeating: 0, count: x.count), gxScale = gx
        var gw = [Double](repeating: 0, count: w.count), gwScale = gw
        var gb = [Double](repeating: 0, count: t.channels), gbScale = gb
        for n in 0..<t.batch {
            for c in 0..<t.channels {
                for i in 0..<oh {
                    for j in 0..<ow {
                        let out = index4(yShape, n, c, i, j)
                        let g = Double(r[out])
                        y[out] = t.bias ? Double(b[c]) : 0
                        yScale[out] = abs(y[out])
                        gb[c] += g
                        gbScale[c] += abs(g)
                        for kh in 0..<3 {
                            let row = i * t.stride + kh - t.pads.top
                            if row < 0 || row >= t.height { continue }
                            for kw in 0..<3 {
                                let column = j * t.stride + kw - t.pads.left
                                if column < 0 || column >= t.width { continue }
                                let (xi, wi) = (index4(t.xShape, n, c, row, column), c * 9 + kh * 3 + kw)
                                let (xv, wv) = (Double(x[xi]), Double(w[wi]))
                                y[out] += wv * xv
                                yScale[out] += abs(wv * xv)
                                gx[xi] += wv * g
                                gxScale[xi] += abs(wv * g)
                                gw[wi] += g * xv
                                gwScale[wi] += abs(g * xv)
                            }
                        }
                    }
                }
            }
        }
        return [(y, yScale), (gx, gxScale), (gw, gwScale), (gb, gbScale)]
    }

    /// MobileNet-sized planes (28×28, 14×14, 7×7, stride 1 and 2) on every path against the Double
    /// reference: |error| ≤ 1e-5 · (1 + Σ|terms|). And each 3×3 path against the loops the same way.
    /// Rows wider than 1024 columns, where AVX-512 falls back from its in-place kernels to the
    /// padded-copy ones the other paths use.
    func testPathsAgreeWithTheReferenceOnMobileNetPlanes() {
        let cases = [Case(batch: 5, channels: 3, height: 28, width: 28),
                     Case(batch: 5, channels: 3, height: 28, width: 28, stride: 2),
                     Case(batch: 4, channels: 2, height: 14, width: 14, stride: 2, pads: (0, 0, 1, 1)),
                     Case(batch: 6, channels: 3, height: 7, width: 7),
                     Case(batch: 2, channels: 2, height: 3, width: 1031),
                     Case(batch: 2, channels: 2, height: 4, width: 2051, stride: 2, pads: (1, 0, 0, 1))]
        for (k, t) in cases.enumerated() {
            let (x, w, b) = variables(t, seed: 800 + UInt64(k))
            var rng = SeededGenerator(seed: 800 + UInt64(k) &+ 1)
            let r = (0..<(t.batch * t.channels * t.outputHeight * t.outputWidth)).map { _ in rng.nextUnitFloat() - 0.5 }
            let expected = reference(t, x: x.value.storage, w: w.value.storage, b: b!.value.storage, r: r)
            let loops = withPath(.loops) { results(t, seed: 800 + UInt64(k)) }
            for path in Self.paths {
                let actual = withPath(path) { results(t, seed: 800 + UInt64(k)) }
                for (name, (a, (e, loop))) in zip(["y", "dx", "dw", "db"], zip(actual, zip(expected, loops))) {
                    XCTAssertEqual(a.count, e.values.count, "\(path) \(name) \(t)")
                    let bad = a.indices.first { i in abs(Double(a[i]) - e.values[i]) > 1e-5 * (1 + e.scale[i]) }
                    XCTAssertNil(bad, "\(path) \(name)[\(bad ?? 0)] \(t): \(bad.map { a[$0] } ?? 0) vs \(bad.map { e.values[$0] } ?? 0)")
                    let apart = a.indices.first { i in abs(a[i] - loop[i]) > Float(2e-5 * (1 + e.scale[i])) }
                    XCTAssertNil(apart, "\(path) vs loops \(name)[\(apart ?? 0)] \(t)")
                }
            }
        }
    }

    /// By hand: two 3×3 planes of ones, weights 1…9 on each, stride 2, padding 1 → 2×2 outputs,
    /// each the sum of the taps that land inside (y[0, 0] = 5 + 6 + 8 + 9, y[0, 1] = 4 + 5 + 7 + 8,
    /// y[1, 0] = 2 + 3 + 5 + 6, y[1, 1] = 1 + 2 + 4 + 5). With gy = 1, dx[r, q] is the sum of the
    /// weights that read x[r, q] (the centre is read by taps 9, 7, 3 and 1) and dw[kh, kw] the
    /// number of outputs whose tap (kh, kw) lands inside (1, 2, 1 per axis).
    func testHandComputedStride2() {
        for path in Self.paths {
            withPath(path) {
                let x = Variable(Tensor(shape: [1, 2, 3, 3], storage: [Float](repeating: 1, count: 18)), requiresGrad: true)
                let w = Variable(Tensor(shape: [2, 1, 3, 3], storage: (1...9).map(Float.init) + (1...9).map(Float.init)), requiresGrad: true)
                let tape = Tape()
                let y = conv2d(x, weight: w, bias: nil, stride: Size2D(2), padding: Padding2D(1), dilation: Size2D(1),
                               groups: 2, tape: tape)
                XCTAssertEqual(y.value.storage, [28, 24, 16, 12, 28, 24, 16, 12], "\(path)")
                tape.backward(from: weightedSum(y, weights: [Float](repeating: 1, count: 8), tape: tape))
                let dx: [Float] = [5, 10, 5, 10, 20, 10, 5, 10, 5]
                XCTAssertEqual(x.grad?.storage, dx + dx, "\(path)")
                let dw: [Float] = [1, 2, 1, 2, 4, 2, 1, 2, 1]
                XCTAssertEqual(w.grad?.storage, dw + dw, "\(path)")
            }
        }
    }

    /// Units are planes and channels, never thread-dependent blocks: 1 and 2 threads give the
    /// same bytes on every path.
    func testThreadsGiveIdenticalResultsOnEveryPath() {
        let cases = [Case(batch: 5, channels: 7, height: 15, width: 13),
                     Case(batch: 5, channels: 7, height: 15, width: 13, stride: 2, pads: (0, 1, 1, 0))]
        for path in Self.paths {
            for t in cases {
                withPath(path) {
                    let saved = Parallel.threads
                    defer { Parallel.threads = saved }
                    Parallel.threads = 1
                    let single = results(t, seed: 900)
                    Parallel.threads = 2
                    XCTAssertEqual(single, results(t, seed: 900), "\(path) \(t)")
                }
            }
        }
    }

    // MARK: the kernels that read the planes in place (AVX-512, AVX2)

    static var directPaths: [DepthwiseConvPath] { [.avx2, .avx512].filter(\.isSupported) }

    /// Plane widths around the 8- and 16-column blocks (1, 7, 8, 9, 15, 16, 17, 28), stride 1 and
    /// 2, padding 0, 1 and asymmetric ones, 3 channels, 3 images.
    static var directCases: [Case] {
        var cases: [Case] = []
        for (k, width) in [1, 7, 8, 9, 15, 16, 17, 28].enumerated() {
            let height = [3, 6, 5, 4][k % 4]
            for stride in [1, 2] {
                for pads in [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1), (2, 1, 0, 2), (1, 2, 2, 0)] {
                    let t = Case(batch: 3, channels: 3, height: height, width: width, stride: stride, pads: pads,
                                 bias: (k + stride) % 3 != 0)
                    if height + pads.0 + pads.2 >= 3 && width + pads.1 + pads.3 >= 3 { cases.append(t) }
                }
            }
        }
        return cases
    }

    /// Runs body with the in-place kernels on every plane they fit (enabled) or on none.
    func withDirect<R>(_ enabled: Bool, _ body: () -> R) -> R {
        ConvKernels.enableDepthwiseDirect(enabled, everywhere: true)
        defer { ConvKernels.enableDepthwiseDirect(true) }
        return body()
    }

    /// The in-place kernels against the padded-copy ones of the same path: the forward and the
    /// input gradient sum the same terms in the same order (equal values), the weight gradient
    /// (lanes are columns) within the reference tolerance of the Double reference and the loops.
    func testDirectKernelsAgreeWithThePaddedCopyKernels() {
        for path in Self.directPaths {
            for (k, t) in Self.directCases.enumerated() {
                let seed = 1000 + UInt64(k)
                let (direct, copy) = withPath(path) {
                    (withDirect(true) { results(t, seed: seed) }, withDirect(false) { results(t, seed: seed) })
                }
                XCTAssertEqual(direct[0], copy[0], "\(path) y \(t)")
                XCTAssertEqual(direct[1], copy[1], "\(path) dx \(t)")
                XCTAssertEqual(direct[3], copy[3], "\(path) db \(t)")
                let (x, w, b) = variables(t, seed: seed)
                var rng = SeededGenerator(seed: seed &+ 1)
                let r = (0..<(t.batch * t.channels * t.outputHeight * t.outputWidth)).map { _ in rng.nextUnitFloat() - 0.5 }
                let expected = reference(t, x: x.value.storage, w: w.value.storage, b: b?.value.storage ?? [0, 0, 0], r: r)[2]
                let loops = withPath(.loops) { results(t, seed: seed) }[2]
                let dw = direct[2]
                XCTAssertEqual(dw.count, expected.values.count, "\(path) dw \(t)")
                let bad = dw.indices.first { i in abs(Double(dw[i]) - expected.values[i]) > 1e-5 * (1 + expected.scale[i]) }
                XCTAssertNil(bad, "\(path) dw[\(bad ?? 0)] \(t): \(bad.map { dw[$0] } ?? 0) vs \(bad.map { expected.values[$0] } ?? 0)")
                let apart = dw.indices.first { i in abs(dw[i] - loops[i]) > Float(2e-5 * (1 + expected.scale[i])) }
                XCTAssertNil(apart, "\(path) dw vs loops [\(apart ?? 0)] \(t)")
            }
        }
    }

    /// Finite differences through the in-place kernels on shapes with partial and several blocks.
    func testDirectKernelsPassTheGradientCheck() {
        let cases = [Case(batch: 3, channels: 3, height: 5, width: 9),
                     Case(batch: 3, channels: 3, height: 4, width: 17, stride: 2),
                     Case(batch: 3, channels: 1, height: 3, width: 16, pads: (0, 0, 0, 0), bias: false),
                     Case(batch: 3, channels: 3, height: 7, width: 15, stride: 2, pads: (0, 0, 1, 1)),
                     Case(batch: 3, channels: 3, height: 3, width: 1, stride: 2, pads: (2, 1, 0, 2))]
        for path in Self.directPaths {
            for (k, t) in cases.enumerated() {
                withPath(path) { withDirect(true) {
                    let (x, w, b) = variables(t, seed: 1100 + UInt64(k))
                    var inputs = [OpInput("x", x), OpInput("weight", w)]
                    if let b { inputs.append(OpInput("bias", b)) }
                    let reference = { (v: [[Double]]) in
                        groupedConvReference(x: v[0], xShape: t.xShape, w: v[1], wShape: t.wShape, b: t.bias ? v[2] : nil,
                                             stride: (t.stride, t.stride), pads: t.pads, dilation: (1, 1),
                                             groups: t.channels)
                    }
                    checkOp("depthwise direct \(path) \(t)", inputs: inputs,
                            outputShape: [t.batch, t.outputs, t.outputHeight, t.outputWidth],
                            reference: { v in reference(v).values },
                            forward: { tape in self.run(t, x, w, b, tape: tape) }, seed: 1150 + UInt64(k))
                } }
            }
        }
    }

    // MARK: the AVX2 kernels that compute several output rows per step

    /// Widths 1 … 33 (around the 8-column blocks and the 4-row groups), heights 1 … 30, stride 1
    /// and 2, padding 0, 1, 2 and asymmetric, 3 (odd) channels, 3 images.
    static var rowCases: [Case] {
        let pads = [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2), (0, 0, 1, 1), (2, 1, 0, 2), (1, 2, 2, 0), (2, 0, 1, 2)]
        var cases: [Case] = []
        for width in 1...33 {
            for stride in [1, 2] {
                let height = (width * 7 + stride * 5) % 30 + 1
                let p = pads[(width + stride) % pads.count]
                guard height + p.0 + p.2 >= 3 && width + p.1 + p.3 >= 3 else { continue }
                cases.append(Case(batch: 3, channels: 3, height: height, width: width, stride: stride, pads: p,
                                  bias: width % 3 != 0))
            }
        }
        return cases
    }

    /// The row-group kernels against the one-row in-place kernels they replace (both on every plane
    /// they fit): the forward and the input gradient equal, the weight gradient (its partial sums
    /// run in another order) within the reference tolerance of the Double reference and of the
    /// one-row kernels.
    func testRowKernelsAgreeWithTheOneRowKernels() throws {
        guard DepthwiseConvPath.avx2.isSupported else { throw XCTSkip("no AVX2") }
        XCTAssertGreaterThan(Self.rowCases.count, 60)
        for (k, t) in Self.rowCases.enumerated() {
            let seed = 1200 + UInt64(k)
            let (rows, oneRow) = withPath(.avx2) { withDirect(true) { () -> ([[Float]], [[Float]]) in
                defer { ConvKernels.enableDepthwiseRows(true) }
                ConvKernels.enableDepthwiseRows(true)
                let rows = results(t, seed: seed)
                ConvKernels.enableDepthwiseRows(false)
                return (rows, results(t, seed: seed))
            } }
            XCTAssertEqual(rows[0], oneRow[0], "y \(t)")
            XCTAssertEqual(rows[1], oneRow[1], "dx \(t)")
            XCTAssertEqual(rows[3], oneRow[3], "db \(t)")
            let (x, w, b) = variables(t, seed: seed)
            var rng = SeededGenerator(seed: seed &+ 1)
            let r = (0..<(t.batch * t.channels * t.outputHeight * t.outputWidth)).map { _ in rng.nextUnitFloat() - 0.5 }
            let expected = reference(t, x: x.value.storage, w: w.value.storage, b: b?.value.storage ?? [0, 0, 0], r: r)[2]
            let dw = rows[2]
            XCTAssertEqual(dw.count, expected.values.count, "dw \(t)")
            let bad = dw.indices.first { i in abs(Double(dw[i]) - expected.values[i]) > 1e-5 * (1 + expected.scale[i]) }
            XCTAssertNil(bad, "dw[\(bad ?? 0)] \(t): \(bad.map { dw[$0] } ?? 0) vs \(bad.map { expected.values[$0] } ?? 0)")
            let apart = dw.indices.first { i in abs(dw[i] - oneRow[2][i]) > Float(2e-5 * (1 + expected.scale[i])) }
            XCTAssertNil(apart, "dw vs one row [\(apart ?? 0)] \(t)")
        }
    }

    /// Finite differences through the row-group kernels, and 1 and 2 threads giving the same bytes,
    /// on planes with several row groups and a remainder.
    func testRowKernelsPassTheGradientCheckAndIgnoreThreads() throws {
        guard DepthwiseConvPath.avx2.isSupported else { throw XCTSkip("no AVX2") }
        let cases = [Case(batch: 3, channels: 3, height: 11, width: 13),
                     Case(batch: 3, channels: 3, height: 13, width: 17, stride: 2),
                     Case(batch: 3, channels: 1, height: 9, width: 10, stride: 2, pads: (0, 0, 1, 1), bias: false),
                     Case(batch: 3, channels: 3, height: 6, width: 9, pads: (2, 0, 0, 2))]
        for (k, t) in cases.enumerated() {
            withPath(.avx2) { withDirect(true) {
                let (x, w, b) = variables(t, seed: 1300 + UInt64(k))
                var inputs = [OpInput("x", x), OpInput("weight", w)]
                if let b { inputs.append(OpInput("bias", b)) }
                let reference = { (v: [[Double]]) in
                    groupedConvReference(x: v[0], xShape: t.xShape, w: v[1], wShape: t.wShape, b: t.bias ? v[2] : nil,
                                         stride: (t.stride, t.stride), pads: t.pads, dilation: (1, 1), groups: t.channels)
                }
                checkOp("depthwise rows \(t)", inputs: inputs,
                        outputShape: [t.batch, t.outputs, t.outputHeight, t.outputWidth],
                        reference: { v in reference(v).values },
                        forward: { tape in self.run(t, x, w, b, tape: tape) }, seed: 1350 + UInt64(k))
                let saved = Parallel.threads
                defer { Parallel.threads = saved }
                Parallel.threads = 1
                let single = results(t, seed: 1360)
                Parallel.threads = 2
                XCTAssertEqual(single, results(t, seed: 1360), "threads \(t)")
            } }
        }
    }

    // MARK: the AVX2 kernels that walk small stride-1 planes flat

    /// Stride 1 with the output of the input's size (the planes the flat kernels take: fewer than
    /// 8 columns, at most 256 floats) and, around them, widths 8 … 17 and 14×14 (which they leave to
    /// the row kernels): every padding that keeps the size, heights 1 … 17, odd channel counts, 3 images.
    static var flatCases: [Case] {
        let pads = [(1, 1, 1, 1), (2, 2, 0, 0), (0, 0, 2, 2), (2, 0, 0, 2), (0, 2, 2, 0), (1, 2, 1, 0), (2, 1, 0, 1)]
        var cases: [Case] = []
        for width in Array(1...17) {
            let height = (width * 5 + 3) % 17 + 1
            let p = pads[width % pads.count]
            cases.append(Case(batch: 3, channels: width % 2 == 0 ? 3 : 5, height: height, width: width, pads: p,
                              bias: width % 3 != 0))
        }
        cases.append(Case(batch: 3, channels: 3, height: 7, width: 7))
        cases.append(Case(batch: 2, channels: 3, height: 14, width: 14))
        cases.append(Case(batch: 1, channels: 1, height: 32, width: 7, pads: (0, 2, 2, 0)))   // 224 floats: 28 vectors
        return cases
    }

    /// The flat kernels against the row-group kernels (qat_dw_avx2_flat(0)): the forward and the
    /// input gradient equal; the weight gradient (the row kernels' either way) within the reference
    /// tolerance of the Double reference.
    func testFlatKernelsAgreeWithTheRowKernels() throws {
        guard DepthwiseConvPath.avx2.isSupported else { throw XCTSkip("no AVX2") }
        for (k, t) in Self.flatCases.enumerated() {
            let seed = 1400 + UInt64(k)
            let (flat, rows) = withPath(.avx2) { withDirect(true) { () -> ([[Float]], [[Float]]) in
                defer { ConvKernels.enableDepthwiseFlat(true) }
                ConvKernels.enableDepthwiseFlat(true)
                let flat = results(t, seed: seed)
                ConvKernels.enableDepthwiseFlat(false)
                return (flat, results(t, seed: seed))
            } }
            XCTAssertEqual(flat[0], rows[0], "y \(t)")
            XCTAssertEqual(flat[1], rows[1], "dx \(t)")
            XCTAssertEqual(flat[3], rows[3], "db \(t)")
            let (x, w, b) = variables(t, seed: seed)
            var rng = SeededGenerator(seed: seed &+ 1)
            let r = (0..<(t.batch * t.channels * t.outputHeight * t.outputWidth)).map { _ in rng.nextUnitFloat() - 0.5 }
            let expected = reference(t, x: x.value.storage, w: w.value.storage,
                                     b: b?.value.storage ?? [Float](repeating: 0, count: t.channels), r: r)[2]
            let dw = flat[2]
            XCTAssertEqual(dw.count, expected.values.count, "dw \(t)")
            let bad = dw.indices.first { i in abs(Double(dw[i]) - expected.values[i]) > 1e-5 * (1 + expected.scale[i]) }
            XCTAssertNil(bad, "dw[\(bad ?? 0)] \(t): \(bad.map { dw[$0] } ?? 0) vs \(bad.map { expected.values[$0] } ?? 0)")
            let apart = dw.indices.first { i in abs(dw[i] - rows[2][i]) > Float(2e-5 * (1 + expected.scale[i])) }
            XCTAssertNil(apart, "dw vs rows [\(apart ?? 0)] \(t)")
        }
    }

    /// Finite differences through the flat kernels, and 1 and 2 threads giving the same bytes.
    func testFlatKernelsPassTheGradientCheckAndIgnoreThreads() throws {
        guard DepthwiseConvPath.avx2.isSupported else { throw XCTSkip("no AVX2") }
        let cases = [Case(batch: 3, channels: 3, height: 7, width: 7),
                     Case(batch: 3, channels: 1, height: 5, width: 14, pads: (2, 0, 0, 2), bias: false),
                     Case(batch: 2, channels: 3, height: 9, width: 3, pads: (0, 2, 2, 0))]
        for (k, t) in cases.enumerated() {
            withPath(.avx2) { withDirect(true) {
                let (x, w, b) = variables(t, seed: 1450 + UInt64(k))
                var inputs = [OpInput("x", x), OpInput("weight", w)]
                if let b { inputs.append(OpInput("bias", b)) }
                let reference = { (v: [[Double]]) in
                    groupedConvReference(x: v[0], xShape: t.xShape, w: v[1], wShape: t.wShape, b: t.bias ? v[2] : nil,
                                         stride: (t.stride, t.stride), pads: t.pads, dilation: (1, 1), groups: t.channels)
                }
                checkOp("depthwise flat \(t)", inputs: inputs,
                        outputShape: [t.batch, t.outputs, t.outputHeight, t.outputWidth],
                        reference: { v in reference(v).values },
                        forward: { tape in self.run(t, x, w, b, tape: tape) }, seed: 1470 + UInt64(k))
                let saved = Parallel.threads
                defer { Parallel.threads = saved }
                Parallel.threads = 1
                let single = results(t, seed: 1480)
                Parallel.threads = 2
                XCTAssertEqual(single, results(t, seed: 1480), "threads \(t)")
            } }
        }
    }
}
