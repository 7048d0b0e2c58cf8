import Foundation
@testable import QATIO
@testable import QATData

/// Small real dataset files written by the tests: HDF5 through QATIO, `.npy` byte by byte as
/// NumPy's format description lays them out.
enum DataFiles {
    /// An `.npy` file: magic, version, header length, the header padded with spaces to a
    /// multiple of 64 bytes and ended by a newline, then `payload`.
    static func npy(descr: String, shape: [Int], payload: [UInt8], version: UInt8 = 1, header: String? = nil) -> Data {
        let sizes = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var text = header ?? "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(sizes), }"
        let prefix = version == 1 ? 10 : 12
        while (prefix + text.utf8.count + 1) % 64 != 0 { text += " " }
        text += "\n"
        var data = Data([0x93]) + Data("NUMPY".utf8) + Data([version, 0])
        let length = text.utf8.count
        data += version == 1 ? Data([UInt8(length & 0xFF), UInt8(length >> 8)])
                             : Data([UInt8(length & 0xFF), UInt8(length >> 8 & 0xFF), 0, 0])
        return data + Data(text.utf8) + Data(payload)
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    static func write(_ data: Data, to path: String) throws { try data.write(to: URL(fileURLWithPath: path)) }

    /// An HDF5 dataset file with `/images` and `/labels` (no qat digest: as h5py writes it).
    static func hdf5<Image: HDF5Element, Label: HDF5Element>(at path: String, images: [Image], shape: [Int],
                                                            labels: [Label], labelShape: [Int]? = nil) throws {
        let file = try HDF5File.create(at: path, withDigest: false)
        try file.write(images, shape: shape, at: "/images")
        try file.write(labels, shape: labelShape ?? [labels.count], at: "/labels")
        try file.close()
    }
}
