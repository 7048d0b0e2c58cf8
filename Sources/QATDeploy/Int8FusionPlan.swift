import QATCore

extension Int8Model {
    /// Which runs of nodes plain (unobserved) forwards do in one kernel, derived once from the
    /// steps at load; index i is step i, value index i + 1 its output.
    struct FusionPlan {
        /// fusesPool[i]: step i is an integer conv with int8 output whose only reader is step i + 1,
        /// a max pool; unobserved runs do both in one kernel (Int8Kernels.conv2dMaxPool).
        let fusesPool: [Bool]
        /// floatEpilogues[i]: step i is an integer conv (not depthwise) with float output, read only
        /// by a float ReLU and/or a max pool; unobserved runs do them in one kernel, an image at a
        /// time (Int8Kernels.conv2dDequantized(…relu:pool:)), as resnet's stems.
        let floatEpilogues: [FloatEpilogue?]

        struct FloatEpilogue {
            var relu: Bool
            /// The step index of the max pool, if one is fused.
            var pool: Int?
            /// The last step fused.
            var last: Int
        }
        /// fusesQuantize[i]: step i is an add of two same-shaped values or a HardSwish, whose only
        /// reader is step i + 1, a quantize node; unobserved runs on floats quantize the float results
        /// as they are made (Int8Kernels.addQuantized, hardSwishQuantized).
        let fusesQuantize: [Bool]
        /// fusesResidual[i]: step i is an integer conv (not depthwise) with float output whose only
        /// reader is step i + 1, an add fused with its quantize (fusesQuantize); unobserved runs add the
        /// other operand, when it is floats, to each image's conv output and quantize it while it is
        /// in cache (Int8Kernels.conv2dDequantizedAddQuantized), as resnet-tiny's block.
        let fusesResidual: [Bool]
        /// fusesHardSwish[i]: step i is an integer conv with float output whose only reader is step
        /// i + 1, a HardSwish; unobserved runs apply it (and its fused quantize, fusesQuantize[i + 1])
        /// to each image's conv output while it is in cache (Int8Kernels.conv2dDequantizedHardSwish…).
        let fusesHardSwish: [Bool]
        /// residualReLUs[i]: step i is such a conv read only by an add on floats (not fused with a
        /// quantize) whose output only a ReLU reads, if any; unobserved runs make the floats of
        /// conv → add → ReLU in one kernel, and the codes its first integer reader wants (resnet18-tiny's
        /// blocks, whose sum feeds the next conv and the next add).
        let residualReLUs: [ResidualReLU?]

        struct ResidualReLU {
            var relu: Bool
            /// The last step fused (the add or the ReLU).
            var last: Int
            /// The input grid of the first integer layer reading the result, if any.
            var codesGrid: QuantizationGrid?
        }


        init(_ steps: [Step]) {
            var readers = Array(repeating: 0, count: steps.count + 1)
            for step in steps { for input in step.inputs { readers[input] += 1 } }
            fusesPool = steps.indices.map { i in
                let step = steps[i]
                guard step.node.op == .conv2d, step.node.inputQuantizer != nil, step.requantization != nil,
                      i + 1 < steps.count, readers[i + 1] == 1 else { return false }
                let next = steps[i + 1]
                // A pool with its own input grid (tensor_quantize) runs alone: `qat verify` observes its input codes.
                return next.node.op == .maxpool2d && next.inputs == [i + 1] && next.node.sharedInputGrid == nil
            }
            floatEpilogues = steps.indices.map { i in
                let step = steps[i]
                guard step.node.op == .conv2d, step.node.inputQuantizer != nil, step.requantization == nil,
                      !(step.node.groups > 1 && step.node.groups == step.node.inputChannels) else { return nil }
                /// Step j reads only value j (step j − 1's output), and nothing else reads that.
                func onlyReader(_ j: Int, _ op: DeployNode.Op) -> Bool {
                    j < steps.count && readers[j] == 1 && steps[j].node.op == op && steps[j].inputs == [j]
                }
                var epilogue = FloatEpilogue(relu: false, pool: nil, last: i)
                if onlyReader(i + 1, .relu) { epilogue = FloatEpilogue(relu: true, pool: nil, last: i + 1) }
                if onlyReader(epilogue.last + 1, .maxpool2d) && steps[epilogue.last + 1].node.sharedInputGrid == nil {
                    epilogue.last += 1
                    epilogue.pool = epilogue.last
                }
                return epilogue.last > i ? epilogue : nil
            }
            let quantizeFusions = steps.indices.map { i in
                let step = steps[i]
                let fusable = step.node.op == .hardSwish
                    || (step.node.op == .add && step.node.sharedInputGrid == nil && step.node.output == nil
                        && step.inputShapes.count == 2 && step.inputShapes[0] == step.inputShapes[1] && step.inputShapes[0] == step.outputShape
                        && step.inputs.allSatisfy({ $0 == 0 || steps[$0 - 1].node.op != .constant }))
                return fusable && i + 1 < steps.count && readers[i + 1] == 1 && steps[i + 1].node.op == .quantize && steps[i + 1].inputs == [i + 1]
            }
            fusesQuantize = quantizeFusions
            fusesResidual = steps.indices.map { i in
                let step = steps[i]
                guard step.node.op == .conv2d, step.node.inputQuantizer != nil, step.requantization == nil,
                      !(step.node.groups > 1 && step.node.groups == step.node.inputChannels),
                      i + 1 < steps.count, readers[i + 1] == 1, quantizeFusions[i + 1] else { return false }
                let add = steps[i + 1]
                return add.node.op == .add && add.inputs.filter({ $0 == i + 1 }).count == 1
            }
            fusesHardSwish = steps.indices.map { i in
                steps[i].node.op == .conv2d && steps[i].node.inputQuantizer != nil && steps[i].requantization == nil
                    && i + 1 < steps.count && readers[i + 1] == 1 && steps[i + 1].node.op == .hardSwish && steps[i + 1].inputs == [i + 1]
            }
            residualReLUs = steps.indices.map { i in
                let step = steps[i]
                guard step.node.op == .conv2d, step.node.inputQuantizer != nil, step.requantization == nil,
                      !(step.node.groups > 1 && step.node.groups == step.node.inputChannels),
                      i + 2 < steps.count, readers[i + 1] == 1, !quantizeFusions[i + 1] else { return nil }
                let add = steps[i + 1].node, addInputs = steps[i + 1].inputs, shapes = steps[i + 1].inputShapes
                guard add.op == .add, add.sharedInputGrid == nil, add.output == nil, shapes.count == 2, shapes[0] == shapes[1],
                      shapes[0] == steps[i + 1].outputShape, addInputs.filter({ $0 == i + 1 }).count == 1,
                      addInputs.allSatisfy({ $0 == 0 || steps[$0 - 1].node.op != .constant }) else { return nil }
                let relu = readers[i + 2] == 1 && steps[i + 2].node.op == .relu && steps[i + 2].inputs == [i + 2]
                let last = relu ? i + 2 : i + 1
                let reader = steps[(last + 1)...].first { $0.inputs.first == last + 1 && $0.node.isInteger }
                return ResidualReLU(relu: relu, last: last, codesGrid: reader?.node.inputQuantizer)
            }
        }

        /// How many runs of nodes plain forwards fuse into one kernel.
        var runs: Int {
            fusesPool.filter { $0 }.count + floatEpilogues.compactMap { $0 }.count + fusesQuantize.filter { $0 }.count
                + fusesResidual.filter { $0 }.count + fusesHardSwish.filter { $0 }.count + residualReLUs.compactMap { $0 }.count
        }
    }
}
