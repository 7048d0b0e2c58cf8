import XCTest
import QAT

/// Issue 15's second pass on the blocked conv (Conv2DBlocked.swift): the forward stores 4 pixels at
/// a time after an in-register transpose, the image-slot forward reads stride-2 3×3 taps a kernel
/// row at a time, the per-image 3×3 forward ends on 8-pixel blocks, and small images get their
/// phased copy a vector at a time. Each output still sums the same terms in the same order, so
/// every result must be bit-identical to the loops they replaced
/// (`ConvKernels.useBlockedReferenceLoops(true)`); checked on odd shapes for both instruction sets
/// and lane widths, across thread counts, and by finite differences.
final class ConvBlockedReferenceLoopsTests: XCTestCase {
    override func tearDown() {
        Parallel.threads = 1
        ConvKernels.forceBlockedInstructionSet(0)
        ConvKernels.forceBlockedLanes(0)
        ConvKernels.useBlockedReferenceLoops(false)
    }

    private typealias Shape = BlockedConvShape

    /// Input planes 1×1 … 15×15 and one 30×31, stride 2 and 1 (rows under 8 floats and 8 … 16),
    /// C and O across 1…40 (8 and 16 lanes, partial channel blocks, O = 1 where consecutive
    /// images' planes touch), kernels 2, 3 and 5, on slots and per image, batch 1, 3, 5 and 7.
    private let shapes: [Shape] = [
        Shape(x: [3, 8, 14, 14], outputs: 16, kernel: 3, stride: 2, padding: 1),   // resnet18-tiny layer2
        Shape(x: [7, 16, 7, 7], outputs: 32, kernel: 3, stride: 2, padding: 1),    // layer3
        Shape(x: [3, 32, 4, 4], outputs: 40, kernel: 3, stride: 2, padding: 1),    // layer4, O 40
        Shape(x: [1, 13, 1, 1], outputs: 9, kernel: 3, stride: 2, padding: 1),     // 1×1 plane, batch 1
        Shape(x: [7, 9, 15, 15], outputs: 17, kernel: 3, stride: 2, padding: 1),   // 8×8 out, O 17
        Shape(x: [1, 40, 3, 5], outputs: 33, kernel: 3, stride: 2, padding: 1),    // 2×3 out
        Shape(x: [3, 13, 11, 9], outputs: 7, kernel: 3, stride: 2, padding: 1),    // 6×5 out, 8 lanes
        Shape(x: [3, 24, 9, 9], outputs: 1, kernel: 3, stride: 2, padding: 0),     // O 1
        Shape(x: [7, 3, 13, 13], outputs: 24, kernel: 3, stride: 2, padding: 1),   // per image (few terms)
        Shape(x: [3, 2, 30, 31], outputs: 5, kernel: 3, stride: 2, padding: 1),    // per image, wide rows
        Shape(x: [3, 6, 12, 10], outputs: 9, kernel: 5, stride: 2, padding: 2),    // K 5 on slots
        Shape(x: [5, 7, 6, 6], outputs: 12, kernel: 2, stride: 2, padding: 0),     // K 2
        Shape(x: [3, 17, 5, 5], outputs: 33, kernel: 3, stride: 1, padding: 1),    // stride 1 slots
        Shape(x: [7, 12, 7, 7], outputs: 40, kernel: 3, stride: 1, padding: 1),
        Shape(x: [1, 9, 2, 2], outputs: 15, kernel: 3, stride: 1, padding: 1),
        Shape(x: [3, 20, 3, 3], outputs: 1, kernel: 3, stride: 1, padding: 1),     // O 1, stride 1
        Shape(x: [7, 10, 4, 4], outputs: 10, kernel: 3, stride: 1, padding: 1),
        Shape(x: [3, 10, 14, 14], outputs: 8, kernel: 3, stride: 1, padding: 1),   // resnet18-tiny layer1
        Shape(x: [3, 9, 11, 9], outputs: 5, kernel: 3, stride: 1, padding: 1),     // 9-float rows, 8 lanes
        Shape(x: [5, 9, 11, 9], outputs: 20, kernel: 3, stride: 1, padding: 1),    // 16 lanes per image
        Shape(x: [3, 4, 10, 12], outputs: 6, kernel: 5, stride: 1, padding: 2),    // K 5, 12-float rows
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

    /// The new loops and the reference loops give the same bits, on each ISA, at the shape's lanes
    /// and at 16 lanes, with image slots on and off.
    func testIdenticalToReferenceLoops() {
        for isa in blockedInstructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for lanes in [0, 16] {
                ConvKernels.forceBlockedLanes(lanes)
                for slots in [true, false] {
                    ConvKernels.enableBlockedImageSlots(slots)
                    for (index, s) in shapes.enumerated() {
                        let seed = UInt64(700 + index)
                        ConvKernels.useBlockedReferenceLoops(true)
                        let reference = convRun(s, seed: seed)
                        ConvKernels.useBlockedReferenceLoops(false)
                        let fast = convRun(s, seed: seed)
                        for (part, (a, b)) in zip(["y", "dx", "dW", "db"], zip(fast, reference)) {
                            XCTAssertEqual(a, b, "isa \(isa) lanes \(lanes) slots \(slots) \(s) \(part)")
                        }
                    }
                }
            }
        }
        ConvKernels.enableBlockedImageSlots(true)
    }

    /// Finite-difference gradient checks through the stride-2 kernel rows and the transposed stores.
    func testGradients() {
        let checked = [Shape(x: [3, 9, 5, 5], outputs: 18, kernel: 3, stride: 2, padding: 1),
                       Shape(x: [2, 3, 7, 7], outputs: 5, kernel: 3, stride: 2, padding: 1),
                       Shape(x: [3, 20, 2, 2], outputs: 17, kernel: 3, stride: 1, padding: 1)]
        checkBlockedConvGradients(checked, label: "blocked conv2d, new loops", seedBase: 740)
    }

    /// Batches that are not a multiple of the image group, over 1 and 2 threads: bit-identical.
    func testIdenticalAcrossThreads() {
        let threaded = [Shape(x: [11, 8, 14, 14], outputs: 16, kernel: 3, stride: 2, padding: 1),
                        Shape(x: [9, 16, 7, 7], outputs: 32, kernel: 3, stride: 2, padding: 1),
                        Shape(x: [13, 32, 4, 4], outputs: 64, kernel: 3, stride: 2, padding: 1),
                        Shape(x: [5, 17, 5, 5], outputs: 33, kernel: 3, stride: 1, padding: 1)]
        for isa in blockedInstructionSets {
            ConvKernels.forceBlockedInstructionSet(isa)
            for s in threaded {
                Parallel.threads = 1
                let single = convRun(s, seed: 760)
                Parallel.threads = 2
                let double = convRun(s, seed: 760)
                XCTAssertEqual(single, double, "isa \(isa) \(s)")
            }
        }
    }
}
