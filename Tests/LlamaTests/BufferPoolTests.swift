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

    func testFullPoolFreesTheBuffersFreedLongestAgo() {
        let n = 32 * 1024, bytes = BufferPool.sizeClass(n) * 4
        let pool = BufferPool(limitBytes: 3 * bytes)
        let kept = (0..<4).map { _ in pool.take(n)! }
        for p in kept { XCTAssertTrue(pool.give(p, count: n)) }
        // Four buffers offered, room for three: the first one was freed, the three newest wait for reuse.
        XCTAssertEqual(pool.heldBytes, 3 * bytes)
        let again = (0..<3).map { _ in pool.take(n)! }
        XCTAssertEqual(Set(again), Set(kept[1...]))
        XCTAssertEqual(pool.heldBytes, 0)
        // A request of another size class does not take a buffer of this one.
        XCTAssertTrue(pool.give(again[0], count: n))
        let other = pool.take(4 * n)!
        XCTAssertNotEqual(other, again[0])
        XCTAssertEqual(pool.heldBytes, bytes)
        // A buffer larger than the whole pool is not kept.
        let huge = pool.take(4 * n)!
        XCTAssertFalse(pool.give(huge, count: 4 * n))
        other.deallocate(); huge.deallocate(); pool.take(n)!.deallocate()
        for p in again[1...] { p.deallocate() }
    }
}
