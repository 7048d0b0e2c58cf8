import XCTest
import QAT

/// Naive Double convolution with groups, dilation, asymmetric padding and rectangular kernels:
/// x [N, C, H, W], w [O, C/groups, KH, KW], b [O] → [N, O, Ho, Wo].
func groupedConvReference(x: [Double], xShape: [Int], w: [Double], wShape: [Int], b: [Double]?,
                          stride: (Int, Int), pads: (top: Int, left: Int, bottom: Int, right: Int),
                          dilation: (Int, Int), groups: Int) -> (shape: [Int], values: [Double]) {
    let (n, c, h, wd) = (xShape[0], xShape[1], xShape[2], xShape[3])
    let (o, cg, kh, kw) = (wShape[0], wShape[1], wShape[2], wShape[3])
    let oh = (h + pads.top + pads.bottom - dilation.0 * (kh - 1) - 1) / stride.0 + 1
    let ow = (wd + pads.left + pads.right - dilation.1 * (kw - 1) - 1) / stride.1 + 1
    let og = o / groups
    precondition(cg * groups == c)
    let yShape = [n, o, oh, ow]
    var y = [Double](repeating: 0, count: n * o * oh * ow)
    for image in 0..<n {
        for oc in 0..<o {
            let group = oc / og
            for i in 0..<oh {
                for j in 0..<ow {
                    var sum = b?[oc] ?? 0
                    for ic in 0..<cg {
                        for ki in 0..<kh {
                            let row = i * stride.0 - pads.top + ki * dilation.0
                            if row < 0 || row >= h { continue }
                            for kj in 0..<kw {
                                let col = j * stride.1 - pads.left + kj * dilation.1
                                if col < 0 || col >= wd { continue }
                                sum += x[index4(xShape, image, group * cg + ic, row, col)] * w[index4(wShape, oc, ic, ki, kj)]
                            }
                        }
                    }
                    y[index4(yShape, image, oc, i, j)] = sum
                }
            }
        }
    }
    return (yShape, y)
}

/// conv2d with groups (depthwise included), dilation, asymmetric padding, rectangular kernel and
/// stride: gradient checks against the Double loop above, agreement between the depthwise and the
/// general path, the old shapes on the original conv2d, and thread-count independence.
final class OpConvGroupedTests: XCTestCase {
    struct Case {
        var batch, channels, height, width, outputs: Int
        var kernel: (Int, Int)
        var stride = (1, 1)
        var pads: (top: Int, left: Int, bottom: Int, right: Int) = (0, 0, 0, 0)
        var dilation = (1, 1)
        var groups = 1
        var bias = true
        var inputGradient = true
        var weightGradient = true

        var xShape: [Int] { [batch, channels, height, width] }
        var wShape: [Int] { [outputs, channels / groups, kernel.0, kernel.1] }
    }

    func variables(_ t: Case, seed: UInt64) -> (Variable, Variable, Variable?) {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable(t.xShape, requiresGrad: t.inputGradient, &rng)
        let w = randomVariable(t.wShape, bound: 0.5, requiresGrad: t.weightGradient, &rng)
        let b: Variable? = t.bias ? randomVariable([t.outputs], &rng) : nil
        return (x, w, b)
    }

    func run(_ t: Case, _ x: Variable, _ w: Variable, _ b: Variable?, tape: Tape?) -> Variable {
        conv2d(x, weight: w, bias: b, stride: Size2D(height: t.stride.0, width: t.stride.1),
               padding: Padding2D(top: t.pads.top, left: t.pads.left, bottom: t.pads.bottom, right: t.pads.right),
               dilation: Size2D(height: t.dilation.0, width: t.dilation.1), groups: t.groups, tape: tape)
    }

    func check(_ t: Case, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let (x, w, b) = variables(t, seed: seed)
        var inputs = [OpInput("x", x), OpInput("weight", w)]
        if let b { inputs.append(OpInput("bias", b)) }
        let reference = { (v: [[Double]]) in
            groupedConvReference(x: v[0], xShape: t.xShape, w: v[1], wShape: t.wShape, b: t.bias ? v[2] : nil,
                                 stride: t.stride, pads: t.pads, dilation: t.dilation, groups: t.groups)
        }
        checkOp("conv2d \(t)", inputs: inputs, outputShape: reference(inputs.map { $0.variable.value.storage.map(Double.init) }).shape,
                reference: { v in reference(v).values },
                forward: { tape in self.run(t, x, w, b, tape: tape) },
                seed: seed &+ 1, file: file, line: line)
    }

    /// The odd shapes of the brief: 7×5 images, 3 → 5 channels, stride 2, dilation 2, pads (1, 0, 2, 1).
    let general = Case(batch: 2, channels: 3, height: 7, width: 5, outputs: 5, kernel: (3, 3), stride: (2, 2),
                       pads: (1, 0, 2, 1), dilation: (2, 2))
    let depthwise = Case(batch: 2, channels: 3, height: 7, width: 5, outputs: 3, kernel: (3, 3), stride: (2, 2),
                         pads: (1, 0, 2, 1), dilation: (2, 2), groups: 3)

    func testGeneralStride2Dilation2AsymmetricPadding() { check(general, seed: 601) }
    func testRectangularKernelAndStride() {
        check(Case(batch: 2, channels: 3, height: 7, width: 6, outputs: 4, kernel: (3, 2), stride: (2, 1),
                   pads: (1, 0, 2, 1)), seed: 602)
    }
    func testRectangularDilationNoBias() {
        check(Case(batch: 1, channels: 2, height: 6, width: 9, outputs: 3, kernel: (2, 3), stride: (1, 2),
                   pads: (0, 2, 1, 0), dilation: (1, 3), bias: false), seed: 603)
    }
    func testSymmetricPaddingPerAxis() {
        check(Case(batch: 2, channels: 2, height: 5, width: 5, outputs: 3, kernel: (3, 3), pads: (1, 0, 1, 0)), seed: 604)
    }
    func testGroups2() {
        check(Case(batch: 2, channels: 4, height: 7, width: 5, outputs: 6, kernel: (3, 3), stride: (2, 2),
                   pads: (1, 0, 2, 1), dilation: (2, 2), groups: 2), seed: 605)
    }
    func testGroups4() {
        check(Case(batch: 2, channels: 8, height: 6, width: 6, outputs: 8, kernel: (3, 3), pads: (1, 1, 1, 1), groups: 4),
              seed: 606)
    }
    func testGroups2OnlyWeightGradient() {
        check(Case(batch: 2, channels: 4, height: 5, width: 6, outputs: 4, kernel: (1, 3), pads: (0, 1, 0, 1),
                   groups: 2, inputGradient: false), seed: 607)
    }
    func testDepthwiseStride2Dilation2AsymmetricPadding() { check(depthwise, seed: 608) }
    func testDepthwiseMultiplier2RectangularKernel() {
        check(Case(batch: 2, channels: 3, height: 6, width: 7, outputs: 6, kernel: (3, 2), stride: (1, 2),
                   pads: (1, 1, 1, 0), groups: 3), seed: 609)
    }
    func testDepthwiseMobileNetShapeNoBias() {
        check(Case(batch: 3, channels: 4, height: 8, width: 8, outputs: 4, kernel: (3, 3), stride: (2, 2),
                   pads: (0, 0, 1, 1), groups: 4, bias: false), seed: 610)
    }
    func testDepthwiseOnlyInputGradient() {
        var t = depthwise
        t.weightGradient = false
        check(t, seed: 611)
    }
    func testDepthwiseCheckedOnTheGeneralPath() {
        let saved = ConvKernels.depthwiseEnabled
        defer { ConvKernels.depthwiseEnabled = saved }
        ConvKernels.depthwiseEnabled = false
        check(depthwise, seed: 612)
    }

    /// 1 input channel, 2 outputs, 3×3 ones kernel with dilation 2 on a 5×5 ramp: each output sums the
    /// nine taps x[r, c] for r, c ∈ {0, 2, 4} (the whole grid: 0 + 2 + 4 + 10 + 12 + 14 + 20 + 22 + 24).
    func testDilationHandComputed() {
        let x = Variable(Tensor(shape: [1, 1, 5, 5], storage: (0..<25).map(Float.init)))
        let w = Variable(Tensor(shape: [2, 1, 3, 3], storage: [Float](repeating: 1, count: 9) + [Float](repeating: -1, count: 9)))
        let y = conv2d(x, weight: w, bias: nil, stride: Size2D(1), padding: Padding2D(0), dilation: Size2D(2),
                       groups: 1, tape: nil)
        XCTAssertEqual(y.value, Tensor(shape: [1, 2, 1, 1], storage: [108, -108]))
    }

    /// The depthwise loops and im2col + sgemm compute the same convolution (not the same bytes:
    /// the sums run in different orders).
    func testDepthwiseMatchesGeneralPath() {
        for t in [depthwise,
                  Case(batch: 2, channels: 4, height: 9, width: 6, outputs: 8, kernel: (3, 3), stride: (2, 1),
                       pads: (1, 2, 0, 1), dilation: (1, 2), groups: 4)] {
            func results(depthwiseEnabled: Bool) -> [[Float]] {
                let saved = ConvKernels.depthwiseEnabled
                defer { ConvKernels.depthwiseEnabled = saved }
                ConvKernels.depthwiseEnabled = depthwiseEnabled
                let (x, w, b) = variables(t, seed: 613)
                let tape = Tape()
                let y = run(t, x, w, b, tape: tape)
                var rng = SeededGenerator(seed: 614)
                tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }, tape: tape))
                return [y.value.storage, x.grad!.storage, w.grad!.storage, b!.grad!.storage]
            }
            let (direct, gemm) = (results(depthwiseEnabled: true), results(depthwiseEnabled: false))
            for (name, (a, e)) in zip(["y", "dx", "dw", "db"], zip(direct, gemm)) {
                assertClose(a, e.map(Double.init), tolerance: 1e-5, "depthwise vs general \(name) \(t)")
            }
        }
    }

    /// Shapes the original conv2d handles (groups 1, dilation 1, square, the same padding all round)
    /// go to it: identical bytes, forward and backward.
    func testOldShapesTakeTheOriginalConv() {
        for (stride, padding) in [(1, 0), (2, 1), (1, 2)] {
            func results(new: Bool) -> [[Float]] {
                var rng = SeededGenerator(seed: 615)
                let x = randomVariable([2, 3, 8, 7], &rng)
                let w = randomVariable([4, 3, 3, 3], &rng)
                let b = randomVariable([4], &rng)
                let tape = Tape()
                let y = new ? conv2d(x, weight: w, bias: b, stride: Size2D(stride), padding: Padding2D(padding),
                                     dilation: Size2D(1), groups: 1, tape: tape)
                            : conv2d(x, weight: w, bias: b, stride: stride, padding: padding, tape: tape)
                tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }, tape: tape))
                return [y.value.storage, x.grad!.storage, w.grad!.storage, b.grad!.storage]
            }
            XCTAssertEqual(results(new: true), results(new: false), "stride \(stride) padding \(padding)")
        }
    }

    /// Work is split by image, plane, channel and fixed blocks, never by the thread count.
    func testThreadsGiveIdenticalResults() {
        for t in [general, depthwise,
                  Case(batch: 5, channels: 4, height: 7, width: 5, outputs: 6, kernel: (3, 3), stride: (2, 2),
                       pads: (1, 0, 2, 1), dilation: (2, 2), groups: 2),
                  // Large enough for several gemm image blocks and two weight-gradient row chunks.
                  Case(batch: 5, channels: 16, height: 32, width: 32, outputs: 8, kernel: (3, 3),
                       pads: (1, 1, 1, 1), dilation: (1, 1), groups: 2)] {
            func results() -> [[Float]] {
                let (x, w, b) = variables(t, seed: 616)
                let tape = Tape()
                let y = run(t, x, w, b, tape: tape)
                var rng = SeededGenerator(seed: 617)
                tape.backward(from: weightedSum(y, weights: (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }, tape: tape))
                return [y.value.storage, x.grad!.storage, w.grad!.storage, b!.grad!.storage]
            }
            let saved = Parallel.threads
            defer { Parallel.threads = saved }
            Parallel.threads = 1
            let single = results()
            Parallel.threads = 2
            XCTAssertEqual(single, results(), "\(t)")
        }
    }
}
