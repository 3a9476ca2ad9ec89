import XCTest
@testable import Hashing

final class HMACTests: XCTestCase {
    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(UInt8(hex[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// RFC 4231 section 4, test cases 1–7 (HMAC-SHA-256 column; case 5 is truncated to 128 bits there).
    func testRFC4231Vectors() {
        let b = Self.bytes
        let cases: [(key: [UInt8], data: [UInt8], mac: String)] = [
            ([UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
             "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
             "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            ([UInt8](repeating: 0xaa, count: 20), [UInt8](repeating: 0xdd, count: 50),
             "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (b("0102030405060708090a0b0c0d0e0f10111213141516171819"), [UInt8](repeating: 0xcd, count: 50),
             "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            ([UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
             "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            ([UInt8](repeating: 0xaa, count: 131),
             Array("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".utf8),
             "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ]
        for (i, c) in cases.enumerated() {
            XCTAssertEqual(HMACSHA256.hex(c.data, key: c.key), c.mac, "RFC 4231 case \(i == 0 ? 1 : i + 1 + (i >= 4 ? 1 : 0))")
        }
        // Case 5: truncated to 128 bits.
        let t = HMACSHA256.hex(Array("Test With Truncation".utf8), key: [UInt8](repeating: 0x0c, count: 20))
        XCTAssertEqual(String(t.prefix(32)), "a3b6167473100ee06e0c796c2955552b")
    }

    func testKeyOfExactlyOneBlockAndConstantTimeCompare() {
        // A 64-byte key is used as is; a 65-byte one is hashed first, so the two codes differ.
        let k64 = [UInt8](repeating: 7, count: 64), k65 = [UInt8](repeating: 7, count: 65)
        XCTAssertNotEqual(HMACSHA256.hex([1, 2, 3], key: k64), HMACSHA256.hex([1, 2, 3], key: k65))
        XCTAssertTrue(HMACSHA256.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(HMACSHA256.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(HMACSHA256.constantTimeEqual([1, 2], [1, 2, 3]))
    }
}
