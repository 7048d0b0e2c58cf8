// `--mode fma-peak` and `--mode conv-layers`: how close our convolutions come to what the
// machine's FMA units can do (issue 15). The peak is measured, not read from a data sheet:
// independent FMA chains in registers (Sources/CBench/fma_peak.c), AVX-512 and AVX2, on each
// thread count. Each conv layer of a model then runs alone at batch 64 on random data, its
// forward, input-gradient and weight-gradient passes timed apart, as GFLOP/s and % of the peak.
import CBench
import Foundation
import QAT

enum FMAInstructionSet: String, CaseIterable {
    case avx512 = "avx512", avx2 = "avx2"

    var isSupported: Bool {
        switch self {
        case .avx512: qat_fma_peak_has_avx512() != 0
        case .avx2: qat_fma_peak_has_avx2() != 0
        }
    }

    /// GFLOP/s of `threads` copies of the loop running at once (one per pool thread): the best of
    /// 5 rounds of about 0.1 s each.
    func measurePeak(threads: Int) -> Double {
        Runtime.configure(threads: threads)
        let iterations = 20_000_000
        let flops: Double
        switch self {
        case .avx512: flops = Double(qat_fma_peak_flops_avx512())
        case .avx2: flops = Double(qat_fma_peak_flops_avx2())
        }
        var sink: Float = 0
        let seconds = bestSeconds(rounds: 5, minimumSeconds: 0) {
            Parallel.forEachIndex(threads) { _ in
                let value = self == .avx512 ? qat_fma_peak_avx512(iterations) : qat_fma_peak_avx2(iterations)
                if value == .infinity { sink += value }   // never true; keeps the result used
            }
        }
        _ = sink
        return flops * Double(iterations) * Double(threads) / seconds / 1e9
    }
}

/// The machine's peak: the best instruction set's loop (AVX-512 where the CPU has it).
func measuredPeak(threads: Int) -> (FMAInstructionSet, Double)? {
    guard let best = FMAInstructionSet.allCases.first(where: \.isSupported) else { return nil }
    return (best, best.measurePeak(threads: threads))
}

/// Seconds per call of `body`: the best of `rounds` rounds, each repeating it for at least
/// `minimumSeconds` (after one warm-up call). The best round is the least disturbed one.
func bestSeconds(rounds: Int, minimumSeconds: Double, _ body: () -> Void) -> Double {
    body()
    var best = Double.infinity
    for _ in 0..<rounds {
        var calls = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed = 0.0
        repeat {
            body()
            calls += 1
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < minimumSeconds
        best = min(best, elapsed / Double(calls))
    }
    return best
}

/// G multiply-adds/s of `threads` copies of the exact INT8 multiply-accumulate loop (AVX2: vpmaddwd
/// then vpaddd), the bound of the INT8 engine on a CPU without VNNI: the best of 5 rounds.
func measureInt8MACPeak(threads: Int) -> Double {
    Runtime.configure(threads: threads)
    let iterations = 20_000_000
    var sink: Int32 = 0
    let seconds = bestSeconds(rounds: 5, minimumSeconds: 0) {
        Parallel.forEachIndex(threads) { _ in
            if qat_int8_mac_peak_avx2(iterations) == Int32.min { sink += 1 }   // keeps the result used
        }
    }
    _ = sink
    return Double(qat_int8_mac_peak_products_avx2()) * Double(iterations) * Double(threads) / seconds / 1e9
}

func runFMAPeak(threads: [Int], json: Bool) {
    for threadCount in threads where FMAInstructionSet.avx2.isSupported {
        let macs = measureInt8MACPeak(threads: threadCount)
        print(json ? "{\"peer\": \"qat\", \"mode\": \"int8-mac-peak\", \"isa\": \"avx2\", \"threads\": \(threadCount), "
                     + String(format: "\"gmacs\": %.1f, \"load_1min\": %.2f}", macs, loadAverage())
                   : String(format: "INT8 exact multiply-accumulate peak avx2 (vpmaddwd + vpaddd), %d thread(s): %.1f G multiply-adds/s",
                            threadCount, macs))
        fflush(stdout)
    }
    for threadCount in threads {
        for isa in FMAInstructionSet.allCases {
            guard isa.isSupported else {
                print(json ? "{\"peer\": \"qat\", \"mode\": \"fma-peak\", \"isa\": \"\(isa.rawValue)\", \"threads\": \(threadCount), \"note\": \"not supported by this CPU\"}"
                           : "FMA peak \(isa.rawValue), \(threadCount) thread(s): not supported by this CPU")
                continue
            }
            let gflops = isa.measurePeak(threads: threadCount)
            print(json ? "{\"peer\": \"qat\", \"mode\": \"fma-peak\", \"isa\": \"\(isa.rawValue)\", \"threads\": \(threadCount), "
                         + String(format: "\"gflops\": %.1f, \"load_1min\": %.2f}", gflops, loadAverage())
                       : String(format: "FMA peak %@, %d thread(s): %.1f GFLOP/s", isa.rawValue, threadCount, gflops))
            fflush(stdout)
        }
    }
}

/// One timed pass of a conv layer.
enum ConvPass: String, CaseIterable {
    case forward, inputGradient = "input-gradient", weightGradient = "weight-gradient"
}

/// A conv layer of a model, with the input shape it sees there.
struct ConvLayerCase {
    var name: String
    var attributes: ConvolutionAttributes
    var input: [Int]    // [C, H, W]
    var output: [Int]   // [O, Ho, Wo]

    /// 2·N·O·Ho·Wo·(C / groups)·KH·KW, the same for each pass.
    func flops(batch: Int) -> Double {
        Double(2 * batch * output[0] * output[1] * output[2] * (input[0] / attributes.groups)
               * attributes.kernel.height * attributes.kernel.width)
    }

    var shapeText: String {
        let a = attributes
        var text = "\(input[0])→\(output[0]) \(a.kernel.height)×\(a.kernel.width) on \(input[1])×\(input[2])"
        if a.stride != Size2D(1) { text += " s\(a.stride.height)" }
        if a.padding != Padding2D(0) { text += " p\(a.padding.top)" }
        if a.groups > 1 { text += " g\(a.groups)" }
        return text
    }

    static func all(in model: BenchModel) throws -> [ConvLayerCase] {
        let spec = try ModelSource.load(file: model.file).spec
        let graph = try ModelGraph(spec, file: model.file)
        return spec.layers.indices.compactMap { index in
            guard case .conv2d(let attributes) = spec.layers[index].kind else { return nil }
            return ConvLayerCase(name: spec.layers[index].name, attributes: attributes,
                                 input: graph.inputShapes[index][0], output: graph.outputShapes[index])
        }
    }

    /// Seconds of one pass at `batch` on random data (the best of 3 rounds of ≥ 0.05 s).
    func seconds(_ pass: ConvPass, batch: Int) -> Double {
        var generator = SeededGenerator(seed: 7)
        let x = Variable(Tensor.uniform([batch] + input, bound: 1, using: &generator),
                         requiresGrad: pass == .inputGradient)
        let fanIn = Float(input[0] / attributes.groups * attributes.kernel.height * attributes.kernel.width)
        let weight = Variable(Tensor.uniform(attributes.weightShape, bound: 1 / fanIn.squareRoot(), using: &generator),
                              requiresGrad: pass != .inputGradient)
        let bias = attributes.hasBias ? Variable(Tensor.uniform([output[0]], bound: 0.1, using: &generator)) : nil
        let gy = Tensor.uniform([batch] + output, bound: 1, using: &generator)
        let a = attributes
        func forward(_ tape: Tape) -> Variable {
            conv2d(x, weight: weight, bias: bias, stride: a.stride, padding: a.padding, dilation: a.dilation,
                   groups: a.groups, tape: tape)
        }
        switch pass {
        case .forward:
            return bestSeconds(rounds: 3, minimumSeconds: 0.05) { _ = forward(Tape()) }
        case .inputGradient, .weightGradient:
            // Only the pullback is timed; the forward that records it runs before the clock starts.
            let seed = Variable(Tensor.scalar(0))
            var best = Double.infinity
            for round in 0..<4 {   // round 0 warms up
                var (calls, elapsed) = (0, 0.0)
                repeat {
                    let tape = Tape()
                    let out = forward(tape)
                    out.grad = gy
                    let start = DispatchTime.now().uptimeNanoseconds
                    tape.backward(from: seed)
                    elapsed += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    calls += 1
                } while elapsed < 0.05
                if round > 0 { best = min(best, elapsed / Double(calls)) }
            }
            return best
        }
    }
}

/// Per conv layer of each model: GFLOP/s of each pass at batch 64, and % of the FMA peak
/// measured at the same thread count.
func runConvLayers(models: [BenchModel], threads: [Int], json: Bool) throws {
    let batch = Measurer.defaultTrainingBatch
    let coreType = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"
    for threadCount in threads {
        let peak = measuredPeak(threads: threadCount)
        Runtime.configure(threads: threadCount)
        let peakText = peak.map { String(format: "%.1f GFLOP/s (%@)", $0.1, $0.0.rawValue) } ?? "not measured"
        for model in models {
            let layers = try ConvLayerCase.all(in: model)
            let nameWidth = (layers.map(\.name.count).max() ?? 0) + 2
            if !json {
                print("\(model.rawValue), \(threadCount) thread(s), batch \(batch), OpenBLAS \(BLAS.coreName) "
                      + "(OPENBLAS_CORETYPE \(coreType)), FMA peak \(peakText):")
                print("layer".padded(to: nameWidth) + "shape".padded(to: 28) + "   MFLOP  forward GFLOP/s (%)   input-grad GFLOP/s (%)   weight-grad GFLOP/s (%)")
            }
            var totals: [ConvPass: (flops: Double, seconds: Double)] = [:]
            for layer in layers {
                let flops = layer.flops(batch: batch)
                var cells: [String] = []
                var fields: [String] = []
                for pass in ConvPass.allCases {
                    let seconds = layer.seconds(pass, batch: batch)
                    let gflops = flops / seconds / 1e9
                    let percent = peak.map { 100 * gflops / $0.1 } ?? .nan
                    totals[pass, default: (0, 0)].flops += flops
                    totals[pass, default: (0, 0)].seconds += seconds
                    cells.append(String(format: "%9.1f (%5.1f %%)", gflops, percent).padded(to: 25))
                    fields.append(String(format: "\"%@\": {\"ms\": %.3f, \"gflops\": %.2f, \"percent_of_peak\": %.1f}",
                                         pass.rawValue, seconds * 1e3, gflops, percent))
                }
                if json {
                    print("{\"peer\": \"qat\", \"mode\": \"conv-layers\", \"model\": \"\(model.rawValue)\", "
                          + "\"layer\": \"\(layer.name)\", \"shape\": \"\(layer.shapeText)\", \"threads\": \(threadCount), "
                          + "\"batch\": \(batch), \"mflop\": \(String(format: "%.1f", flops / 1e6)), "
                          + fields.joined(separator: ", ")
                          + ", \"peak_gflops\": \(peak.map { String(format: "%.1f", $0.1) } ?? "null"), "
                          + "\"openblas_core\": \"\(BLAS.coreName)\", \"OPENBLAS_CORETYPE\": \"\(coreType)\"}")
                } else {
                    print(layer.name.padded(to: nameWidth) + layer.shapeText.padded(to: 28)
                          + String(format: "%8.1f  ", flops / 1e6) + cells.joined(separator: " "))
                }
                fflush(stdout)
            }
            if !json {
                let cells = ConvPass.allCases.map { pass -> String in
                    let total = totals[pass] ?? (0, 1)
                    let gflops = total.flops / total.seconds / 1e9
                    return String(format: "%9.1f (%5.1f %%)", gflops, peak.map { 100 * gflops / $0.1 } ?? .nan).padded(to: 25)
                }
                print("all conv layers (FLOP-weighted)".padded(to: nameWidth + 36) + cells.joined(separator: " ") + "\n")
            }
        }
    }
}
