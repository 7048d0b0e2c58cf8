// `swift run -c release qat-int8-bench`: speed of the INT8 kernels on LeNet-5's shapes, batch 256,
// one thread, for each code path this CPU supports. Weights and images are random codes: only
// the shapes matter for speed. Prints img/s per layer and for the whole INT8 forward
// (quantize → conv1 → pool → conv2 → pool → fc1 → fc2 → fc3 dequantized to logits).
import Foundation
import QAT

let batch = 256
var rng = SeededGenerator(seed: 1)
func codes(_ count: Int) -> [Int8] { (0..<count).map { _ in Int8.random(in: -128...127, using: &rng) } }
func relu(_ channels: Int, _ patch: Int) -> Int8Kernels.Requantization {
    .init(multipliers: Array(repeating: 30 / (Float(patch).squareRoot() * 5500), count: channels), zeroPoint: -128, relu: true)
}

let image = (0..<batch * 784).map { _ in Float.random(in: -0.5...2.5, using: &rng) }
let input = QuantizationGrid(bits: 8, scale: 3.0 / 255, offset: -43)
let conv1 = ConvGeometry(batch: batch, channels: 1, height: 28, width: 28, outputChannels: 6, kernel: 5, stride: 1, padding: 2)
let conv2 = ConvGeometry(batch: batch, channels: 6, height: 14, width: 14, outputChannels: 16, kernel: 5, stride: 1, padding: 0)
let w1 = codes(6 * 25), w2 = codes(16 * 150), w3 = codes(120 * 400), w4 = codes(84 * 120), w5 = codes(10 * 84)
let b1 = [Int32](repeating: 100, count: 6), b2 = [Int32](repeating: -100, count: 16)
let b3 = [Int32](repeating: 7, count: 120), b4 = [Int32](repeating: 7, count: 84), b5 = [Int32](repeating: 7, count: 10)


func rate(_ seconds: Double) -> String {
    String(format: "%10.0f", Double(batch) / seconds)
}

print("INT8 LeNet-5 kernels, batch \(batch), 1 thread, img/s (higher is better)")
print("path      quantize     conv1     pool1     conv2     pool2       fc1       fc2       fc3 conv1+pool conv2+pool   forward")
for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
    let x0 = Int8Kernels.quantize(image, input, path: path)
    let x1 = Int8Kernels.conv2d(x0, conv1, inputZeroPoint: input.zeroPoint, weights: w1, bias: b1, requantize: relu(6, 25), path: path)
    let p1 = Int8Kernels.maxPool2d(x1, planes: batch * 6, height: 28, width: 28, kernel: 2, stride: 2, path: path)
    let x2 = Int8Kernels.conv2d(p1, conv2, inputZeroPoint: -128, weights: w2, bias: b2, requantize: relu(16, 150), path: path)
    let p2 = Int8Kernels.maxPool2d(x2, planes: batch * 16, height: 10, width: 10, kernel: 2, stride: 2, path: path)
    let f1 = Int8Kernels.linear(p2, batch: batch, inputZeroPoint: -128, weights: w3, bias: b3, requantize: relu(120, 400), path: path)
    let f2 = Int8Kernels.linear(f1, batch: batch, inputZeroPoint: -128, weights: w4, bias: b4, requantize: relu(84, 120), path: path)

    let layers: [() -> Void] = [
        { _ = Int8Kernels.quantize(image, input, path: path) },
        { _ = Int8Kernels.conv2d(x0, conv1, inputZeroPoint: input.zeroPoint, weights: w1, bias: b1, requantize: relu(6, 25), path: path) },
        { _ = Int8Kernels.maxPool2d(x1, planes: batch * 6, height: 28, width: 28, kernel: 2, stride: 2, path: path) },
        { _ = Int8Kernels.conv2d(p1, conv2, inputZeroPoint: -128, weights: w2, bias: b2, requantize: relu(16, 150), path: path) },
        { _ = Int8Kernels.maxPool2d(x2, planes: batch * 16, height: 10, width: 10, kernel: 2, stride: 2, path: path) },
        { _ = Int8Kernels.linear(p2, batch: batch, inputZeroPoint: -128, weights: w3, bias: b3, requantize: relu(120, 400), path: path) },
        { _ = Int8Kernels.linear(f1, batch: batch, inputZeroPoint: -128, weights: w4, bias: b4, requantize: relu(84, 120), path: path) },
        { _ = Int8Kernels.linearDequantized(f2, batch: batch, inputZeroPoint: -128, weights: w5, bias: b5,
                                            scales: Array(repeating: 1e-3, count: 10), path: path) },
        { _ = Int8Kernels.conv2dMaxPool(x0, conv1, inputZeroPoint: input.zeroPoint, weights: w1, bias: b1, requantize: relu(6, 25),
                                        poolKernel: 2, poolStride: 2, path: path) },
        { _ = Int8Kernels.conv2dMaxPool(p1, conv2, inputZeroPoint: -128, weights: w2, bias: b2, requantize: relu(16, 150),
                                        poolKernel: 2, poolStride: 2, path: path) },
    ]
    // As Int8Model runs it: each conv fused with the max pool after it.
    let forward: () -> Void = {
        let x0 = Int8Kernels.quantize(image, input, path: path)
        let p1 = Int8Kernels.conv2dMaxPool(x0, conv1, inputZeroPoint: input.zeroPoint, weights: w1, bias: b1, requantize: relu(6, 25),
                                           poolKernel: 2, poolStride: 2, path: path)
        let p2 = Int8Kernels.conv2dMaxPool(p1, conv2, inputZeroPoint: -128, weights: w2, bias: b2, requantize: relu(16, 150),
                                           poolKernel: 2, poolStride: 2, path: path)
        let f1 = Int8Kernels.linear(p2, batch: batch, inputZeroPoint: -128, weights: w3, bias: b3, requantize: relu(120, 400), path: path)
        let f2 = Int8Kernels.linear(f1, batch: batch, inputZeroPoint: -128, weights: w4, bias: b4, requantize: relu(84, 120), path: path)
        _ = Int8Kernels.linearDequantized(f2, batch: batch, inputZeroPoint: -128, weights: w5, bias: b5,
                                          scales: Array(repeating: 1e-3, count: 10), path: path)
    }
    let figures = layers.map { rate(Stopwatch.bestSecondsPerCall($0)) } + [rate(Stopwatch.bestSecondsPerCall(forward))]
    print(path.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + figures.joined())
}
print("target for the whole INT8 forward: 200000 img/s at 1 thread")

// Depthwise 3×3 (MobileNet's block), batch 8, 64 channels of 56×56, padding 1: the direct kernel
// on each path against a plain Swift loop of the same integer arithmetic (a sanity figure, not a target).
print("\nINT8 depthwise 3×3, batch 8, 64×56×56, padding 1, 1 thread, ms per call (lower is better)")
func naiveDepthwise(_ x: [Int8], _ g: Int8ConvGeometry, zero: Int8, weights: [Int8], bias: [Int32],
                    _ r: Int8Kernels.Requantization) -> [Int8] {
    let (oh, ow) = (g.outputHeight, g.outputWidth)
    var out = [Int8](repeating: 0, count: g.batch * g.outputChannels * oh * ow)
    let lower = Float(r.relu ? Int32(r.zeroPoint) : -128), upper = Float(r.upperBound)
    for n in 0..<g.batch {
        for o in 0..<g.outputChannels {
            let plane = (n * g.channels + o) * g.height * g.width
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var acc = bias[o]
                    for ky in 0..<g.kernelHeight {
                        let y = oy * g.strideHeight + ky - g.padTop
                        guard y >= 0 && y < g.height else { continue }
                        for kx in 0..<g.kernelWidth {
                            let x0 = ox * g.strideWidth + kx - g.padLeft
                            guard x0 >= 0 && x0 < g.width else { continue }
                            acc += (Int32(x[plane + y * g.width + x0]) - Int32(zero)) * Int32(weights[(o * g.kernelHeight + ky) * g.kernelWidth + kx])
                        }
                    }
                    let v = (Float(acc) * r.multipliers[o]).rounded(.toNearestOrEven) + Float(r.zeroPoint)
                    out[((n * g.outputChannels + o) * oh + oy) * ow + ox] = Int8(min(max(v, lower), upper))
                }
            }
        }
    }
    return out
}
print("stride  naive Swift" + Int8Kernels.Path.allCases.filter(Int8Kernels.isSupported).map {
    String(repeating: " ", count: 12 - $0.rawValue.count) + $0.rawValue
}.joined())
for stride in [1, 2] {
    let g = Int8ConvGeometry(batch: 8, channels: 64, height: 56, width: 56, outputChannels: 64, kernelHeight: 3, kernelWidth: 3,
                             strideHeight: stride, strideWidth: stride, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: 64)
    let x = codes(8 * 64 * 56 * 56), w = codes(64 * 9), b = [Int32](repeating: 50, count: 64)
    let r = Int8Kernels.Requantization(multipliers: Array(repeating: 30 / (3 * 5500), count: 64), zeroPoint: -128, relu: true, upperBound: 0)
    let reference = naiveDepthwise(x, g, zero: 3, weights: w, bias: b, r)
    var line = String(format: "%6d %12.2f", stride, 1000 * Stopwatch.bestSecondsPerCall { _ = naiveDepthwise(x, g, zero: 3, weights: w, bias: b, r) })
    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
        let y = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: w, bias: b, requantize: r, path: path)
        precondition(y == reference, "depthwise \(path) differs from the plain loop")
        line += String(format: "%12.2f", 1000 * Stopwatch.bestSecondsPerCall {
            _ = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: w, bias: b, requantize: r, path: path)
        })
    }
    print(line)
}

// The INT8 3×3 convs of vgg-small and resnet-tiny (batch 256, padding 1, requantized to codes):
// GMAC/s per path, to compare against the multiply instructions' peak.
print("\nINT8 3×3 convs, batch 256, padding 1, 1 thread: ms per call and GMAC/s")
for (c, hw, oc) in [(32, 28, 32), (64, 14, 64), (128, 7, 128), (8, 28, 8)] {
    let g = ConvGeometry(batch: batch, channels: c, height: hw, width: hw, outputChannels: oc, kernel: 3, stride: 1, padding: 1)
    let x = codes(batch * c * hw * hw), w = codes(oc * c * 9), b = [Int32](repeating: 50, count: oc)
    let macs = Double(batch * hw * hw * oc * c * 9)
    var line = "\(c)→\(oc) on \(hw)×\(hw):"
    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) {
        let seconds = Stopwatch.bestSecondsPerCall {
            _ = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: w, bias: b, requantize: relu(oc, c * 9), path: path)
        }
        line += String(format: "  %@ %.2f ms %.1f GMAC/s", path.rawValue, 1000 * seconds, macs / seconds / 1e9)
    }
    print(line)
}

// resnet18-tiny's 3×3 convs (examples/onnx-models): small planes, where the column matrix and the
// short rows weigh as much as the multiplies. The SIMD paths only (the portable one takes seconds).
print("\nresnet18-tiny's 3×3 convs, batch 256, padding 1, 1 thread: ms per call and GMAC/s")
for (c, hw, oc) in [(1, 28, 8), (8, 14, 8), (16, 7, 16), (32, 4, 32), (64, 2, 64)] {
    let g = ConvGeometry(batch: batch, channels: c, height: hw, width: hw, outputChannels: oc, kernel: 3, stride: 1, padding: 1)
    let x = codes(batch * c * hw * hw), w = codes(oc * c * 9), b = [Int32](repeating: 50, count: oc)
    let macs = Double(batch * hw * hw * oc * c * 9)
    var line = "\(c)→\(oc) on \(hw)×\(hw):"
    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) && path != .portable {
        let seconds = Stopwatch.bestSecondsPerCall {
            _ = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: w, bias: b, requantize: relu(oc, c * 9), path: path)
        }
        line += String(format: "  %@ %.3f ms %.1f GMAC/s", path.rawValue, 1000 * seconds, macs / seconds / 1e9)
    }
    print(line)
}

// mobilenetv2-tiny's depthwise 3×3 convs (examples/onnx-models), requantized to codes: ns per
// output, where per-plane work and half-empty vectors on 7×7 planes show. The SIMD paths only.
print("\nmobilenetv2-tiny's depthwise 3×3 convs, batch 256, padding 1, 1 thread: ms per call and ns per output")
for (c, hw, stride) in [(16, 28, 1), (32, 28, 2), (64, 14, 1), (64, 14, 2), (96, 7, 1)] {
    let g = Int8ConvGeometry(batch: batch, channels: c, height: hw, width: hw, outputChannels: c, kernelHeight: 3, kernelWidth: 3,
                             strideHeight: stride, strideWidth: stride, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1, groups: c)
    let x = codes(batch * c * hw * hw), w = codes(c * 9), b = [Int32](repeating: 50, count: c)
    let outputs = Double(batch * c * g.outputHeight * g.outputWidth)
    var line = "\(c) channels, \(hw)×\(hw), stride \(stride):"
    for path in Int8Kernels.Path.allCases where Int8Kernels.isSupported(path) && path != .portable {
        let seconds = Stopwatch.bestSecondsPerCall {
            _ = Int8Kernels.conv2d(x, g, inputZeroPoint: 3, weights: w, bias: b, requantize: relu(c, 9), path: path)
        }
        line += String(format: "  %@ %.3f ms %.2f ns", path.rawValue, 1000 * seconds, 1e9 * seconds / outputs)
    }
    print(line)
}
