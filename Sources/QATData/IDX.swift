import Foundation
import QATCore
import QATIO

/// Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed):
/// a big-endian header `0 0 type rank`, `rank` UInt32 sizes, then the raw values.
public enum IDX {
    /// Reads an unsigned-byte IDX file; returns its dimensions and bytes.
    public static func readUInt8(file: String) throws -> (dimensions: [Int], values: [UInt8]) {
        let bytes = try Gzip.readFile(file)
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw InputError(file: file, message: "not an IDX file (bad magic number)")
        }
        guard bytes[2] == 0x08 else {
            throw InputError(file: file, message: "IDX element type 0x\(String(bytes[2], radix: 16)) is not unsigned byte (0x08)")
        }
        let rank = Int(bytes[3])
        guard rank >= 1, bytes.count >= 4 + 4 * rank else {
            throw InputError(file: file, message: "IDX header is truncated")
        }
        var dimensions: [Int] = []
        for d in 0..<rank {
            let o = 4 + 4 * d
            dimensions.append(Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3]))
        }
        // The sizes come from the file: their product may overflow, which is damage, not a crash.
        var expected = 1
        for size in dimensions {
            let (product, overflow) = expected.multipliedReportingOverflow(by: size)
            guard !overflow else {
                throw InputError(file: file, message: "IDX header promises an impossible shape \(dimensions) (more values than memory can hold)")
            }
            expected = product
        }
        let payload = bytes.count - (4 + 4 * rank)
        guard payload == expected else {
            throw InputError(file: file, message: "IDX header promises \(expected) values for shape \(dimensions), file holds \(payload)")
        }
        return (dimensions, Array(bytes[(4 + 4 * rank)...]))
    }
}
