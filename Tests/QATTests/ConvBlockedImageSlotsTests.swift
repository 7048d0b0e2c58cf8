import XCTest
import QAT

/// The blocked forward's image slots (Conv2DBlocked.swift): on output planes of at most 64 pixels
/// a register block spans consecutive images' useful pixels, in the forward and in the stride-1
/// input gradient (a forward on the transposed geometry). Each output sums the same terms in the
/// same order as on the per-image blocks, so every result is bit-identical to that path; checked on
/// odd shapes for both instruction sets and lane widths, against a Double reference, by finite
/// differences and across thread counts.
final class ConvBlockedImageSlotsTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.forceBlockedInstructionSet(0)
        ConvKernels.forceBlockedLanes(0)
        ConvKernels.enableBlockedImageSlots(true)
    }

    private var instructionSets: [Int] { blockedInstructionSets }

    private typealias Shape = BlockedConvShape

    /// Output planes 1×1 … 7×7 and 8×8 (the largest on slots), stride 1 and 2, C and O across
    /// 1…40 (8 and 16 lanes, partial channel blocks; a few too small for slots in one pass, which
    /// then runs per image), kernels 2, 3, 5, batch 1, 3 and 7.
    private let shapes: [Shape] = [
        Shape(x: [1, 2, 1, 1], outputs: 1, kernel: 3, stride: 1, padding: 1),     // 1×1
        Shape(x: [3, 5, 2, 2], outputs: 7, kernel: 3, stride: 1, padding: 1),     // 2×2
        Shape(x: [7, 17, 3, 3], outputs: 9, kernel: 3, stride: 1, padding: 1),    // 3×3
        Shape(x: [3, 40, 4, 4], outputs: 33, kernel: 3, stride: 1, padding: 1),   // 4×4
        Shape(x: [7, 3, 5, 5], outputs: 40, kernel: 3, stride: 1, padding: 1),    // 5×5
        Shape(x: [3, 24, 6, 6], outputs: 16, kernel: 3, stride: 1, padding: 1),   // 6×6
        Shape(x: [7, 9, 7, 7], outputs: 12, kernel: 3, stride: 1, padding: 1),    // 7×7
        Shape(x: [3, 8, 7, 5], outputs: 3, kernel: 3, stride: 1, padding: 1),     // 7×5
        Shape(x: [3, 6, 8, 8], outputs: 5, kernel: 3, stride: 1, padding: 1),     // 8×8
        Shape(x: [1, 33, 2, 2], outputs: 2, kernel: 3, stride: 1, padding: 1),    // batch 1, one block
        Shape(x: [3, 11, 4, 4], outputs: 20, kernel: 3, stride: 2, padding: 1),   // 2×2 stride 2
        Shape(x: [7, 16, 7, 7], outputs: 32, kernel: 3, stride: 2, padding: 1),   // 4×4 stride 2
        Shape(x: [3, 8, 14, 13], outputs: 5, kernel: 3, stride: 2, padding: 1),   // 7×7 stride 2
        Shape(x: [1, 13, 3, 3], outputs: 24, kernel: 3, stride: 2, padding: 1),   // 2×2 stride 2, batch 1
        Shape(x: [7, 2, 5, 5], outputs: 3, kernel: 3, stride: 2, padding: 0),     // 2×2 stride 2, no padding
        Shape(x: [3, 6, 9, 9], outputs: 8, kernel: 5, stride: 2, padding: 2),     // 5×5, K 5 stride 2
        Shape(x: [3, 4, 4, 4], outputs: 10, kernel: 5, stride: 1, padding: 2),    // 4×4, K 5 stride 1
        Shape(x: [7, 3, 3, 3], outputs: 6, kernel: 2, stride: 1, padding: 1),     // 4×4, K 2
    ]

    /// y, dx, dW, db of one forward and backward (upstream gradient r) through conv2d.
    private func convRun(_ s: Shape, seed: UInt64) -> [[Float]] {
        var rng = SeededGenerator(seed: seed)
        let x = randomVariable(s.x, &rng)
        let w = randomVariable([s.outputs, s.x[1], s.kernel, s.kernel], bound: 0.3, &rng)
        let b = randomVariable([s.outputs], &rng)
        let tape = Tape()
        let y = conv2d(x, weight: w, bias: b, stride: s.stride, padding: s.padding, tape: tape)
        let r = (0..<y.value.count).map { _ in rng.nextUnitFloat() - 0.5 }
        tape.backward(from: weightedSum(y, weights: r, tape: tape))
        return [y.value.storage, x.grad!.storage, w.grad!.storage, b.grad!.storage]
    }

    func testShapesTakeBlockedPath() {
        for s in shapes {
            let g = s.geometry
            XCTAssertTrue(g.blockedSupported && !g.directSupported && !g.c16Supported, "\(s)")
        }
    }

    /// Slots on and off give the same bits, on each ISA, at the shape's lanes and at 16 lanes.
    func testIdenticalToPerImageBlocks() {
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for lanes in [0, 16] {
                ConvKernels.forceBlockedLanes(lanes)
                for (index, s) in shapes.enumerated() {
                    let seed = UInt64(500 + index)
                    ConvKernels.enableBlockedImageSlots(false)
                    let perImage = convRun(s, seed: seed)
                    ConvKernels.enableBlockedImageSlots(true)
                    let slots = convRun(s, seed: seed)
                    for (part, (a, b)) in zip(["y", "dx", "dW", "db"], zip(slots, perImage)) {
                        XCTAssertEqual(a, b, "isa \(isa) lanes \(lanes) \(s) \(part)")
                    }
                }
            }
        }
    }

    /// The forward on slots agrees with a Double reference up to float rounding.
    func testForwardMatchesDoubleReference() {
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for (index, s) in shapes.enumerated() {
                let seed = UInt64(540 + index)
                var rng = SeededGenerator(seed: seed)
                let wShape = [s.outputs, s.x[1], s.kernel, s.kernel]
                let x = randomVariable(s.x, &rng)
                let w = randomVariable(wShape, bound: 0.3, &rng)
                let b = randomVariable([s.outputs], &rng)
                let y = conv2d(x, weight: w, bias: b, stride: s.stride, padding: s.padding, tape: nil).value.storage
                let reference = conv2dReference(x: x.value.storage.map(Double.init), xShape: s.x,
                                                w: w.value.storage.map(Double.init), wShape: wShape,
                                                b: b.value.storage.map(Double.init), stride: s.stride, padding: s.padding)
                XCTAssertEqual(y.count, reference.count, "\(s)")
                let scale = max(1, reference.map { abs($0) }.max() ?? 1)
                for i in 0..<min(y.count, reference.count) where abs(Double(y[i]) - reference[i]) > 1e-5 * scale {
                    XCTFail("isa \(isa) \(s) y[\(i)]: \(y[i]) vs \(reference[i])")
                    break
                }
            }
        }
    }

    /// Finite-difference gradient checks through the slot forward and input gradient.
    func testGradients() {
        let checked = [Shape(x: [3, 5, 2, 2], outputs: 7, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [2, 17, 3, 3], outputs: 9, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [3, 4, 4, 4], outputs: 18, kernel: 3, stride: 2, padding: 1),
                       Shape(x: [3, 3, 1, 1], outputs: 4, kernel: 3, stride: 1, padding: 1),
                       Shape(x: [2, 3, 4, 4], outputs: 5, kernel: 5, stride: 1, padding: 2)]
        checkBlockedConvGradients(checked, label: "image-slot blocked conv2d", seedBase: 560)
    }

    /// Batches that are not a multiple of the image group, over 1 and 2 threads: bit-identical.
    func testIdenticalAcrossThreads() {
        let threaded = [Shape(x: [19, 16, 2, 2], outputs: 24, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [9, 8, 4, 4], outputs: 16, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [5, 12, 7, 7], outputs: 6, kernel: 3, stride: 1, padding: 1),
                        Shape(x: [11, 16, 7, 7], outputs: 32, kernel: 3, stride: 2, padding: 1)]
        for isa in instructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for s in threaded {
                Parallel.threads = 1
                let single = convRun(s, seed: 580)
                Parallel.threads = 2
                let double = convRun(s, seed: 580)
                XCTAssertEqual(single, double, "isa \(isa) \(s)")
            }
        }
    }
}
