import QATIO

/// Fully connected layer, weight stored [out, in] as in PyTorch.
///
/// x: [N, I], weight: [O, I], bias: [O] → y: [N, O] = x · Wᵀ + b
public func linear(_ x: Variable, weight: Variable, bias: Variable?, tape: Tape?) -> Variable {
    precondition(x.value.rank == 2 && weight.value.rank == 2 && x.shape[1] == weight.shape[1],
                 "linear: input \(x.shape) does not fit weight \(weight.shape)")
    let (n, i, o) = (x.shape[0], x.shape[1], weight.shape[0])
    var y = Tensor(shape: [n, o])
    if let bias {
        y.storage.withUnsafeMutableBufferPointer { ys in
            for r in 0..<n { for c in 0..<o { ys[r * o + c] = bias.value.storage[c] } }
        }
    }
    x.value.storage.withUnsafeBufferPointer { xs in
        weight.value.storage.withUnsafeBufferPointer { ws in
            y.storage.withUnsafeMutableBufferPointer { ys in
                BLAS.gemm(transposeB: true, m: n, n: o, k: i, a: xs.baseAddress!, lda: i,
                          b: ws.baseAddress!, ldb: i, beta: bias == nil ? 0 : 1, c: ys.baseAddress!, ldc: o)
            }
        }
    }
    let out = Variable(y, requiresGrad: needsPullback(tape, x, weight, bias))
    guard out.requiresGrad, let tape else { return out }
    // dW reads x: the tensor, or (a fake quantizer's output) the recipe that recomputes it;
    // `x` itself may have released its value by then
    let savedInput = x.savedForPullback()

    tape.record {
        guard let gyTensor = out.grad else { return }
        gyTensor.storage.withUnsafeBufferPointer { gy in
            if weight.requiresGrad {
                // dW [O, I] += gyᵀ [O, N] · x [N, I]
                savedInput.tensor().storage.withUnsafeBufferPointer { xs in
                    weight.withGradient { gw in
                        BLAS.gemm(transposeA: true, m: o, n: i, k: n, a: gy.baseAddress!, lda: o,
                                  b: xs.baseAddress!, ldb: i, beta: 1, c: gw.baseAddress!, ldc: i)
                    }
                }
            }
            if let bias, bias.requiresGrad {
                bias.withGradient { gb in
                    for r in 0..<n { for c in 0..<o { gb[c] += gy[r * o + c] } }
                }
            }
            if x.requiresGrad {
                // dx [N, I] += gy [N, O] · W [O, I]
                weight.value.storage.withUnsafeBufferPointer { ws in
                    x.withGradient { gx in
                        BLAS.gemm(m: n, n: i, k: o, a: gy.baseAddress!, lda: o,
                                  b: ws.baseAddress!, ldb: i, beta: 1, c: gx.baseAddress!, ldc: i)
                    }
                }
            }
        }
    }
    return out
}
