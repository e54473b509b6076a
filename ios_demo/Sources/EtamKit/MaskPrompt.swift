import Foundation

/// Mask prompts, upstream `add_new_mask` (etam_mobile/runtime/mask_prompt.py): the mask is the
/// frame's output (logits +-10, object score +10); the decoder runs on the raw image features with
/// `mask_downsample(mask)` as its mask input only to get the object pointer (token 0).
/// The constants come from manifest.json's `mask_prompt` section.
public struct MaskPromptConstants: Sendable {
    public let downsampleWeight: [Float]
    public let downsampleBias: Float
    public let stride: Int
    public let outputScale: Float
    public let outputBias: Float
    public let objectScore: Float

    /// `mask_prompt` of a manifest; nil when the export predates mask prompts.
    public init?(manifest root: JSONObject) throws {
        guard root.has("mask_prompt") else { return nil }
        let m = try root.obj("mask_prompt")
        var w: [Float] = []
        for row in try m.list("downsample_weight") {
            for v in row.arrayValue ?? [] {
                guard let d = v.numberValue else { throw EtamError.json("\(m.path).downsample_weight must hold numbers") }
                w.append(Float(d))
            }
        }
        stride = try m.int("downsample_stride")
        guard w.count == stride * stride else { throw EtamError.json("\(m.path).downsample_weight must be \(stride) x \(stride); re-export the folder") }
        downsampleWeight = w
        downsampleBias = Float(try m.double("downsample_bias"))
        outputScale = Float(try m.double("output_scale"))
        outputBias = Float(try m.double("output_bias"))
        objectScore = Float(try m.double("object_score"))
    }
}

public enum MaskPrompt {
    /// Separable antialiased bilinear resize of one float plane (PyTorch interpolate, antialias=True).
    public static func resize(_ src: [Float], width: Int, height: Int, outW: Int, outH: Int) -> [Float] {
        let tx = ImageMode.taps(inSize: width, outSize: outW), ty = ImageMode.taps(inSize: height, outSize: outH)
        var row = [Float](repeating: 0, count: height * outW)
        for y in 0..<height {
            for x in 0..<outW {
                var acc: Float = 0
                for j in 0..<tx.count[x] { acc += tx.weights[x * tx.maxTaps + j] * src[y * width + tx.start[x] + j] }
                row[y * outW + x] = acc
            }
        }
        var out = [Float](repeating: 0, count: outW * outH)
        for y in 0..<outH {
            for x in 0..<outW {
                var acc: Float = 0
                for j in 0..<ty.count[y] { acc += ty.weights[y * ty.maxTaps + j] * row[(ty.start[y] + j) * outW + x] }
                out[y * outW + x] = acc
            }
        }
        return out
    }

    /// (height x width) mask -> (S x S) 0/1: resized with antialias then >= 0.5, unless already S x S.
    public static func toInput(_ mask: [Bool], width: Int, height: Int, size: Int) -> [Float] {
        let m = mask.map { $0 ? Float(1) : Float(0) }
        if width == size && height == size { return m }
        return resize(m, width: width, height: height, outW: size, outH: size).map { $0 >= 0.5 ? 1 : 0 }
    }

    /// Upstream's mask_downsample: a stride-k k x k convolution, one channel.
    public static func downsample(_ m: [Float], size: Int, _ c: MaskPromptConstants) -> [Float] {
        let k = c.stride, s = size / k
        var out = [Float](repeating: 0, count: s * s)
        for i in 0..<s {
            for j in 0..<s {
                var acc: Float = 0
                for a in 0..<k { for b in 0..<k { acc += m[(i * k + a) * size + j * k + b] * c.downsampleWeight[a * k + b] } }
                out[i * s + j] = acc + c.downsampleBias
            }
        }
        return out
    }

    /// The frame's low-res output logits and the decoder's mask input.
    public static func prepare(_ mask: [Bool], width: Int, height: Int, cfg: TrackerConfig, _ c: MaskPromptConstants) throws -> (lowRes: [Float], decoderInput: [Float]) {
        guard mask.count == width * height else {
            throw EtamError.prompt("the mask has \(mask.count) pixels, the frame \(width)x\(height); give a mask of the frame's size")
        }
        let s = cfg.imageSize
        let m = toInput(mask, width: width, height: height, size: s)
        guard m.contains(where: { $0 > 0 }) else {
            throw EtamError.prompt("the mask covers too few pixels to survive resizing to the model's \(s)x\(s) input; give a larger mask or tap the object")
        }
        let logits = m.map { $0 * c.outputScale + c.outputBias }
        return (resize(logits, width: s, height: s, outW: cfg.lowResSize, outH: cfg.lowResSize), downsample(m, size: s, c))
    }
}
