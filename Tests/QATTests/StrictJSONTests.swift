import Foundation
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif
@testable import QATIO
@testable import QATModel
@testable import QATTrain

/// The strict JSON reader (QATIO/JSONParser.swift): what it refuses, with the exact message, what
/// it accepts, and that no input makes it crash or hang. Also the markup escaping of plots.
final class StrictJSONTests: XCTestCase {
    /// The one-line error for `text` read as my.json, or nil when it parses.
    private func failure(_ text: String) -> String? {
        failure(Data(text.utf8))
    }

    private func failure(_ data: Data) -> String? {
        do {
            _ = try JSONObject.parse(data, file: "my.json")
            return nil
        } catch let error as InputError {
            return error.description
        } catch {
            return "not an InputError: \(error)"
        }
    }

    private func parsed(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> JSONObject {
        do { return try JSONObject.parse(Data(text.utf8), file: "my.json") } catch {
            XCTFail("\(text) should parse: \(error)", file: file, line: line)
            throw error
        }
    }

    func testDuplicateKeysNameThePathAndBothLines() {
        XCTAssertEqual(failure("{\"conv1\": {\"retrain_enable\": \"x\"}, \"conv1\": {}}"),
                       "my.json: conv1: duplicate key (first on line 1, again on line 1)")
        let nested = """
            {
              "conv1": {
                "retrain_enable": true,
                "retrain_data_config": {"algo": "ulq_quantize"},
                "retrain_enable": false
              }
            }
            """
        XCTAssertEqual(failure(nested), "my.json: conv1.retrain_enable: duplicate key (first on line 3, again on line 5)")
        XCTAssertEqual(failure("{\"layers\": [{}, {\"a\": 1,\n\"b\": 2,\n\"a\": 3}]}"),
                       "my.json: layers[1].a: duplicate key (first on line 1, again on line 3)")
        // The same key in two different objects is fine.
        XCTAssertNil(failure("{\"a\": {\"x\": 1}, \"b\": {\"x\": 1}}"))
    }

    func testSyntaxErrorsGiveLineAndColumn() {
        let cases: [(String, String)] = [
            ("{\"a\": 1,}", "line 1, column 9: expected a key in double quotes after ',', found '}' (trailing commas are not allowed)"),
            ("[1, 2,]", "line 1, column 7: expected a value after ',', found ']' (trailing commas are not allowed)"),
            ("{\n  \"a\": 1\n  \"b\": 2\n}", "line 3, column 3: expected ',' or '}' after an object member, found '\"'"),
            ("[1 2]", "line 1, column 4: expected ',' or ']' after an array element, found '2'"),
            ("{\"a\" 1}", "line 1, column 6: expected ':' after the key, found '1'"),
            ("{a: 1}", "line 1, column 2: expected a key in double quotes or '}', found 'a'"),
            ("{\"a\": 1} // note", "line 1, column 10: unexpected '/' after the end of the JSON value"),
            ("{\"a\": /* c */ 1}", "line 1, column 7: comments are not allowed in JSON"),
            ("{\"a\": NaN}", "line 1, column 7: expected a value (an object, array, string, number, true, false or null), found 'N'"),
            ("{\"a\": -Infinity}", "line 1, column 8: expected a digit after '-', found 'I'"),
            ("{\"a\": nan}", "line 1, column 7: unexpected 'nan' (JSON has no NaN or Infinity; words are true, false and null)"),
            ("{\"a\": True}", "line 1, column 7: expected a value (an object, array, string, number, true, false or null), found 'T'"),
            ("{\"a\": 012}", "line 1, column 7: leading zeros are not allowed in a number"),
            ("{\"a\": -01}", "line 1, column 8: leading zeros are not allowed in a number"),
            ("{\"a\": 1.}", "line 1, column 9: expected a digit after '.', found '}'"),
            ("{\"a\": .5}", "line 1, column 7: expected a value (an object, array, string, number, true, false or null), found '.'"),
            ("{\"a\": 1e}", "line 1, column 9: expected a digit in the exponent, found '}'"),
            ("{\"a\": 1e400}", "line 1, column 7: the number 1e400 is too large"),
            ("{\"a\": \"x\ty\"}", "line 1, column 9: control character U+0009 inside a string (write it as \\u0009; a string cannot span lines)"),
            ("{\"a\": \"x\ny\"}", "line 1, column 9: control character U+000A inside a string (write it as \\u000A; a string cannot span lines)"),
            ("{\"a\": \"\\x41\"}", "line 1, column 9: invalid escape \\x in a string (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)"),
            ("{\"a\": \"\\u12G4\"}", "line 1, column 8: invalid \\u escape: expected four hex digits"),
            ("{\"a\": \"\\uD83D\"}", "line 1, column 8: invalid \\u escape: a high surrogate must be followed by a \\u escape of a low surrogate"),
            ("{\"a\": \"\\uD83D\\u0041\"}", "line 1, column 8: invalid \\u escape: a high surrogate must be followed by a \\u escape of a low surrogate"),
            ("{\"a\": \"\\uDE00\"}", "line 1, column 8: invalid \\u escape: a low surrogate without a high surrogate before it"),
            ("{\"a\": \"abc", "line 1, column 11: unexpected end of the file inside a string (missing closing '\"')"),
            ("{\"a\": 1", "line 1, column 8: expected ',' or '}' after an object member, found the end of the file"),
            ("{\"a\": 1}}", "line 1, column 9: unexpected '}' after the end of the JSON value"),
            ("", "line 1, column 1: the file is empty, expected a JSON value"),
            ("  \n ", "line 2, column 2: the file is empty, expected a JSON value"),
            ("{\"é\": 1, \"ü\": x}", "line 1, column 15: expected a value (an object, array, string, number, true, false or null), found 'x'"),
            ("[1]", "the top level must be a JSON object"),
        ]
        for (text, message) in cases {
            XCTAssertEqual(failure(text), "my.json: " + message, text)
        }
        XCTAssertEqual(failure(Data([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D])),
                       "my.json: line 1, column 6: the string starting here is not valid UTF-8")
    }

    func testNestingDepthIsCapped() throws {
        let allowed = String(repeating: "[", count: JSONParser.maxDepth - 1) + String(repeating: "]", count: JSONParser.maxDepth - 1)
        XCTAssertNil(failure("{\"a\": \(allowed)}"))
        let tooDeep = String(repeating: "[", count: JSONParser.maxDepth) + String(repeating: "]", count: JSONParser.maxDepth)
        XCTAssertEqual(failure("{\"a\": \(tooDeep)}"),
                       "my.json: line 1, column 134: the nesting is too deep (more than 128 arrays and objects inside each other)")
        // Far deeper than any stack could recurse: still one clear line.
        let huge = String(repeating: "{\"a\":", count: 200_000)
        XCTAssertEqual(failure(huge)?.contains("the nesting is too deep"), true)
    }

    func testNullIsNotAbsent() throws {
        let root = try parsed("{\"train\": null, \"name\": null, \"n\": null, \"list\": [1, null], \"flag\": null}")
        assertInputError(try root.object("train"), mentions: ["my.json: train: expected an object, got null"])
        assertInputError(try root.string("name"), mentions: ["my.json: name: expected a string, got null"])
        assertInputError(try root.int("n"), mentions: ["my.json: n: expected a number, got null"])
        assertInputError(try root.bool("flag"), mentions: ["my.json: flag: expected true or false, got null"])
        assertInputError(try root.intArray("list"), mentions: ["my.json: list[1]: expected an integer, got null"])
        assertInputError(try root.value("train"), mentions: ["my.json: train: expected a value, got null"])
        XCTAssertNil(try root.object("absent"))
    }

    func testLongValuesAreCutInMessages() throws {
        let long = String(repeating: "x", count: 10_000_000)
        let root = try parsed("{\"a\": \"\(long)\"}")
        XCTAssertEqual(try root.string("a")?.count, 10_000_000)
        do {
            _ = try root.int("a")
            XCTFail("a string is not a number")
        } catch let error as InputError {
            XCTAssertEqual(error.description, "my.json: a: expected a number, got a string (\"\(String(repeating: "x", count: 60))…\")")
        }
        let longKey = String(repeating: "k", count: 5000)
        let duplicate = failure("{\"\(longKey)\": 1, \"\(longKey)\": 2}")
        XCTAssertEqual(duplicate, "my.json: \(String(repeating: "k", count: 60))…: duplicate key (first on line 1, again on line 1)")
        let unknown = try parsed("{\"\(longKey)\": 1}")
        assertInputError(try unknown.rejectUnknownKeys(allowed: ["a"]), mentions: [String(repeating: "k", count: 60) + "…: unknown key"])
        // Control characters in keys and values are spelled out: the error stays one line.
        XCTAssertEqual(failure("{\"a\\nb\": 1, \"a\\nb\": 2}"), "my.json: a\\u000Ab: duplicate key (first on line 1, again on line 1)")
        assertInputError(try parsed("{\"a\": \"x\\ty\"}").int("a"), mentions: ["got a string (\"x\\u0009y\")"])
        // A long unknown value in a spec is cut the same way.
        let spec = try parsed("{\"input\": [1, 28, 28], \"layers\": [{\"name\": \"a\", \"type\": \"\(String(repeating: "t", count: 100_000))\"}]}")
        do {
            _ = try ModelSpec.parse(spec)
            XCTFail("an unknown layer type")
        } catch let error as InputError {
            XCTAssertTrue(error.description.hasPrefix("my.json: layers[0].type: unknown layer type \"\(String(repeating: "t", count: 60))…\" (known: "),
                          error.description)
        }
    }

    func testAcceptedEdgeCases() throws {
        let root = try parsed("""
            \u{FEFF}{"u": "\\u00e9\\u4e2d\\ud83d\\ude00\\n\\t\\"\\\\\\/", "raw": "é中😀", "e1": 1e2, "e2": 2.5E-3, "e3": -1.5e+1,
             "nz": -0, "nzf": -0.0, "big": 9007199254740993, "huge": 123456789012345678901234567890,
             "o": {}, "a": [], "t": true, "f": false, "ints": [0, -7, 3], "d": [0.5, -2, 1e0]}
            """)
        XCTAssertEqual(try root.string("u"), "é中😀\n\t\"\\/")
        XCTAssertEqual(try root.string("raw"), "é中😀")
        XCTAssertEqual(try root.int("e1"), 100)
        XCTAssertEqual(try root.double("e2"), 0.0025)
        XCTAssertEqual(try root.double("e3"), -15)
        XCTAssertEqual(try root.int("nz"), 0)
        XCTAssertEqual(try root.double("nzf")?.sign, .minus)
        XCTAssertEqual((root.values["big"] as? NSNumber)?.int64Value, 9007199254740993, "integers that fit keep every digit")
        XCTAssertEqual(try root.double("huge"), 123456789012345678901234567890.0)
        assertInputError(try root.int("huge"), mentions: ["my.json: huge: expected an integer"])
        XCTAssertEqual(try root.object("o")?.keys, [])
        XCTAssertEqual(try root.intArray("a"), [])
        XCTAssertEqual(try root.bool("t"), true)
        XCTAssertEqual(try root.bool("f"), false)
        assertInputError(try root.double("t"), mentions: ["my.json: t: expected a number, got a boolean (true)"])
        XCTAssertEqual(try root.intArray("ints"), [0, -7, 3])
        XCTAssertEqual(try root.doubleArray("d"), [0.5, -2, 1])
        // JSONValue reads through the same parser and keeps integer digits.
        XCTAssertEqual(try JSONValue(parsing: Data("{\"n\": 12345678901234567, \"x\": 0.1}".utf8), file: "v.json").text,
                       try JSONValue(parsing: Data("{\"x\": 0.1, \"n\": 12345678901234567}".utf8), file: "v.json").text)
        XCTAssertThrowsError(try JSONValue(parsing: Data("{\"a\": 1, \"a\": 2}".utf8), file: "v.json"))
        XCTAssertEqual(try JSONValue(parsing: Data("[18446744073709551615, -9223372036854775808]".utf8), file: "v.json"),
                       .array([.number("18446744073709551615"), .number("-9223372036854775808")]))
    }

    /// Seeded random and mutated inputs: each parses or throws an InputError, all within seconds.
    func testRandomInputsNeverCrashOrHang() {
        var generator = SplitMix64(seed: 14)
        let seedText = Array("{\"conv1\": {\"retrain_enable\": true, \"x\": [1, -2.5e3, \"a\\u00e9\\n\"], \"y\": null}}".utf8)
        let alphabet = Array("{}[]\",:\\/-+.0123456789eEtruefalsnul \n\tuD8DC\u{7F}".utf8) + [0x00, 0x80, 0xC3, 0xA9, 0xFF, 0xED, 0xA0]
        let start = Date()
        var parsedCount = 0, rejectedCount = 0
        for round in 0..<2000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(generator.next() % 200)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            } else {
                bytes = seedText
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    let at = Int(generator.next() % UInt64(bytes.count))
                    switch generator.next() % 3 {
                    case 0: bytes[at] = UInt8(truncatingIfNeeded: generator.next())
                    case 1: bytes.remove(at: at)
                    default: bytes.insert(alphabet[Int(generator.next() % UInt64(alphabet.count))], at: at)
                    }
                }
            }
            let message = failure(Data(bytes))
            if let message {
                XCTAssertTrue(message.hasPrefix("my.json: "), message)
                XCTAssertFalse(message.contains("not an InputError"), message)
                XCTAssertFalse(message.contains("\n"), "one line: \(message)")
                rejectedCount += 1
            } else {
                parsedCount += 1
            }
        }
        XCTAssertGreaterThan(parsedCount, 0, "some mutations keep the document valid")
        XCTAssertGreaterThan(rejectedCount, 1000)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
    }

    func testMarkupEscaping() throws {
        XCTAssertEqual(markupEscaped("fc1<script>&'\"x\u{1}"), "fc1&lt;script&gt;&amp;&#39;&quot;x\u{FFFD}")
        let folder = try makeTemporaryFolder(self)
        let log = MetricsLog(folder: folder, layerNames: ["fc1<script>", "a&b'\"c\u{7}"], interval: 1)
        try log.append(.init(epoch: 1, step: 1, kind: "epoch", loss: 1, trainAccuracy: 0.5, testLoss: 1, testAccuracy: 0.5,
                             learningRate: 0.1, clipBounds: [0, 1, -1, 2]))
        let svg = try Data(contentsOf: URL(fileURLWithPath: log.svgPath))
        let parser = XMLParser(data: svg)
        XCTAssertTrue(parser.parse(), "metrics.svg is well-formed XML: \(String(describing: parser.parserError))")
        let text = String(decoding: svg, as: UTF8.self)
        XCTAssertTrue(text.contains(">fc1&lt;script&gt;</text>"))
        XCTAssertFalse(text.contains("<script>"))
    }
}

/// A small seeded generator (SplitMix64), so the random cases are the same on every run.
private struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
