import XCTest
@testable import Hashing

final class SHA256Tests: XCTestCase {
    // Expected digests are the FIPS 180-4 / NIST example vectors.
    func testKnownVectors() {
        XCTAssertEqual(SHA256.hex(string: ""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(string: "abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(string: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testStreamingInPiecesEqualsOneShot() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var h = SHA256()
        for piece in stride(from: 0, to: 1000, by: 37) {
            bytes[piece..<min(piece + 37, 1000)].withUnsafeBytes { h.update($0) }
        }
        let streamed = SHA256.hexString(h.finalize())
        XCTAssertEqual(streamed, bytes.withUnsafeBytes { SHA256.hex($0) })
        // 1,000,000 × "a" is the long NIST vector.
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(million.withUnsafeBytes { SHA256.hex($0) },
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
