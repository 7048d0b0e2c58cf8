import Foundation
import QATCore
import QATIO

/// How stored pixels become the floats a model sees, per channel c: (p − mean[c]) / std[c],
/// where p is a uint8 pixel divided by 255, or a float32 pixel as stored (taken as already in
/// [0, 1], what torchvision's `ToTensor` gives). One value applies to every channel.
public struct Normalization: Equatable, Sendable {
    public var mean: [Float]
    public var standardDeviation: [Float]

    public init(mean: [Float], standardDeviation: [Float]) {
        self.mean = mean
        self.standardDeviation = standardDeviation
    }

    /// Values passed through unchanged: (p − 0) / 1.
    public static let identity = Normalization(mean: [0], standardDeviation: [1])

    func mean(channel: Int) -> Float { mean.count == 1 ? mean[0] : mean[channel] }
    func standardDeviation(channel: Int) -> Float { standardDeviation.count == 1 ? standardDeviation[0] : standardDeviation[channel] }

    /// The normalised value of every uint8 pixel value of every channel, 256 per channel:
    /// p · 1/(255·std) − mean/std, the arithmetic (and so the bits) of the Fashion-MNIST
    /// loader before images stayed uint8.
    func byteTable(channels: Int) -> [Float] {
        var table = [Float](repeating: 0, count: 256 * channels)
        for c in 0..<channels {
            let scale = 1 / (255 * standardDeviation(channel: c)), shift = mean(channel: c) / standardDeviation(channel: c)
            for p in 0..<256 { table[c * 256 + p] = Float(p) * scale - shift }
        }
        return table
    }
}

/// Where a dataset's images live and in which element type.
public enum StoredImages: Sendable {
    /// Raw pixels in memory, 0…255.
    case bytes([UInt8])
    /// Float pixels in memory.
    case floats([Float])
    /// Rows read from an HDF5 file batch by batch (a dataset larger than memory).
    case streamed(StreamedImages)
}

/// The order of a stored sample's values.
public enum ImageLayout: String, Equatable, Sendable, CaseIterable {
    /// [C, H, W]: PyTorch's order, the order a model sees.
    case nchw
    /// [H, W, C]: TensorFlow's and NumPy image libraries' order.
    case nhwc
}

/// A dataset's images and labels. Images stay in their stored type (uint8 pixels take a quarter
/// of the memory of floats) and are normalised batch by batch, when a batch is drawn.
public struct Dataset: Sendable {
    public var stored: StoredImages
    public var labels: [Int32]
    /// One sample as the model sees it: [C, H, W] (or any shape, for data made in memory).
    public var sampleShape: [Int]
    /// How the stored samples are ordered; `nhwc` samples are transposed when a batch is drawn.
    public var layout: ImageLayout
    public var normalization: Normalization
    /// The files the images and labels came from (empty for data made in memory), for errors.
    public var imageFile = ""
    public var labelFile = ""
    /// The datasets inside those files (HDF5), for errors; empty for files that hold one array.
    public var imagePath = ""
    public var labelPath = ""

    public var count: Int { labels.count }
    public var sampleSize: Int { sampleShape.reduce(1, *) }

    public init(stored: StoredImages, labels: [Int32], sampleShape: [Int], layout: ImageLayout = .nchw,
                normalization: Normalization, imageFile: String = "", labelFile: String = "",
                imagePath: String = "", labelPath: String = "") {
        self.stored = stored
        self.labels = labels
        self.sampleShape = sampleShape
        self.layout = layout
        self.normalization = normalization
        self.imageFile = imageFile
        self.labelFile = labelFile
        self.imagePath = imagePath
        self.labelPath = labelPath
    }

    /// Images made in memory, already the values the model sees (no normalisation).
    public init(images: [Float], labels: [Int32], sampleShape: [Int], imageFile: String = "", labelFile: String = "") {
        self.init(stored: .floats(images), labels: labels, sampleShape: sampleShape, normalization: .identity,
                  imageFile: imageFile, labelFile: labelFile)
    }

    /// Image values held in memory (0 for streamed images), for the memory estimate.
    public var valuesInMemory: Int {
        switch stored {
        case .bytes(let b): return b.count / MemoryLayout<Float>.size
        case .floats(let f): return f.count
        case .streamed: return 0
        }
    }

    /// The first `limit` samples (tests and quick runs).
    public func prefix(_ limit: Int) -> Dataset {
        let n = min(limit, count)
        var result = self
        result.labels = Array(labels[0..<n])
        switch stored {
        case .bytes(let b): result.stored = .bytes(Array(b[0..<(n * sampleSize)]))
        case .floats(let f): result.stored = .floats(Array(f[0..<(n * sampleSize)]))
        case .streamed: break   // rows past `count` are never asked for
        }
        return result
    }

    /// Every image normalised, the whole set at once (tests and small debugging sets).
    public var normalizedImages: [Float] {
        count == 0 ? [] : batch(Array(0..<count)[...]).images.storage
    }

    /// Copies the samples at `indices` into one normalised batch [B, C, H, W] with their labels;
    /// `transforms` (one per sample, training only) crop and flip each sample (`Augmentation`).
    public func batch(_ indices: ArraySlice<Int>, transforms: [SampleTransform]? = nil) -> (images: Tensor, labels: [Int32]) {
        let size = sampleSize
        var storage = [Float](repeating: 0, count: indices.count * size)
        let batchLabels = indices.map { labels[$0] }
        let writer = SampleWriter(shape: sampleShape, layout: layout, normalization: normalization)
        storage.withUnsafeMutableBufferPointer { dst in
            func write<Pixel>(_ rows: UnsafeBufferPointer<Pixel>, offsets: [Int], zero: Pixel, _ convert: (Pixel, Int) -> Float) {
                for row in 0..<indices.count {
                    writer.write(from: rows.baseAddress! + offsets[row], to: dst.baseAddress! + row * size,
                                 transform: transforms?[row], zero: zero, convert)
                }
            }
            let offsets = indices.map { $0 * size }
            switch stored {
            case .bytes(let pixels):
                let table = normalization.byteTable(channels: writer.channels)
                table.withUnsafeBufferPointer { t in
                    pixels.withUnsafeBufferPointer { write($0, offsets: offsets, zero: 0) { p, c in t[c << 8 | Int(p)] } }
                }
            case .floats(let pixels):
                pixels.withUnsafeBufferPointer { write($0, offsets: offsets, zero: 0, writer.floatConversion) }
            case .streamed(let file):
                switch file.readRows(indices) {
                case .bytes(let pixels, let rowOf):
                    let table = normalization.byteTable(channels: writer.channels)
                    table.withUnsafeBufferPointer { t in
                        pixels.withUnsafeBufferPointer {
                            write($0, offsets: indices.map { rowOf[$0]! * size }, zero: 0) { p, c in t[c << 8 | Int(p)] }
                        }
                    }
                case .floats(let pixels, let rowOf):
                    pixels.withUnsafeBufferPointer { write($0, offsets: indices.map { rowOf[$0]! * size }, zero: 0, writer.floatConversion) }
                }
            }
        }
        return (Tensor(shape: [indices.count] + sampleShape, storage: storage), batchLabels)
    }
}

/// Writes one stored sample as the model sees it: normalised, NCHW, optionally cropped and flipped.
struct SampleWriter {
    let channels: Int, height: Int, width: Int
    let layout: ImageLayout
    let mean: [Float], standardDeviation: [Float]

    init(shape: [Int], layout: ImageLayout, normalization: Normalization) {
        // Samples of another rank (data made in memory) are one channel of one row.
        (channels, height, width) = shape.count == 3 ? (shape[0], shape[1], shape[2]) : (1, 1, shape.reduce(1, *))
        self.layout = layout
        mean = (0..<channels).map { normalization.mean(channel: $0) }
        standardDeviation = (0..<channels).map { normalization.standardDeviation(channel: $0) }
    }

    /// torchvision's `Normalize`: subtract, then divide.
    var floatConversion: (Float, Int) -> Float { { [mean, standardDeviation] p, c in (p - mean[c]) / standardDeviation[c] } }

    func write<Pixel>(from source: UnsafePointer<Pixel>, to destination: UnsafeMutablePointer<Float>,
                      transform: SampleTransform?, zero: Pixel, _ convert: (Pixel, Int) -> Float) {
        let plane = height * width
        // Stored position of (c, y, x), for either layout.
        let (channelStride, rowStride, columnStride) = layout == .nchw ? (plane, width, 1) : (1, width * channels, channels)
        guard let t = transform, !t.isIdentity else {
            if layout == .nchw {
                for c in 0..<channels {
                    for i in 0..<plane { destination[c * plane + i] = convert(source[c * plane + i], c) }
                }
            } else {
                for c in 0..<channels {
                    for i in 0..<plane { destination[c * plane + i] = convert(source[i * channels + c], c) }
                }
            }
            return
        }
        // Crop a window at (top, left) of the image zero-padded by `padding` on every side, then
        // flip it: output (y, x) reads padded (y + top, x' + left), x' = flip ? W − 1 − x : x.
        for c in 0..<channels {
            let padded = convert(zero, c)   // torchvision pads the raw image with 0, then normalises
            for y in 0..<height {
                let sy = y + t.top - t.padding
                for x in 0..<width {
                    let sx = (t.flip ? width - 1 - x : x) + t.left - t.padding
                    let inside = sy >= 0 && sy < height && sx >= 0 && sx < width
                    destination[c * plane + y * width + x] =
                        inside ? convert(source[c * channelStride + sy * rowStride + sx * columnStride], c) : padded
                }
            }
        }
    }
}
