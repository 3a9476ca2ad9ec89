/// IEEE 754 binary16 ("half", ggml's `ggml_fp16_t`) ⇄ float32 by bit manipulation.
///
/// Independent of the platform's `Float16` (which is missing on macOS/x86_64): the format is
/// 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits. Zero, subnormals, infinities and NaN
/// are all handled.
public enum HalfFloat {
    /// The float32 value of the half with bit pattern `bits` (exact: every half is a float).
    /// NaNs keep their sign and payload (shifted into the float's mantissa).
    @inlinable
    public static func toFloat(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exp = UInt32(bits >> 10) & 0x1F
        var mant = UInt32(bits & 0x03FF)
        if exp == 0x1F {                                   // inf / NaN
            return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        }
        if exp != 0 {                                      // normal: rebias 15 → 127
            return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
        }
        if mant == 0 { return Float(bitPattern: sign) }    // ±0
        // Subnormal: value = mant · 2^-24. Normalize so the leading 1 lands on bit 10.
        var e: UInt32 = 113                                // biased float exponent of 2^-14
        while mant & 0x0400 == 0 { mant <<= 1; e -= 1 }
        return Float(bitPattern: sign | (e << 23) | ((mant & 0x03FF) << 13))
    }

    /// The half nearest to `x` (round to nearest, ties to even), as its bit pattern.
    /// Overflow gives ±infinity, underflow ±0 or a subnormal; NaN becomes a quiet NaN
    /// (sign and the top of the payload kept).
    @inlinable
    public static func fromFloat(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        let sign = UInt16(truncatingIfNeeded: (b >> 16) & 0x8000)
        let fexp = Int((b >> 23) & 0xFF)
        let fmant = b & 0x007F_FFFF
        if fexp == 0xFF {
            if fmant == 0 { return sign | 0x7C00 }
            return sign | 0x7E00 | UInt16(truncatingIfNeeded: fmant >> 13)
        }
        let e = fexp - 127 + 15                            // half's biased exponent
        if e >= 31 { return sign | 0x7C00 }
        if e >= 1 {
            // Normal: keep 10 of the 23 mantissa bits; a carry out of the mantissa correctly
            // bumps the exponent (up to infinity).
            var h = UInt32(e) << 10 | (fmant >> 13)
            let rest = fmant & 0x1FFF
            if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) { h += 1 }
            return sign | UInt16(truncatingIfNeeded: h)
        }
        // Subnormal half (or zero). |x| < 2^-25 always rounds to zero (2^-25 itself is a tie → 0).
        if e < -10 { return sign }
        let m = fmant | 0x0080_0000                        // explicit leading 1 (fexp ≥ 102 here)
        let shift = UInt32(14 - e)                         // 14…24
        var h = m >> shift
        let rest = m & ((1 << shift) - 1)
        let half = UInt32(1) << (shift - 1)
        if rest > half || (rest == half && h & 1 == 1) { h += 1 }   // may reach 0x400 = min normal
        return sign | UInt16(truncatingIfNeeded: h)
    }

    /// All 65536 halves as floats, for table-driven conversion in the dequantization loops.
    static let table: [Float] = (0...0xFFFF).map { toFloat(UInt16($0)) }
}

/// bfloat16 (the top 16 bits of a float32) ⇄ float32.
public enum BFloat16 {
    /// The float32 value of the bfloat16 with bit pattern `bits` (exact).
    @inlinable
    public static func toFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// The bfloat16 nearest to `x` (round to nearest, ties to even), as ggml's
    /// `ggml_compute_fp32_to_bf16` does; NaN becomes a quiet NaN with the same sign.
    /// Values rounding past the largest finite bfloat16 become ±infinity.
    @inlinable
    public static func fromFloat(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if b & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: b >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }
}
