import EtamKit
import XCTest

/// Core ML outputs with padded rows are read through their strides, not as a flat buffer.
final class StridedCopyTests: XCTestCase {
    func testPaddedRowsAreSkipped() {
        // shape (2, 3, 4) stored with rows padded to 8 elements: strides (24, 8, 1).
        let shape = [2, 3, 4], strides = [24, 8, 1]
        XCTAssertEqual(StridedCopy.storageCount(shape: shape, strides: strides), 44)
        var storage = [Float](repeating: -99, count: 48)
        for a in 0..<2 { for b in 0..<3 { for c in 0..<4 { storage[a * 24 + b * 8 + c] = Float(a * 100 + b * 10 + c) } } }
        let dense = StridedCopy.dense(shape: shape, strides: strides) { storage[$0] }
        var want: [Float] = []
        for a in 0..<2 { for b in 0..<3 { for c in 0..<4 { want.append(Float(a * 100 + b * 10 + c)) } } }
        XCTAssertEqual(dense, want)
        XCTAssertFalse(dense.contains(-99))
    }

    func testDenseAndTransposedLayouts() {
        XCTAssertEqual(StridedCopy.denseStrides([2, 3, 4]), [12, 4, 1])
        let flat = (0..<6).map(Float.init)
        XCTAssertEqual(StridedCopy.dense(shape: [2, 3], strides: [3, 1]) { flat[$0] }, flat)
        // A column-major (2, 3) array read back in row-major order.
        XCTAssertEqual(StridedCopy.dense(shape: [2, 3], strides: [1, 2]) { flat[$0] }, [0, 2, 4, 1, 3, 5])
    }
}
