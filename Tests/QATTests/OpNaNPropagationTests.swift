import XCTest
@testable import QATIO
@testable import QATCore
@testable import QATModel
@testable import QATData
@testable import QATTrain
@testable import QATDeploy
@testable import QATDebug
import QAT

/// A NaN must never be silently turned into a number: that would let corrupt data poison the
/// weights while the loss looks fine (found by the non-finite run test).
final class OpNaNPropagationTests: XCTestCase {
    func testReLUPassesNaNThrough() {
        let y = relu(Variable(Tensor(shape: [4], storage: [-1, .nan, 2, 0])), tape: nil)
        XCTAssertEqual(y.value.storage[0], 0)
        XCTAssertTrue(y.value.storage[1].isNaN)
        XCTAssertEqual(y.value.storage[2], 2)
    }

    func testMaxPoolPropagatesNaNWhereverItIsInTheWindow() {
        for position in 0..<4 {
            var window: [Float] = [1, 5, 3, 2]
            window[position] = .nan
            let x = Variable(Tensor(shape: [1, 1, 2, 2], storage: window))
            XCTAssertTrue(maxPool2d(x, kernel: 2, stride: 2, tape: nil).value.storage[0].isNaN, "NaN at \(position)")
        }
    }

    func testIsFiniteSeesNaNAndInfinity() {
        XCTAssertTrue(Tensor(shape: [3], storage: [1, -2, 0]).isFinite)
        XCTAssertFalse(Tensor(shape: [3], storage: [1, .nan, 0]).isFinite)
        XCTAssertFalse(Tensor(shape: [3], storage: [1, 0, -.infinity]).isFinite)
    }
}
