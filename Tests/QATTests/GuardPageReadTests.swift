import XCTest
import CInt8
import CKernels
import Glibc

/// Vector kernels that read with masked loads must not read past their input: each test puts
/// the input's last float at the end of a page whose successor is unmapped, so a read one float
/// too far faults (a masked-off lane never does). ASan found both bugs these tests pin: a
/// stride-2 run of exactly 8 windows loaded 16 floats for its 15.
final class GuardPageReadTests: XCTestCase {
    /// Calls `body` with `count` writable floats that end where an unreadable page begins.
    private func withFloatsBeforeGuardPage(_ count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (4 * count + page - 1) / page + 1
        guard let region = mmap(nil, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              region != MAP_FAILED else { throw XCTSkip("mmap failed") }
        defer { munmap(region, pages * page) }
        XCTAssertEqual(mprotect(region + (pages - 1) * page, page, PROT_NONE), 0)
        let floats = (region + (pages - 1) * page - 4 * count).bindMemory(to: Float.self, capacity: count)
        for i in 0..<count { floats[i] = Float((i * 7919) % 61) - 30 }
        body(floats)
    }

    /// 2×2 windows at stride 2 over rows of `width`: runs of 8 (16, 17), 15 and 16 windows.
    private let widths = [16, 17, 30, 33]

    private func expectedMax(_ x: UnsafeMutablePointer<Float>, width: Int, output j: Int) -> Float {
        [x[2 * j], x[2 * j + 1], x[width + 2 * j], x[width + 2 * j + 1]].max()!
    }

    func testTrainingMaxPoolReadsNothingPastTheInput() throws {
        for width in widths {
            let ow = (width - 2) / 2 + 1
            try withFloatsBeforeGuardPage(2 * width) { x in
                var geometry = qat_pool_geometry(height: 2, width: width, out_height: 1, out_width: ow, kernel_h: 2,
                                                 kernel_w: 2, stride_h: 2, stride_w: 2, pad_top: 0, pad_left: 0,
                                                 pad_bottom: 0, pad_right: 0)
                var y = [Float](repeating: 0, count: ow)
                var argmax = [Int32](repeating: 0, count: ow)
                qat_maxpool_padded_forward(x, &y, &argmax, &geometry, 0, 1)
                for j in 0..<ow { XCTAssertEqual(y[j], expectedMax(x, width: width, output: j), "width \(width), output \(j)") }
            }
        }
    }

    func testInt8EngineFloatMaxPoolReadsNothingPastTheInput() throws {
        for path in [QAT_I8_VNNI, QAT_I8_AVX2, QAT_I8_PORTABLE] where qat_i8_cpu_supports(path) != 0 {
            for width in widths {
                let ow = Int32((width - 2) / 2 + 1)
                try withFloatsBeforeGuardPage(2 * width) { x in
                    var geometry = qat_i8_pool_geometry(h: 2, w: Int32(width), oh: 1, ow: ow, kh: 2, kw: 2, sh: 2, sw: 2,
                                                        pad_top: 0, pad_left: 0)
                    var y = [Float](repeating: 0, count: Int(ow))
                    qat_i8_maxpool_float(path, x, &y, 1, &geometry)
                    for j in 0..<Int(ow) {
                        XCTAssertEqual(y[j], expectedMax(x, width: width, output: j), "path \(path), width \(width), output \(j)")
                    }
                }
            }
        }
    }
}
