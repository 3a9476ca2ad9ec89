import Foundation

/// HMAC-SHA256 (RFC 2104, FIPS 198-1): H((K ⊕ opad) ‖ H((K ⊕ ipad) ‖ message)), with a key longer than the
/// 64-byte block first replaced by its SHA-256 and a shorter one padded with zeros. Tested against RFC 4231.
public enum HMACSHA256 {
    /// SHA-256's block size in bytes.
    static let blockSize = 64

    /// The 32-byte authentication code of `message` under `key`.
    public static func authenticate(_ message: [UInt8], key: [UInt8]) -> [UInt8] {
        var k = key
        if k.count > blockSize {
            var h = SHA256()
            h.update(k)
            k = h.finalize()
        }
        k += [UInt8](repeating: 0, count: blockSize - k.count)
        var inner = SHA256()
        inner.update(k.map { $0 ^ 0x36 })
        inner.update(message)
        let innerDigest = inner.finalize()
        var outer = SHA256()
        outer.update(k.map { $0 ^ 0x5c })
        outer.update(innerDigest)
        return outer.finalize()
    }

    /// The code as 64 lowercase hex digits.
    public static func hex(_ message: [UInt8], key: [UInt8]) -> String {
        SHA256.hexString(authenticate(message, key: key))
    }

    /// Compares two codes (hex or raw) in time independent of where they first differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }
}
