/// HDF5's byte-shuffle transform (filter id 2), done in Swift so it can run on worker threads.
///
/// A shuffled chunk of `stride` elements of `elementSize` bytes stores byte `j` of element `i` at
/// position `j * stride + i`, i.e. all first bytes, then all second bytes, and so on.
enum ByteShuffle {
    /// Shuffles `count` elements from `src` into `dst` (a chunk of `stride` elements);
    /// positions for elements `count..<stride` are zero-filled.
    static func shuffle(_ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer,
                        count: Int, stride: Int, elementSize: Int) {
        let s = src.assumingMemoryBound(to: UInt8.self)
        let d = dst.assumingMemoryBound(to: UInt8.self)
        switch elementSize {
        case 4:
            let w = src.assumingMemoryBound(to: UInt32.self)
            let (d0, d1, d2, d3) = (d, d + stride, d + 2 * stride, d + 3 * stride)
            var i = 0
            while i < count {
                let v = UInt32(littleEndian: w[i])
                d0[i] = UInt8(truncatingIfNeeded: v)
                d1[i] = UInt8(truncatingIfNeeded: v &>> 8)
                d2[i] = UInt8(truncatingIfNeeded: v &>> 16)
                d3[i] = UInt8(truncatingIfNeeded: v &>> 24)
                i &+= 1
            }
        default:
            for j in 0..<elementSize {
                let plane = d + j * stride
                var i = 0
                while i < count {
                    plane[i] = s[i &* elementSize &+ j]
                    i &+= 1
                }
            }
        }
        if count < stride {
            for j in 0..<elementSize {
                (d + j * stride + count).initialize(repeating: 0, count: stride - count)
            }
        }
    }

    /// Inverse of `shuffle`: writes the first `count` elements of a shuffled chunk of `stride`
    /// elements from `src` into `dst`.
    static func unshuffle(_ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer,
                          count: Int, stride: Int, elementSize: Int) {
        let s = src.assumingMemoryBound(to: UInt8.self)
        switch elementSize {
        case 4:
            let w = dst.assumingMemoryBound(to: UInt32.self)
            let (s0, s1, s2, s3) = (s, s + stride, s + 2 * stride, s + 3 * stride)
            var i = 0
            while i < count {
                let v = UInt32(s0[i]) | UInt32(s1[i]) &<< 8 | UInt32(s2[i]) &<< 16 | UInt32(s3[i]) &<< 24
                w[i] = UInt32(littleEndian: v)
                i &+= 1
            }
        case 8:
            let w = dst.assumingMemoryBound(to: UInt64.self)
            var i = 0
            while i < count {
                var v: UInt64 = 0
                for j in 0..<8 { v |= UInt64(s[j &* stride &+ i]) &<< UInt64(8 &* j) }
                w[i] = UInt64(littleEndian: v)
                i &+= 1
            }
        default:
            let d = dst.assumingMemoryBound(to: UInt8.self)
            for j in 0..<elementSize {
                let plane = s + j * stride
                var i = 0
                while i < count {
                    d[i &* elementSize &+ j] = plane[i]
                    i &+= 1
                }
            }
        }
    }
}
