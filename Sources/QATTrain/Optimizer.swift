import CKernels
import QATCore
import QATData
import QATIO
import QATModel

/// An optimizer updates parameters in place from their gradients, then zeroes the gradients.
/// Its state (momentum buffers, Adam moments) is named after the parameters, for checkpoints.
public protocol Optimizer: AnyObject {
    var learningRate: Float { get set }
    func step(_ parameters: [NamedVariable])
    /// State tensors in a stable order, named `<parameter>.<slot>`.
    var state: [(name: String, tensor: Tensor)] { get }
    func loadState(_ state: [String: Tensor]) throws
}

/// Weight decay applies to weights and biases, not to quantizer bounds: decaying a clip range
/// toward zero would fight the quantization loss for no regularisation benefit.
func takesWeightDecay(_ name: String) -> Bool { !name.contains("_quant.") }

/// SGD with momentum and L2 weight decay, as PyTorch's `torch.optim.SGD`:
/// g ← g + λw; v ← μv + g; w ← w − ηv.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float
    public let weightDecay: Float
    private var velocity: [String: Tensor] = [:]
    private var order: [String] = []
    /// Switch for tests: true runs the update as the Swift loops it replaced (the reference of
    /// CKernels/optimizer.c, which must give the same bits).
    nonisolated(unsafe) public static var usesReferenceLoops = false

    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [NamedVariable]) {
        for p in parameters {
            // Not bound to a local: a second reference to g would make the in-place pass copy it.
            guard p.variable.grad != nil else { continue }
            let decay = takesWeightDecay(p.name) ? weightDecay : 0
            if momentum != 0 && velocity[p.name] == nil {
                velocity[p.name] = Tensor(shape: p.variable.shape)
                order.append(p.name)
            }
            let (lr, mu) = (learningRate, momentum)
            if !SGD.usesReferenceLoops {   // the update and the zeroing of g in one vectorised pass
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    p.variable.withGradient { g in
                        guard w.count > 0 else { return }
                        if mu == 0 {
                            qat_sgd_step(w.baseAddress!, g.baseAddress!, w.count, lr, decay)
                        } else {
                            velocity[p.name]!.storage.withUnsafeMutableBufferPointer { v in
                                qat_sgd_momentum_step(w.baseAddress!, v.baseAddress!, g.baseAddress!, w.count, lr, mu, decay)
                            }
                        }
                    }
                }
                continue
            }
            let grad = p.variable.grad!
            grad.storage.withUnsafeBufferPointer { g in
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    if mu == 0 {
                        for i in 0..<w.count { w[i] -= lr * (g[i] + decay * w[i]) }
                    } else {
                        velocity[p.name]!.storage.withUnsafeMutableBufferPointer { v in
                            for i in 0..<w.count {
                                v[i] = mu * v[i] + g[i] + decay * w[i]
                                w[i] -= lr * v[i]
                            }
                        }
                    }
                }
            }
            p.variable.zeroGradient()
        }
    }

    public var state: [(name: String, tensor: Tensor)] { order.map { ("\($0).momentum", velocity[$0]!) } }

    public func loadState(_ state: [String: Tensor]) throws {
        velocity = [:]; order = []
        for (key, tensor) in state.sorted(by: { $0.key < $1.key }) where key.hasSuffix(".momentum") {
            let name = String(key.dropLast(".momentum".count))
            velocity[name] = tensor; order.append(name)
        }
    }
}

/// Adam (Kingma & Ba) with bias correction and optional L2 weight decay, as `torch.optim.Adam`.
public final class Adam: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    /// Steps taken so far (drives the bias correction).
    public private(set) var stepCount = 0
    private var moments: [String: (first: Tensor, second: Tensor)] = [:]
    private var order: [String] = []

    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.weightDecay = weightDecay
    }

    public func step(_ parameters: [NamedVariable]) {
        stepCount += 1
        let correction1 = 1 - Float(pow(Double(beta1), Double(stepCount)))
        let correction2 = 1 - Float(pow(Double(beta2), Double(stepCount)))
        for p in parameters {
            guard let grad = p.variable.grad else { continue }
            if moments[p.name] == nil {
                moments[p.name] = (Tensor(shape: grad.shape), Tensor(shape: grad.shape))
                order.append(p.name)
            }
            let decay = takesWeightDecay(p.name) ? weightDecay : 0
            var (m, v) = moments[p.name]!
            moments[p.name] = nil   // keep the buffers uniquely referenced while we write them
            let (b1, b2, eps, lr) = (beta1, beta2, epsilon, learningRate)
            grad.storage.withUnsafeBufferPointer { g in
                p.variable.value.storage.withUnsafeMutableBufferPointer { w in
                    m.storage.withUnsafeMutableBufferPointer { ms in
                        v.storage.withUnsafeMutableBufferPointer { vs in
                            for i in 0..<w.count {
                                let gi = g[i] + decay * w[i]
                                ms[i] = b1 * ms[i] + (1 - b1) * gi
                                vs[i] = b2 * vs[i] + (1 - b2) * gi * gi
                                w[i] -= lr * (ms[i] / correction1) / ((vs[i] / correction2).squareRoot() + eps)
                            }
                        }
                    }
                }
            }
            moments[p.name] = (m, v)
            p.variable.zeroGradient()
        }
    }

    public var state: [(name: String, tensor: Tensor)] {
        [("adam.step", Tensor.scalar(Float(stepCount)))]
            + order.flatMap { [("\($0).adam_m", moments[$0]!.first), ("\($0).adam_v", moments[$0]!.second)] }
    }

    public func loadState(_ state: [String: Tensor]) throws {
        moments = [:]; order = []
        stepCount = Int(state["adam.step"]?.storage[0] ?? 0)
        for (key, m) in state.sorted(by: { $0.key < $1.key }) where key.hasSuffix(".adam_m") {
            let name = String(key.dropLast(".adam_m".count))
            guard let v = state["\(name).adam_v"] else { continue }
            moments[name] = (m, v); order.append(name)
        }
    }
}

import Foundation
