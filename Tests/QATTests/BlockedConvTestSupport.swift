import XCTest
import QAT

/// What the blocked-conv test classes share: a layer shape, the instruction sets to force, and the
/// finite-difference gradient check of conv2d through whatever blocked path a shape takes.
struct BlockedConvShape: CustomStringConvertible {
    let x: [Int], outputs: Int, kernel: Int, stride: Int, padding: Int
    var geometry: ConvGeometry {
        ConvGeometry(batch: x[0], channels: x[1], height: x[2], width: x[3],
                     outputChannels: outputs, kernel: kernel, stride: stride, padding: padding)
    }
    var description: String { "\(x) o\(outputs) k\(kernel) s\(stride) p\(padding)" }
}

/// The blocked kernels' instruction sets this CPU has (1 AVX2, 2 AVX-512), for
/// `ConvKernels.forceBlockedInstructionSet`; empty when the blocked path is unavailable.
var blockedInstructionSets: [Int] {
    let best = ConvKernels.forceBlockedInstructionSet(0)
    return best == 0 ? [] : Array(1...best)
}

/// `checkOp` of conv2d (x, weight, bias) against the Double reference on each shape and each
/// instruction set; every shape must take the blocked path. Seeds are `seedBase + index`.
func checkBlockedConvGradients(_ shapes: [BlockedConvShape], label: String, seedBase: UInt64,
                               file: StaticString = #filePath, line: UInt = #line) {
    for isa in blockedInstructionSets {
        ConvKernels.forceBlockedInstructionSet(isa)
        for (index, s) in shapes.enumerated() {
            let g = s.geometry
            XCTAssertTrue(g.blockedSupported && !g.directSupported && !g.c16Supported, "\(s)", file: file, line: line)
            let seed = seedBase + UInt64(index)
            var rng = SeededGenerator(seed: seed)
            let wShape = [s.outputs, s.x[1], s.kernel, s.kernel]
            let x = randomVariable(s.x, &rng)
            let w = randomVariable(wShape, bound: 0.5, &rng)
            let b = randomVariable([s.outputs], &rng)
            checkOp("\(label) isa \(isa) \(s)",
                    inputs: [OpInput("x", x), OpInput("weight", w), OpInput("bias", b)],
                    outputShape: [s.x[0], s.outputs, g.outputHeight, g.outputWidth],
                    reference: { v in
                        conv2dReference(x: v[0], xShape: s.x, w: v[1], wShape: wShape, b: v[2],
                                        stride: s.stride, padding: s.padding)
                    },
                    forward: { tape in conv2d(x, weight: w, bias: b, stride: s.stride, padding: s.padding, tape: tape) },
                    seed: seed &+ 1)
        }
    }
}
