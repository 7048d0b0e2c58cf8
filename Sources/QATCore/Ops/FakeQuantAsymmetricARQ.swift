import QATIO

// Asymmetric ARQ weights (AMCT's `arq_quantize.asymmetric: true`, allowed only on weight-only
// layers; docs/ALGORITHMS.md §3.2). Each row gets the INT8 grid of its range widened to hold 0,
// [min(w_min, 0), max(w_max, 0)], with a zero point, computed as ULQ computes an activation
// grid from a clip pair: s = (M − m)/255, o = round(−128 − m/s). Like symmetric ARQ the grid is
// derived afresh from the weights on every forward, and the backward is straight-through.

/// The asymmetric grid of each row of `weight` viewed as `rows` rows.
public func asymmetricARQGrids(_ weight: Tensor, rows: Int, bits: Int = 8) -> [QuantizationGrid] {
    precondition(rows > 0 && weight.count % rows == 0, "asymmetricARQGrids: \(weight.shape) is not \(rows) rows")
    let rowLength = weight.count / rows
    guard rowLength > 0 else { return [QuantizationGrid](repeating: QuantizationGrid(bits: bits, scale: 1, offset: 0), count: rows) }
    return weight.storage.withUnsafeBufferPointer { ws in
        (0..<rows).map { r in
            let row = UnsafeBufferPointer(rebasing: ws[(r * rowLength)..<((r + 1) * rowLength)])
            let high = max(row.max() ?? 0, 0), low = min(row.min() ?? 0, 0)
            return QuantizationGrid(bits: bits, clipMax: high, clipMin: low)
        }
    }
}

/// ŵ = s·(clamp(round(w/s) + o, qmin, qmax) − o) per row on its asymmetric grid; dL/dw = dL/dŵ.
public func asymmetricARQFakeQuantize(_ weight: Variable, state: WeightQuantizerState, tape: Tape?) -> Variable {
    let grids = asymmetricARQGrids(weight.value, rows: state.rowCount, bits: state.numBits)
    state.scales = grids.map(\.scale)
    var values = weight.value
    let rowLength = values.count / grids.count
    values.storage.withUnsafeMutableBufferPointer { ws in
        for (r, grid) in grids.enumerated() {
            grid.fakeQuantize(UnsafeMutableBufferPointer(rebasing: ws[(r * rowLength)..<((r + 1) * rowLength)]))
        }
    }
    return straightThrough(weight, quantized: values, tape: tape)
}
