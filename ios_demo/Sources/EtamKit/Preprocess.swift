import Foundation

/// Frame preprocessing, bit-for-bit like the Python runtime: Pillow's bicubic resize to
/// image_size x image_size (8-bit fixed point, horizontal pass first), then
/// `(uint8 / 255.0 -> Float - mean) / std`, laid out NCHW.
public enum Preprocess {
    private static let precisionBits = 32 - 8 - 2

    private static func bicubic(_ x0: Double) -> Double {
        let a = -0.5
        let x = x0 < 0 ? -x0 : x0
        if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
        if x < 2.0 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0.0
    }

    private struct Coeffs {
        let ksize: Int
        let bounds: [Int]
        let kk: [Int32]
    }

    private static func coeffs(_ inSize: Int, _ outSize: Int) -> Coeffs {
        let scale = Double(inSize) / Double(outSize)
        let filterscale = scale < 1.0 ? 1.0 : scale
        let support = 2.0 * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var kd = [Double](repeating: 0, count: outSize * ksize)
        var bounds = [Int](repeating: 0, count: outSize * 2)
        let ss = 1.0 / filterscale
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            var ww = 0.0
            var xmin = Int(center - support + 0.5)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            for x in 0..<xmax {
                let w = bicubic((Double(x + xmin) - center + 0.5) * ss)
                kd[xx * ksize + x] = w
                ww += w
            }
            if ww != 0.0 {
                for x in 0..<xmax { kd[xx * ksize + x] /= ww }
            }
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = xmax
        }
        let one = Double(1 << precisionBits)
        let kk = kd.map { v -> Int32 in v < 0 ? Int32(-0.5 + v * one) : Int32(0.5 + v * one) }
        return Coeffs(ksize: ksize, bounds: bounds, kk: kk)
    }

    @inline(__always) private static func clip8(_ v: Int32) -> UInt8 {
        if v >= Int32((1 << precisionBits) << 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(v >> Int32(precisionBits))
    }

    /// Pillow `Image.resize((outW, outH))` (bicubic) of packed RGB bytes (3 per pixel, row-major).
    public static func resizeBicubic(_ rgb: [UInt8], width: Int, height: Int, outW: Int, outH: Int) -> [UInt8] {
        precondition(rgb.count == width * height * 3, "rgb has \(rgb.count) bytes, expected \(width * height * 3)")
        let half = Int32(1 << (precisionBits - 1))
        var src = rgb
        var w = width
        if outW != width {
            let c = coeffs(width, outW)
            var tmp = [UInt8](repeating: 0, count: outW * height * 3)
            for y in 0..<height {
                let row = y * width * 3
                for xx in 0..<outW {
                    let xmin = c.bounds[2 * xx], xmax = c.bounds[2 * xx + 1], k = xx * c.ksize
                    var s0 = half, s1 = half, s2 = half
                    for x in 0..<xmax {
                        let p = row + (x + xmin) * 3
                        let kv = c.kk[k + x]
                        s0 = s0 &+ Int32(src[p]) &* kv
                        s1 = s1 &+ Int32(src[p + 1]) &* kv
                        s2 = s2 &+ Int32(src[p + 2]) &* kv
                    }
                    let o = (y * outW + xx) * 3
                    tmp[o] = clip8(s0)
                    tmp[o + 1] = clip8(s1)
                    tmp[o + 2] = clip8(s2)
                }
            }
            src = tmp
            w = outW
        }
        if outH == height { return src }
        let c = coeffs(height, outH)
        var out = [UInt8](repeating: 0, count: w * outH * 3)
        for yy in 0..<outH {
            let ymin = c.bounds[2 * yy], ymax = c.bounds[2 * yy + 1], k = yy * c.ksize
            for xx in 0..<w {
                var s0 = half, s1 = half, s2 = half
                for y in 0..<ymax {
                    let p = ((y + ymin) * w + xx) * 3
                    let kv = c.kk[k + y]
                    s0 = s0 &+ Int32(src[p]) &* kv
                    s1 = s1 &+ Int32(src[p + 1]) &* kv
                    s2 = s2 &+ Int32(src[p + 2]) &* kv
                }
                let o = (yy * w + xx) * 3
                out[o] = clip8(s0)
                out[o + 1] = clip8(s1)
                out[o + 2] = clip8(s2)
            }
        }
        return out
    }

    /// size x size packed RGB -> (1, 3, size, size) Float, written into `out` (a reused buffer).
    public static func normalize(_ rgb: [UInt8], size: Int, mean: [Float], std: [Float], scale: Double = 1.0 / 255.0, into out: inout [Float]) {
        let n = size * size
        precondition(rgb.count == n * 3 && out.count == 3 * n, "normalize: wrong buffer sizes")
        // Python divides by 255.0 in float64; 1/scale recovers that divisor exactly.
        let inv = 1.0 / scale
        let divisor = abs(inv - inv.rounded()) < 1e-6 ? inv.rounded() : inv
        for ch in 0..<3 {
            let m = mean[ch], s = std[ch], base = ch * n
            for i in 0..<n {
                let x = Float(Double(rgb[i * 3 + ch]) / divisor)
                out[base + i] = (x - m) / s
            }
        }
    }

    public static func normalize(_ rgb: [UInt8], size: Int, mean: [Float], std: [Float], scale: Double = 1.0 / 255.0) -> [Float] {
        var out = [Float](repeating: 0, count: 3 * size * size)
        normalize(rgb, size: size, mean: mean, std: std, scale: scale, into: &out)
        return out
    }

    /// Any RGB frame -> model input, as the manifest describes (resize, then normalize).
    public static func modelInput(_ rgb: [UInt8], width: Int, height: Int, manifest: Manifest, into out: inout [Float]) {
        let s = manifest.imageSize
        let resized = (width == s && height == s) ? rgb : resizeBicubic(rgb, width: width, height: height, outW: s, outH: s)
        normalize(resized, size: s, mean: manifest.mean, std: manifest.std, scale: manifest.scale, into: &out)
    }
}
