import Foundation
import XCTest
@testable import GGUF

/// Dequantization on hand-built blocks. Every expected number below was worked out by hand from
/// ggml's block definitions (see the comment next to each), never by running the code under test.
///
/// Half-float bit patterns used for scales: 0x3800 = 0.5, 0x3400 = 0.25, 0x3C00 = 1, 0x4000 = 2,
/// 0xBC00 = −1, 0xB400 = −0.25.
final class DequantizeTests: XCTestCase {
    // MARK: helpers

    /// Little-endian bytes of a u16 (half float bit pattern).
    func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }

    func deq(_ type: GGMLType, _ bytes: [UInt8], _ count: Int, file: StaticString = #filePath, line: UInt = #line) throws -> [Float] {
        XCTAssertEqual(bytes.count, type.byteCount(elements: count), "test block has the wrong size", file: file, line: line)
        let out = try Dequantize.floats(type, bytes, count: count)
        XCTAssertEqual(out.count, count, file: file, line: line)
        return out
    }

    /// Asserts `out[i] == v` for each (i, v), exactly (all chosen values are exact in float32).
    func expect(_ out: [Float], _ pairs: [(Int, Float)], file: StaticString = #filePath, line: UInt = #line) {
        for (i, v) in pairs {
            XCTAssertEqual(out[i], v, "element \(i)", file: file, line: line)
        }
    }

    /// 16 qs bytes whose low nibble is j and high nibble 15 − j: element j ↦ j, element j+16 ↦ 15 − j.
    let rampNibbles: [UInt8] = (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }

    // MARK: plain float types

    func testF32() throws {
        // 1.5 = 0x3FC00000, −2 = 0xC0000000
        let out = try deq(.f32, le32(0x3FC0_0000) + le32(0xC000_0000), 2)
        XCTAssertEqual(out, [1.5, -2])
    }

    func testF16() throws {
        let bits: [UInt16] = [0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x8400, 0xFC00, 0x0000]
        let out = try deq(.f16, bits.flatMap(le16), bits.count)
        XCTAssertEqual(out[0], 1)
        XCTAssertEqual(out[1], -2)
        XCTAssertEqual(out[2], 0.333251953125)          // 2^-2 · (1 + 341/1024) = 1365/4096
        XCTAssertEqual(out[3], 65504)                   // largest finite half
        XCTAssertEqual(out[4], 5.9604644775390625e-08)  // 2^-24, smallest subnormal
        XCTAssertEqual(out[5], -6.103515625e-05)        // −2^-14, smallest normal
        XCTAssertEqual(out[6], -.infinity)
        XCTAssertEqual(out[7], 0)
    }

    func testBF16() throws {
        let bits: [UInt16] = [0x3F80, 0xC040, 0x4049, 0x7F80, 0x0001]
        let out = try deq(.bf16, bits.flatMap(le16), bits.count)
        XCTAssertEqual(out[0], 1)
        XCTAssertEqual(out[1], -3)
        XCTAssertEqual(out[2], 3.140625)               // 2 · (1 + 73/128)
        XCTAssertEqual(out[3], .infinity)
        XCTAssertEqual(out[4], Float(bitPattern: 0x0001_0000))   // 2^-133, a float32 subnormal
        XCTAssertEqual(out[4], 0x1p-133)
    }

    // MARK: 32-element block types

    func testQ8_0() throws {
        // block 0: d = 0.5; qs = 127, −128, −1, then qs[j] = j
        var b0 = le16(0x3800) + [127, 0x80, 0xFF]
        b0 += (3..<32).map { UInt8($0) }
        // block 1: d = −0.25; qs[j] = j − 16 (two's complement)
        let b1 = le16(0xB400) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        let out = try deq(.q8_0, b0 + b1, 64)
        expect(out, [(0, 63.5),         // 0.5 · 127
                     (1, -64),          // 0.5 · −128
                     (2, -0.5),         // 0.5 · −1
                     (17, 8.5),         // 0.5 · 17
                     (31, 15.5),        // 0.5 · 31
                     (32, 4),           // −0.25 · (0 − 16)
                     (37, 2.75),        // −0.25 · (5 − 16)
                     (48, 0),           // −0.25 · 0
                     (63, -3.75)])      // −0.25 · 15
    }

    func testQ4_0() throws {
        // d = 0.5; element j = 0.5·(j − 8), element j+16 = 0.5·((15 − j) − 8)
        let out = try deq(.q4_0, le16(0x3800) + rampNibbles, 32)
        expect(out, [(0, -4), (1, -3.5), (3, -2.5), (8, 0), (15, 3.5),
                     (16, 3.5),         // qs[0] high nibble 15 → 0.5·7
                     (17, 3),           // qs[1] high nibble 14 → 0.5·6
                     (23, 0),           // qs[7] high nibble 8
                     (31, -4)])         // qs[15] high nibble 0
    }

    func testQ4_1() throws {
        // block 0: d = 0.5, m = −1, ramp nibbles: element j = 0.5·j − 1, element j+16 = 0.5·(15 − j) − 1
        let b0 = le16(0x3800) + le16(0xBC00) + rampNibbles
        // block 1: d = 0.25, m = 2, every qs byte 0xA3: low nibble 3, high nibble 10
        let b1 = le16(0x3400) + le16(0x4000) + [UInt8](repeating: 0xA3, count: 16)
        let out = try deq(.q4_1, b0 + b1, 64)
        expect(out, [(0, -1), (5, 1.5), (15, 6.5), (16, 6.5), (20, 4.5), (31, -1),
                     (32, 2.75),        // 0.25·3 + 2
                     (40, 2.75),
                     (48, 4.5),         // 0.25·10 + 2
                     (63, 4.5)])
    }

    /// qh = 0x80010005: high bit set for elements 0, 2, 16 and 31.
    let qhBits: UInt32 = 0x8001_0005

    func testQ5_0() throws {
        let out = try deq(.q5_0, le16(0x3800) + le32(qhBits) + rampNibbles, 32)
        expect(out, [(0, 0),            // (0 | 16) − 16 = 0
                     (1, -7.5),         // 0.5·(1 − 16)
                     (2, 1),            // 0.5·((2 | 16) − 16)
                     (15, -0.5),        // 0.5·(15 − 16)
                     (16, 7.5),         // high nibble 15 | 16 = 31 → 0.5·15
                     (17, -1),          // 14 → 0.5·(14 − 16)
                     (31, 0)])          // 0 | 16 → 0
    }

    func testQ5_1() throws {
        let out = try deq(.q5_1, le16(0x3800) + le16(0xBC00) + le32(qhBits) + rampNibbles, 32)
        expect(out, [(0, 7),            // 0.5·16 − 1
                     (1, -0.5),         // 0.5·1 − 1
                     (2, 8),            // 0.5·18 − 1
                     (15, 6.5),         // 0.5·15 − 1
                     (16, 14.5),        // 0.5·31 − 1
                     (17, 6),           // 0.5·14 − 1
                     (31, 7)])          // 0.5·16 − 1
    }

    // MARK: K-quants

    /// 12 packed bytes for scales sc = [1, 2, 3, 4, 17, 33, 50, 63] and mins mn = [0, 5, 10, 20, 2, 52, 23, 44]
    /// (the top bits of sc[4…7] and mn[4…7] all differ, so mixing up their source bytes shows).
    /// Bytes 0–3: sc[j] | (sc[j+4] >> 4) << 6; bytes 4–7: mn[j] | (mn[j+4] >> 4) << 6;
    /// bytes 8–11: (sc[j+4] & 15) | (mn[j+4] & 15) << 4.
    /// sc4 = 17 = 01|0001, sc5 = 33 = 10|0001, sc6 = 50 = 11|0010, sc7 = 63 = 11|1111,
    /// mn4 = 2 = 00|0010, mn5 = 52 = 11|0100, mn6 = 23 = 01|0111, mn7 = 44 = 10|1100.
    let kScales: [UInt8] = [0x41, 0x82, 0xC3, 0xC4,     // 1|1<<6, 2|2<<6, 3|3<<6, 4|3<<6
                            0x00, 0xC5, 0x4A, 0x94,     // 0|0<<6, 5|3<<6, 10|1<<6, 20|2<<6
                            0x21, 0x41, 0x72, 0xCF]     // 1|2<<4, 1|4<<4, 2|7<<4, 15|12<<4

    /// qs[32g + l]: low nibble l % 16 (sub-block 2g, position l), high nibble 15 − l % 16 (sub-block 2g+1).
    var kNibbles: [UInt8] { (0..<128).map { i in let l = i % 16; return UInt8(l) | UInt8(15 - l) << 4 } }

    func testQ4_K() throws {
        // d = 0.5, dmin = 0.25; value = 0.5·sc·q − 0.25·mn
        let block = le16(0x3800) + le16(0x3400) + kScales + kNibbles
        let out = try deq(.q4_K, block, 256)
        expect(out, [(0, 0),            // sub 0, q 0: 0 − 0
                     (5, 2.5),          // sub 0, q 5: 0.5·1·5 − 0
                     (40, 5.75),        // sub 1, l 8, q 15−8 = 7: 0.5·2·7 − 0.25·5
                     (67, 2),           // sub 2, q 3: 0.5·3·3 − 0.25·10
                     (127, -5),         // sub 3, l 31, q 0: −0.25·20
                     (145, 8),          // sub 4 (high-bit path), l 17, q 1: 0.5·17·1 − 0.25·2
                     (162, 201.5),      // sub 5, l 2, q 13: 0.5·33·13 − 0.25·52
                     (212, 94.25),      // sub 6, l 20, q 4: 0.5·50·4 − 0.25·23
                     (224, 461.5),      // sub 7, l 0, q 15: 0.5·63·15 − 0.25·44
                     (255, -11)])       // sub 7, l 31, q 0: −0.25·44
    }

    func testQ5_K() throws {
        // qh[l] = 0xA5 (bits 0,2,5,7) for even l, 0x5A (bits 1,3,4,6) for odd l;
        // bit k of qh[l] adds 16 to position l of sub-block k.
        let qh: [UInt8] = (0..<32).map { $0 % 2 == 0 ? 0xA5 : 0x5A }
        let block = le16(0x3800) + le16(0x3400) + kScales + qh + kNibbles
        let out = try deq(.q5_K, block, 256)
        expect(out, [(0, 8),            // sub 0, l 0 even → bit 0 set: q 16: 0.5·1·16
                     (5, 2.5),          // sub 0, l 5 odd → 0x5A bit 0 clear: q 5
                     (40, 5.75),        // sub 1, l 8 even → 0xA5 bit 1 clear: q 7: 7 − 1.25
                     (41, 20.75),       // sub 1, l 9 odd → 0x5A bit 1 set: q 6+16: 0.5·2·22 − 1.25
                     (66, 24.5),        // sub 2, l 2 even → bit 2 set: q 18: 0.5·3·18 − 2.5
                     (67, 2),           // sub 2, l 3 odd → clear: q 3: 4.5 − 2.5
                     (145, 144),        // sub 4, l 17 odd → 0x5A bit 4 set: q 17: 0.5·17·17 − 0.5
                     (162, 465.5),      // sub 5, l 2 even → bit 5 set: q 29: 0.5·33·29 − 13
                     (212, 94.25),      // sub 6, l 20 even → 0xA5 bit 6 clear: q 4: 100 − 5.75
                     (224, 965.5),      // sub 7, l 0 even → bit 7 set: q 31: 0.5·63·31 − 11
                     (255, -11)])       // sub 7, l 31 odd → 0x5A bit 7 clear: q 0
    }

    func testQ6_K() throws {
        // ql[t] = t (t < 128); qh[l] = 0xE4 (2-bit fields 0,1,2,3) in the first half, 0x1B (3,2,1,0)
        // in the second; scales = 1, −2, 3, −4, …, 15, −16; d = 0.5 at the end of the block.
        // In half n, element i = l + 32k takes low bits from ql[64n + l] (k=0), ql[64n + l + 32] (k=1)
        // low nibbles, the same bytes' high nibbles (k=2, 3), top bits (qh[32n + l] >> 2k) & 3,
        // scale scales[8n + i/16]; value = d·scale·(q − 32).
        let ql: [UInt8] = (0..<128).map { UInt8($0) }
        let qh: [UInt8] = [UInt8](repeating: 0xE4, count: 32) + [UInt8](repeating: 0x1B, count: 32)
        let scales: [UInt8] = (1...16).map { UInt8(bitPattern: Int8($0 % 2 == 1 ? $0 : -$0)) }
        let block = ql + qh + scales + le16(0x3800)
        let out = try deq(.q6_K, block, 256)
        expect(out, [(0, -16),          // l 0 k 0: q 0 | 0<<4 = 0, scale 1: 0.5·1·(−32)
                     (17, 31),          // l 17 k 0: ql[17] = 0x11 → 1, q 1, scale −2: 0.5·(−2)·(−31)
                     (40, -12),         // l 8 k 1: ql[40] = 0x28 → 8, top 1 → q 24, scale 3: 0.5·3·(−8)
                     (84, -3),          // l 20 k 2: ql[20] = 0x14 → 1, top 2 → q 33, scale[5] −6: 0.5·(−6)·1
                     (100, 63),         // l 4 k 3: ql[36] = 0x24 → 2, top 3 → q 50, scale[6] 7: 0.5·7·18
                     (127, -76),        // l 31 k 3: ql[63] = 0x3F → 3, top 3 → q 51, scale[7] −8: 0.5·(−8)·19
                     (128, 72),         // half 1, l 0 k 0: ql[64] = 0x40 → 0, top 3 → q 48, scale[8] 9: 0.5·9·16
                     (173, 71.5),       // l 13 k 1: ql[109] = 0x6D → 13, top 2 → q 45, scale[10] 11: 0.5·11·13
                     (218, 77),         // l 26 k 2: ql[90] = 0x5A → 5, top 1 → q 21, scale[13] −14: 0.5·(−14)·(−11)
                     (255, 200)])       // l 31 k 3: ql[127] = 0x7F → 7, top 0 → q 7, scale[15] −16: 0.5·(−16)·(−25)
    }

    /// Many blocks, so the work is split across threads: every block must land in its own place.
    func testParallelSplitKeepsBlockOrder() throws {
        // Q4_1 with d = 1, m = 0; block b stores b in the nibbles of qs[0] and qs[1]:
        // element 0 = b & 15, element 16 = (b >> 4) & 15, element 1 = (b >> 8) & 15, element 17 = b >> 12.
        let blocks = 20_000
        var bytes: [UInt8] = []
        bytes.reserveCapacity(blocks * 20)
        for b in 0..<blocks {
            bytes += le16(0x3C00) + le16(0x0000) + [UInt8(b & 0xFF), UInt8(b >> 8)]
            bytes += [UInt8](repeating: 0x00, count: 14)
        }
        XCTAssertGreaterThan(blocks * 32, Dequantize.parallelThreshold)
        let out = try deq(.q4_1, bytes, blocks * 32)
        for b in 0..<blocks {
            let y = 32 * b
            let got = Int(out[y]) + 16 * Int(out[y + 16]) + 256 * Int(out[y + 1]) + 4096 * Int(out[y + 17])
            if got != b { XCTFail("block \(b) decoded as \(got)"); return }
            if out[y + 2] != 0 || out[y + 31] != 0 { XCTFail("block \(b): zero nibbles decoded nonzero"); return }
        }
    }

    // MARK: errors

    func testUnsupportedTypesThrow() {
        for type in [GGMLType.q2_K, .q3_K, .q8_1, .q8_K, .i8, .i32, .f64] {
            let bytes = [UInt8](repeating: 0, count: type.typeSize)
            XCTAssertThrowsError(try Dequantize.floats(type, bytes, count: type.blockSize, tensor: "w")) { e in
                XCTAssertEqual(e as? GGUFError, .unsupportedQuantization(path: "", type: type.rawValue, tensor: "w"))
            }
        }
    }

    func testShortInputThrows() {
        let bytes = [UInt8](repeating: 0, count: 39)     // two Q4_1 blocks need 40
        XCTAssertThrowsError(try Dequantize.floats(.q4_1, bytes, count: 64, tensor: "w")) { e in
            XCTAssertEqual(e as? GGUFError, .wrongElementCount(tensor: "w", expected: 40, found: 39))
        }
        XCTAssertThrowsError(try Dequantize.floats(.q6_K, [UInt8](repeating: 0, count: 209), count: 256, tensor: "k")) { e in
            XCTAssertEqual(e as? GGUFError, .wrongElementCount(tensor: "k", expected: 210, found: 209))
        }
    }

    func testPartialBlockCountThrows() {
        let bytes = [UInt8](repeating: 0, count: 68)
        XCTAssertThrowsError(try Dequantize.floats(.q8_0, bytes, count: 40, tensor: "w")) { e in
            XCTAssertEqual(e as? GGUFError, .wrongElementCount(tensor: "w", expected: 64, found: 40))
        }
    }

    func testZeroCountIsFine() throws {
        XCTAssertEqual(try Dequantize.floats(.q4_K, [], count: 0), [])
    }

    // MARK: half / bfloat16 conversion

    func testHalfToFloatSpecials() {
        XCTAssertEqual(HalfFloat.toFloat(0x0000).bitPattern, 0x0000_0000)    // +0
        XCTAssertEqual(HalfFloat.toFloat(0x8000).bitPattern, 0x8000_0000)    // −0
        XCTAssertEqual(HalfFloat.toFloat(0x0001), 5.9604644775390625e-08)     // 2^-24
        XCTAssertEqual(HalfFloat.toFloat(0x0001), 0x1p-24)
        XCTAssertEqual(HalfFloat.toFloat(0x8003), -3 * 0x1p-24)
        XCTAssertEqual(HalfFloat.toFloat(0x0200), 0x1p-15)                    // subnormal 512·2^-24
        XCTAssertEqual(HalfFloat.toFloat(0x03FF), 1023 * 0x1p-24)             // largest subnormal
        XCTAssertEqual(HalfFloat.toFloat(0x0400), 0x1p-14)                    // smallest normal
        XCTAssertEqual(HalfFloat.toFloat(0x3C00), 1)
        XCTAssertEqual(HalfFloat.toFloat(0x3800), 0.5)
        XCTAssertEqual(HalfFloat.toFloat(0xBC00), -1)
        XCTAssertEqual(HalfFloat.toFloat(0x3C01), 1 + 0x1p-10)
        XCTAssertEqual(HalfFloat.toFloat(0x7BFF), 65504)
        XCTAssertEqual(HalfFloat.toFloat(0x7C00), .infinity)
        XCTAssertEqual(HalfFloat.toFloat(0xFC00), -.infinity)
        XCTAssertTrue(HalfFloat.toFloat(0x7E00).isNaN)
        XCTAssertTrue(HalfFloat.toFloat(0x7C01).isNaN)
        XCTAssertTrue(HalfFloat.toFloat(0xFE00).isNaN)
        XCTAssertEqual(HalfFloat.toFloat(0xFE00).sign, .minus)
    }

    func testFloatToHalfRounding() {
        XCTAssertEqual(HalfFloat.fromFloat(0), 0x0000)
        XCTAssertEqual(HalfFloat.fromFloat(-0.0), 0x8000)
        XCTAssertEqual(HalfFloat.fromFloat(1), 0x3C00)
        XCTAssertEqual(HalfFloat.fromFloat(-2), 0xC000)
        XCTAssertEqual(HalfFloat.fromFloat(0.5), 0x3800)
        XCTAssertEqual(HalfFloat.fromFloat(65504), 0x7BFF)
        // Ties between neighbours 2^-10 apart go to the even mantissa.
        XCTAssertEqual(HalfFloat.fromFloat(1 + 0x1p-11), 0x3C00)              // between 0x3C00 and 0x3C01
        XCTAssertEqual(HalfFloat.fromFloat(1 + 3 * 0x1p-11), 0x3C02)          // between 0x3C01 and 0x3C02
        XCTAssertEqual(HalfFloat.fromFloat(1 + 0x1p-11 + 0x1p-20), 0x3C01)    // just above a tie
        XCTAssertEqual(HalfFloat.fromFloat(1 + 0x1p-11 - 0x1p-20), 0x3C00)    // just below a tie
        XCTAssertEqual(HalfFloat.fromFloat(2049), 0x6800)                      // 2048 | 2050 → 2048
        XCTAssertEqual(HalfFloat.fromFloat(2051), 0x6802)                      // 2050 | 2052 → 2052
        XCTAssertEqual(HalfFloat.fromFloat(-2051), 0xE802)
        // Overflow: 65520 is the tie between 65504 (odd mantissa) and 65536 → infinity.
        XCTAssertEqual(HalfFloat.fromFloat(65519), 0x7BFF)
        XCTAssertEqual(HalfFloat.fromFloat(65520), 0x7C00)
        XCTAssertEqual(HalfFloat.fromFloat(1e6), 0x7C00)
        XCTAssertEqual(HalfFloat.fromFloat(-1e6), 0xFC00)
        XCTAssertEqual(HalfFloat.fromFloat(.infinity), 0x7C00)
        XCTAssertEqual(HalfFloat.fromFloat(-.infinity), 0xFC00)
        XCTAssertEqual(HalfFloat.fromFloat(.greatestFiniteMagnitude), 0x7C00)
        let nan = HalfFloat.fromFloat(.nan)
        XCTAssertEqual(nan & 0x7C00, 0x7C00)
        XCTAssertNotEqual(nan & 0x03FF, 0)
        XCTAssertTrue(HalfFloat.toFloat(HalfFloat.fromFloat(-.nan)).isNaN)
        // Subnormals (unit 2^-24), ties to even.
        XCTAssertEqual(HalfFloat.fromFloat(0x1p-24), 0x0001)
        XCTAssertEqual(HalfFloat.fromFloat(0x1p-25), 0x0000)                   // tie 0 | 1 → 0
        XCTAssertEqual(HalfFloat.fromFloat(0x1p-25 + 0x1p-40), 0x0001)         // just above the tie
        XCTAssertEqual(HalfFloat.fromFloat(-0x1p-25), 0x8000)
        XCTAssertEqual(HalfFloat.fromFloat(0x1p-26), 0x0000)
        XCTAssertEqual(HalfFloat.fromFloat(.leastNonzeroMagnitude), 0x0000)
        XCTAssertEqual(HalfFloat.fromFloat(1.5 * 0x1p-24), 0x0002)             // tie 1 | 2 → 2
        XCTAssertEqual(HalfFloat.fromFloat(2.5 * 0x1p-24), 0x0002)             // tie 2 | 3 → 2
        XCTAssertEqual(HalfFloat.fromFloat(3 * 0x1p-24), 0x0003)
        XCTAssertEqual(HalfFloat.fromFloat(1023.5 * 0x1p-24), 0x0400)          // tie 0x3FF | 0x400 → 0x400
        XCTAssertEqual(HalfFloat.fromFloat(1022.5 * 0x1p-24), 0x03FE)          // tie 0x3FE | 0x3FF → 0x3FE
        XCTAssertEqual(HalfFloat.fromFloat(0x1p-14), 0x0400)
    }

    func testHalfRoundTripsEveryPattern() {
        for bits in 0...0xFFFF {
            let h = UInt16(bits)
            let f = HalfFloat.toFloat(h)
            if f.isNaN {
                XCTAssertEqual(h & 0x7C00, 0x7C00)
                XCTAssertNotEqual(h & 0x03FF, 0)
                continue
            }
            if HalfFloat.fromFloat(f) != h { XCTFail("0x\(String(h, radix: 16)) does not round-trip"); return }
            if HalfFloat.table[bits].bitPattern != f.bitPattern { XCTFail("table differs at \(bits)"); return }
        }
    }

    #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
    /// Against the platform's own binary16 (independent implementation), where it exists.
    func testHalfAgreesWithPlatformFloat16() {
        for bits in 0...0xFFFF {
            let h = UInt16(bits)
            let ours = HalfFloat.toFloat(h), theirs = Float(Float16(bitPattern: h))
            if ours.isNaN != theirs.isNaN || (!ours.isNaN && ours.bitPattern != theirs.bitPattern) {
                XCTFail("toFloat(0x\(String(h, radix: 16))): \(ours) vs \(theirs)"); return
            }
        }
        var rng = SplitMix(seed: 42)
        for i in 0..<200_000 {
            // Random bit patterns concentrated on the half range (exponents 100…150).
            let bits = UInt32(truncatingIfNeeded: rng.next())
            let exp = 100 + UInt32(i % 51)
            let x = Float(bitPattern: (bits & 0x807F_FFFF) | (exp << 23))
            let ours = HalfFloat.fromFloat(x), theirs = Float16(x).bitPattern
            if ours != theirs { XCTFail("fromFloat(\(x)): 0x\(String(ours, radix: 16)) vs 0x\(String(theirs, radix: 16))"); return }
        }
    }
    #endif

    func testBFloat16() {
        XCTAssertEqual(BFloat16.toFloat(0x3F80), 1)
        XCTAssertEqual(BFloat16.toFloat(0xC049), -3.140625)
        XCTAssertEqual(BFloat16.toFloat(0x0000).bitPattern, 0)
        XCTAssertEqual(BFloat16.toFloat(0x8000).bitPattern, 0x8000_0000)
        XCTAssertEqual(BFloat16.toFloat(0x0001), 0x1p-133)                     // subnormal
        XCTAssertEqual(BFloat16.toFloat(0x7F80), .infinity)
        XCTAssertEqual(BFloat16.toFloat(0xFF80), -.infinity)
        XCTAssertTrue(BFloat16.toFloat(0x7FC0).isNaN)
        XCTAssertEqual(BFloat16.fromFloat(1), 0x3F80)
        XCTAssertEqual(BFloat16.fromFloat(-3.140625), 0xC049)
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x3F80_8000)), 0x3F80)   // tie → even 0x3F80
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x3F81_8000)), 0x3F82)   // tie → even 0x3F82
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x3F80_8001)), 0x3F81)   // above tie
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x3F80_7FFF)), 0x3F80)   // below tie
        XCTAssertEqual(BFloat16.fromFloat(.infinity), 0x7F80)
        XCTAssertEqual(BFloat16.fromFloat(.greatestFiniteMagnitude), 0x7F80)         // rounds up to inf
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x7FC0_0000)), 0x7FC0)   // quiet NaN
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0x7F80_0001)), 0x7FC0)   // signalling NaN → quiet, not inf
        XCTAssertEqual(BFloat16.fromFloat(Float(bitPattern: 0xFFFF_FFFF)), 0xFFFF)   // NaN keeps sign
    }

    // MARK: quantization

    func testQuantizeFloatTypes() throws {
        XCTAssertEqual(try Quantize.bytes(.f32, [1.5, -2]), le32(0x3FC0_0000) + le32(0xC000_0000))
        XCTAssertEqual(try Quantize.bytes(.f16, [1, -2, 0.5, 65520]), le16(0x3C00) + le16(0xC000) + le16(0x3800) + le16(0x7C00))
        XCTAssertEqual(try Quantize.bytes(.bf16, [1, -3.140625]), le16(0x3F80) + le16(0xC049))
    }

    func testQuantizeQ8_0() throws {
        // amax 63.5 → d = 63.5/127 = 0.5, q = round(2x) half away from zero.
        var x = [Float](repeating: 0, count: 32)
        x[0] = 63.5; x[1] = -1.25; x[2] = 0.75; x[3] = 0.2; x[4] = -0.2; x[31] = -63.5
        var expected = le16(0x3800) + [127, 0xFD, 2, 0, 0]        // 127, −3 (−2.5 rounds away), 2 (1.5), 0, 0
        expected += [UInt8](repeating: 0, count: 26) + [0x81]   // −127
        XCTAssertEqual(try Quantize.bytes(.q8_0, x), expected)
        XCTAssertEqual(try Quantize.bytes(.q8_0, [Float](repeating: 0, count: 32)), [UInt8](repeating: 0, count: 34))
    }

    func testQuantizeQ4_0() throws {
        // Largest magnitude −4 → d = −4/−8 = 0.5, q = min(15, trunc(2x + 8.5)).
        var x = [Float](repeating: 0, count: 32)
        x[0] = -4; x[16] = 3.5          // q 0 and 15 → qs[0] = 0xF0
        x[1] = 0.25; x[17] = 0.2        // trunc(9.0) = 9, trunc(8.9) = 8 → qs[1] = 0x89
        let expected = le16(0x3800) + [0xF0, 0x89] + [UInt8](repeating: 0x88, count: 14)   // zeros → trunc(8.5) = 8
        XCTAssertEqual(try Quantize.bytes(.q4_0, x), expected)
    }

    func testQuantizeQ4_1ReproducesHandBlock() throws {
        // The hand block of testQ4_1 (d 0.5, m −1, ramp nibbles) holds q 0 and 15, so min = −1,
        // max = 6.5, d = 7.5/15 = 0.5: quantizing its values must give the same bytes back.
        let block = le16(0x3800) + le16(0xBC00) + rampNibbles
        let low: [Float] = (0..<16).map { (j: Int) -> Float in -1 + 0.5 * Float(j) }
        let high: [Float] = (0..<16).map { (j: Int) -> Float in -1 + 0.5 * Float(15 - j) }
        let values = low + high
        XCTAssertEqual(try Quantize.bytes(.q4_1, values), block)
    }

    func testQuantizeRoundTripError() throws {
        var rng = SplitMix(seed: 7)
        let x = (0..<4096).map { _ in Float(Double(rng.next() % 2_000_001) / 1_000_000 - 1) }  // [−1, 1]
        for (type, tol) in [(GGMLType.f16, Float(1e-3)), (.bf16, 4e-3), (.q8_0, 5e-3), (.q4_0, 0.13), (.q4_1, 0.075)] {
            let y = try Dequantize.floats(type, try Quantize.bytes(type, x), count: x.count)
            let err = zip(x, y).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(err, tol, type.name)
        }
    }

    func testQuantizeErrors() {
        XCTAssertThrowsError(try Quantize.bytes(.q4_K, [Float](repeating: 0, count: 256), tensor: "w")) { e in
            XCTAssertEqual(e as? GGUFError, .unsupportedQuantization(path: "", type: GGMLType.q4_K.rawValue, tensor: "w"))
        }
        XCTAssertThrowsError(try Quantize.bytes(.q8_0, [Float](repeating: 0, count: 33), tensor: "w")) { e in
            XCTAssertEqual(e as? GGUFError, .wrongElementCount(tensor: "w", expected: 64, found: 33))
        }
    }

    // MARK: real model

    static var modelPath: String {
        // Tests/GGUFTests/DequantizeTests.swift → package root
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent("weights/SmolLM2-135M-Instruct.Q4_1.gguf").path
    }

    /// Values obtained independently with python's `gguf` package:
    /// `gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1)` on the same file.
    func testRealModelMatchesGGUFPy() throws {
        let p = Self.modelPath
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("default model not fetched (\(p))") }
        let f = try GGUFFile(path: p)
        XCTAssertEqual(f.tensor("blk.0.attn_q.weight")?.type, .q4_1)
        XCTAssertEqual(f.tensor("token_embd.weight")?.type, .q8_0)
        let q = try f.floats("blk.0.attn_q.weight")
        XCTAssertEqual(q.count, 331_776)
        let qRef: [(Int, Float)] = [(0, -0.0963134765625), (1, 0.1573486328125), (17, 0.2841796875),
                                    (31, -0.0963134765625), (32, -0.34619140625), (1000, -0.138427734375),
                                    (123_457, 0.0299072265625), (331_775, -0.255859375)]
        for (i, v) in qRef { XCTAssertEqual(q[i], v, accuracy: 1e-6, "attn_q[\(i)]") }
        let e = try f.floats("token_embd.weight")
        XCTAssertEqual(e.count, 28_311_552)
        let eRef: [(Int, Float)] = [(0, -0.10654449462890625), (1, 0.032978057861328125), (17, 0.08371353149414062),
                                    (31, -0.20040512084960938), (32, -0.09348678588867188),
                                    (1000, 0.007411956787109375), (123_457, -0.00872039794921875),
                                    (28_311_551, -0.0417022705078125)]
        for (i, v) in eRef { XCTAssertEqual(e[i], v, accuracy: 1e-6, "token_embd[\(i)]") }
    }

    /// Prints how long dequantizing the whole default model takes (no assertion; run with `-c release`).
    func testTimeWholeModelDequant() throws {
        let p = Self.modelPath
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("default model not fetched (\(p))") }
        let f = try GGUFFile(path: p)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var elements = 0
        for t in f.tensors { elements += try f.floats(t.name).count }
        let s = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        print(String(format: "dequantized %d tensors, %d elements in %.3f s", f.tensors.count, elements, s))
    }
}

/// Deterministic 64-bit generator for test data.
private struct SplitMix {
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
