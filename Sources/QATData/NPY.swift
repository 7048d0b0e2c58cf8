import Foundation
import QATIO

/// A NumPy `.npy` file (format versions 1.0 and 2.0): the magic `\x93NUMPY`, the version, the
/// header length (2 bytes little-endian in 1.0, 4 in 2.0), a header that is a Python dict literal
/// with exactly the keys `descr`, `fortran_order` and `shape`, then the values in C order.
public struct NPYArray {
    public enum ElementType: String, CaseIterable {
        case uint8 = "|u1", int32 = "<i4", int64 = "<i8", float32 = "<f4"
        var size: Int {
            switch self {
            case .uint8: return 1
            case .int32, .float32: return 4
            case .int64: return 8
            }
        }
    }

    public var type: ElementType
    public var shape: [Int]
    /// The raw little-endian values.
    public var payload: Data

    public static func read(file: String) throws -> NPYArray {
        func fail(_ message: String) -> InputError { InputError(file: file, message: message) }
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: file), options: .alwaysMapped) else {
            throw fail("cannot read the file (missing or unreadable)")
        }
        guard data.count >= 10, data.prefix(6) == Data([0x93]) + Data("NUMPY".utf8) else { throw fail("not a .npy file (bad magic)") }
        let major = data[data.startIndex + 6]
        let lengthSize: Int
        switch major {
        case 1: lengthSize = 2
        case 2: lengthSize = 4
        default: throw fail(".npy format version \(major).\(data[data.startIndex + 7]) is not supported (1.0 and 2.0 are)")
        }
        guard data.count >= 8 + lengthSize else { throw fail("the .npy header is truncated") }
        let headerLength = (0..<lengthSize).reduce(0) { $0 | Int(data[data.startIndex + 8 + $1]) << (8 * $1) }
        let start = 8 + lengthSize
        guard data.count >= start + headerLength,
              let header = String(data: data[(data.startIndex + start)..<(data.startIndex + start + headerLength)], encoding: .ascii) else {
            throw fail("the .npy header is truncated or not ASCII")
        }
        var parser = NPYHeaderParser(text: header, file: file)
        let (descr, fortranOrder, shape) = try parser.parse()
        guard let type = ElementType(rawValue: descr == "<u1" ? "|u1" : descr) else {
            throw fail("dtype '\(descr)' is not supported (allowed: |u1 uint8, <i4 int32, <i8 int64, <f4 float32; little-endian)")
        }
        guard !fortranOrder else { throw fail("fortran_order True is not supported: save a C-ordered array (np.ascontiguousarray)") }
        var count = 1
        for size in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else { throw fail("shape \(shape) is impossibly large") }
            count = product
        }
        let payloadSize = data.count - start - headerLength
        guard payloadSize == count * type.size else {
            throw fail("shape \(shape) of \(descr) needs \(count * type.size) bytes of data, the file holds \(payloadSize)")
        }
        return NPYArray(type: type, shape: shape, payload: data.suffix(from: data.startIndex + start + headerLength))
    }

    /// The first `count` values (the payload need not be aligned for `T`).
    func values<T>(_: T.Type, count: Int) -> [T] {
        payload.withUnsafeBytes { raw in
            (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
        }
    }
}

/// The strict reader of an .npy header: `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`
/// padded with spaces and ended by a newline. Anything else is an error naming what was found.
struct NPYHeaderParser {
    let characters: [Character]
    let file: String
    var position = 0

    init(text: String, file: String) {
        characters = Array(text)
        self.file = file
    }

    mutating func parse() throws -> (descr: String, fortranOrder: Bool, shape: [Int]) {
        var descr: String?, fortranOrder: Bool?, shape: [Int]?
        try expect("{")
        while true {
            skipSpaces()
            if peek == "}" { position += 1; break }
            let key = try string()
            try expect(":")
            skipSpaces()
            switch key {
            case "descr" where descr == nil: descr = try string()
            case "fortran_order" where fortranOrder == nil: fortranOrder = try boolean()
            case "shape" where shape == nil: shape = try tuple()
            case "descr", "fortran_order", "shape": throw fail("the header repeats the key '\(key)'")
            default: throw fail("the header has the key '\(key)'; only descr, fortran_order and shape are allowed")
            }
            skipSpaces()
            if peek == "," { position += 1; continue }
            try expect("}")
            break
        }
        skipSpaces()
        guard position == characters.count else { throw fail("the header has text after its dict") }
        guard let descr, let fortranOrder, let shape else { throw fail("the header lacks one of descr, fortran_order, shape") }
        return (descr, fortranOrder, shape)
    }

    private var peek: Character? { position < characters.count ? characters[position] : nil }

    private func fail(_ message: String) -> InputError { InputError(file: file, message: "bad .npy header: " + message) }

    private mutating func skipSpaces() { while let c = peek, c == " " || c == "\n" { position += 1 } }

    private mutating func expect(_ c: Character) throws {
        skipSpaces()
        guard peek == c else { throw fail("expected '\(c)' at character \(position + 1)") }
        position += 1
    }

    private mutating func string() throws -> String {
        skipSpaces()
        guard let quote = peek, quote == "'" || quote == "\"" else { throw fail("expected a quoted string at character \(position + 1)") }
        position += 1
        var text = ""
        while let c = peek, c != quote {
            guard c != "\\" else { throw fail("escapes are not allowed in header strings") }
            text.append(c)
            position += 1
        }
        try expect(quote)
        return text
    }

    private mutating func boolean() throws -> Bool {
        for (word, value) in [("True", true), ("False", false)] where characters[position...].starts(with: word) {
            position += word.count
            return value
        }
        throw fail("fortran_order must be True or False")
    }

    /// `()`, `(5,)`, `(2, 3)` or `(2, 3,)`: non-negative integers.
    private mutating func tuple() throws -> [Int] {
        try expect("(")
        var sizes: [Int] = [], trailingComma = false
        while true {
            skipSpaces()
            if peek == ")" { position += 1; break }
            trailingComma = false
            var digits = ""
            while let c = peek, c.isASCII, c.isNumber { digits.append(c); position += 1 }
            guard let size = Int(digits) else { throw fail("shape sizes must be non-negative integers (at character \(position + 1))") }
            sizes.append(size)
            skipSpaces()
            if peek == "," { position += 1; trailingComma = true; continue }
            try expect(")")
            break
        }
        // A one-element tuple needs its trailing comma; Python reads (5) as the number 5.
        guard sizes.count != 1 || trailingComma else { throw fail("shape (\(sizes[0])) is not a tuple: write (\(sizes[0]),)") }
        return sizes
    }
}

/// A dataset from a pair of `.npy` files: images uint8 or float32 ([N, C, H, W], [N, H, W, C] or
/// [N, H, W]) and labels uint8, int32 or int64 ([N]).
public enum NPYDataset {
    public static func load(images imageFile: String, labels labelFile: String, limit: Int?, inputShape: [Int]?,
                            layout: ImageLayout?, normalization: Normalization) throws -> Dataset {
        let images = try NPYArray.read(file: imageFile), labels = try NPYArray.read(file: labelFile)
        guard images.type == .uint8 || images.type == .float32 else {
            throw InputError(file: imageFile, message: "dtype \(images.type.rawValue) is not supported for images (|u1 uint8 or <f4 float32)")
        }
        guard labels.type != .float32 else {
            throw InputError(file: labelFile, message: "dtype <f4 is not supported for labels (|u1, <i4, <i8)")
        }
        var raw = RawDataset(images: .bytes([]), imageShape: images.shape, labels: [], labelShape: labels.shape,
                             imageFile: imageFile, imagePath: "", labelFile: labelFile, labelPath: "")
        let (_, sampleShape) = try raw.checkShapes(inputShape: inputShape, declared: layout)
        let count = min(limit ?? images.shape[0], images.shape[0])
        let kept = count * sampleShape.reduce(1, *)
        switch labels.type {
        case .uint8: raw.labels = labels.values(UInt8.self, count: count).map { Int64($0) }
        case .int32: raw.labels = labels.values(Int32.self, count: count).map { Int64($0) }
        case .int64: raw.labels = labels.values(Int64.self, count: count)
        case .float32: break   // refused above
        }
        raw.images = images.type == .uint8 ? .bytes([UInt8](images.payload.prefix(kept))) : .floats(images.values(Float.self, count: kept))
        return try raw.dataset(count: count, inputShape: inputShape, layout: layout, normalization: normalization)
    }
}
