import XCTest
@testable import Llama

/// Size classes of the scratch-buffer pool: every request fits its class, with little waste, and nearby sizes share
/// a class (so batches whose row count varies reuse storage).
final class BufferPoolTests: XCTestCase {
    func testSizeClassesCoverRequestsWithBoundedWaste() {
        var previous = 0
        for n in stride(from: 1, through: 3_000_000, by: 997) {
            let s = BufferPool.sizeClass(n)
            XCTAssertGreaterThanOrEqual(s, n)
            XCTAssertLessThanOrEqual(Double(s), Double(n) * 1.125 + 1, "class of \(n) wastes too much")
            XCTAssertGreaterThanOrEqual(s, previous, "classes must grow with the request")
            previous = s
        }
        // 1,000 rows and 1,010 rows of width 576 land in the same class.
        XCTAssertEqual(BufferPool.sizeClass(1000 * 576), BufferPool.sizeClass(1010 * 576))
    }

    func testRecycledBufferHoldsAnyRequestOfItsClass() {
        let n = 100_000
        var first: UnsafeMutablePointer<Float>?
        do {
            let a = FloatBuffer(n)
            first = a.pointer
            a.pointer.update(repeating: 1, count: n)
        }
        // A slightly larger request of the same class may get the same storage back; writing all of it is valid.
        let b = FloatBuffer(BufferPool.sizeClass(n))
        b.pointer.update(repeating: 2, count: b.count)
        XCTAssertEqual(b[b.count - 1], 2)
        _ = first
        let z = FloatBuffer(n, zeroed: true)
        XCTAssertEqual(z.buffer.max(), 0)
    }
}
