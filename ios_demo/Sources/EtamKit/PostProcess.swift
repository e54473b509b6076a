import Foundation

/// Low-res mask logits -> frame-size masks, like etam_mobile/runtime/outputs.py.
public enum PostProcess {
    /// Bilinear resize with align_corners=false (PyTorch F.interpolate), Float.
    public static func upsampleBilinear(_ src: [Float], planes: Int, inH: Int, inW: Int, outH: Int, outW: Int) -> [Float] {
        var dst = [Float](repeating: 0, count: planes * outH * outW)
        let sh = Float(inH) / Float(outH), sw = Float(inW) / Float(outW)
        var x0 = [Int](repeating: 0, count: outW), x1 = x0
        var lx = [Float](repeating: 0, count: outW)
        for x in 0..<outW {
            let r = max(sw * (Float(x) + 0.5) - 0.5, 0)
            let i = Int(r)
            x0[x] = i
            x1[x] = i < inW - 1 ? i + 1 : i
            lx[x] = r - Float(i)
        }
        for p in 0..<planes {
            let base = p * inH * inW, obase = p * outH * outW
            for y in 0..<outH {
                let r = max(sh * (Float(y) + 0.5) - 0.5, 0)
                let y0 = Int(r)
                let y1 = y0 < inH - 1 ? y0 + 1 : y0
                let ly = r - Float(y0), hy = 1 - ly
                let row0 = base + y0 * inW, row1 = base + y1 * inW
                for x in 0..<outW {
                    let wx = lx[x], hx = 1 - wx
                    let top = hx * src[row0 + x0[x]] + wx * src[row0 + x1[x]]
                    let bottom = hx * src[row1 + x0[x]] + wx * src[row1 + x1[x]]
                    dst[obase + y * outW + x] = hy * top + ly * bottom
                }
            }
        }
        return dst
    }

    /// (objects, H, W) logits -> (H, W) object ids; the highest logit wins, 0 = background.
    public static func labelMap(_ logits: [Float], objIds: [Int], height: Int, width: Int) -> [Int] {
        let n = height * width
        var out = [Int](repeating: 0, count: n)
        guard !objIds.isEmpty else { return out }
        for i in 0..<n {
            var best = 0
            var bestV = -Float.infinity
            for o in 0..<objIds.count where logits[o * n + i] > bestV {
                bestV = logits[o * n + i]
                best = o
            }
            out[i] = bestV > 0 ? objIds[best] : 0
        }
        return out
    }
}
