import Foundation

/// One prompt's answer in image mode: `count` masks in model order (decoder `tokens`), logits
/// (count, height, width) at photo size, predicted-IoU `scores`, and low-res logits
/// (count, lr, lr) clamped to ±32 (feed one back as mask input to refine).
public struct ImageResult: Sendable {
    public let tokens: [Int]
    public let scores: [Float]
    public let logits: [Float]
    public let lowRes: [Float]
    public let width: Int
    public let height: Int
    public let objectScore: Float

    public var count: Int { tokens.count }

    /// Index of the highest score (first on ties): the candidate a UI pre-selects.
    public var best: Int {
        var b = 0
        for k in scores.indices.dropFirst() where scores[k] > scores[b] { b = k }
        return b
    }

    /// Mask k as booleans (logit > 0), row-major height x width.
    public func mask(_ k: Int) -> [Bool] {
        let n = width * height
        return (0..<n).map { logits[k * n + $0] > 0 }
    }
}

/// Image-mode decisions, exactly as etam_mobile/runtime/image_mode.py.
public enum ImageMode {
    public static let multimaskTokens = [1, 2, 3]

    /// multimask: tokens 1, 2, 3 in model order (not sorted by score). Otherwise one mask:
    /// token 0 if its stability is >= the threshold, else the best of tokens 1..3.
    public static func chooseTokens(iou: [Float], stability: Double, multimask: Bool, cfg: TrackerConfig) -> [Int] {
        if multimask { return multimaskTokens }
        return [stability >= cfg.stabilityThresh ? 0 : Decisions.bestMultimask(iou)]
    }

    /// Stability from the two pixel counts a trace records (area > +delta, area > -delta).
    public static func stabilityFromCounts(_ inter: Int, _ union: Int) -> Double {
        return union > 0 ? Double(inter) / Double(union) : 1.0
    }

    /// PyTorch's antialiased bilinear weights: a triangle filter widened by the downscale factor.
    /// Per output pixel: first input index, tap count, and `maxTaps` normalised weights.
    static func taps(inSize: Int, outSize: Int) -> (start: [Int], count: [Int], weights: [Float], maxTaps: Int) {
        let scale = Float(inSize) / Float(outSize)
        let support: Float = scale >= 1 ? scale : 1
        let invScale: Float = scale >= 1 ? 1 / scale : 1
        let maxTaps = Int(support.rounded(.up)) * 2 + 1
        var start = [Int](repeating: 0, count: outSize), count = [Int](repeating: 0, count: outSize)
        var w = [Float](repeating: 0, count: outSize * maxTaps)
        for i in 0..<outSize {
            let center = scale * (Float(i) + 0.5)
            let lo = max(Int(center - support + 0.5), 0)
            let n = min(Int(center + support + 0.5), inSize) - lo
            var total: Float = 0
            for j in 0..<n {
                let x = abs((Float(j + lo) - center + 0.5) * invScale)
                let v: Float = x < 1 ? 1 - x : 0
                w[i * maxTaps + j] = v
                total += v
            }
            if total != 0 { for j in 0..<n { w[i * maxTaps + j] /= total } }
            start[i] = lo
            count[i] = n
        }
        return (start, count, w, maxTaps)
    }

    /// Upstream's image-predictor preprocessing (not the video path): packed RGB bytes -> x / 255
    /// in Float -> separable antialiased bilinear resize to size x size -> (x - mean) / std, planar.
    public static func modelInput(_ rgb: [UInt8], width: Int, height: Int, size: Int, mean: [Float], std: [Float]) -> [Float] {
        let tx = taps(inSize: width, outSize: size), ty = taps(inSize: height, outSize: size)
        var out = [Float](repeating: 0, count: 3 * size * size)
        var row = [Float](repeating: 0, count: height * size)
        for ch in 0..<3 {
            for y in 0..<height {
                for x in 0..<size {
                    var acc: Float = 0
                    for j in 0..<tx.count[x] { acc += tx.weights[x * tx.maxTaps + j] * (Float(rgb[3 * (y * width + tx.start[x] + j) + ch]) / 255) }
                    row[y * size + x] = acc
                }
            }
            let plane = ch * size * size
            for y in 0..<size {
                for x in 0..<size {
                    var acc: Float = 0
                    for j in 0..<ty.count[y] { acc += ty.weights[y * ty.maxTaps + j] * row[(ty.start[y] + j) * size + x] }
                    out[plane + y * size + x] = (acc - mean[ch]) / std[ch]
                }
            }
        }
        return out
    }

    /// The same, with the manifest's image size and normalisation.
    public static func modelInput(_ rgb: [UInt8], width: Int, height: Int, manifest: Manifest) -> [Float] {
        return modelInput(rgb, width: width, height: height, size: manifest.imageSize, mean: manifest.mean, std: manifest.std)
    }
}

/// Encode a photo once, answer many prompts (what the photo screen does while the user taps).
///
/// No image-mode graph: upstream's image predictor adds `no_mem_embed` to the encoder features,
/// and the memory-attention graph returns exactly `feats + no_mem_embed` when no slot is valid,
/// so it runs once per session on zero features to read that vector out. Per photo: one encoder
/// call and a vector add; per tap: one decoder call and a bilinear resize.
public final class ImageSession {
    public let runner: StageRunner
    public let cfg: TrackerConfig
    public private(set) var width = 0
    public private(set) var height = 0
    private var noMem: [Float]?
    private var feats: [Float]?
    private let lr2: Int
    private let hw: Int

    public init(runner: StageRunner, cfg: TrackerConfig) {
        self.runner = runner
        self.cfg = cfg
        lr2 = cfg.lowResSize * cfg.lowResSize
        hw = cfg.featSize * cfg.featSize
    }

    public var hasImage: Bool { feats != nil }

    /// (C,) read out of the memory-attention graph's empty-bank branch, once.
    public func noMemEmbed() throws -> [Float] {
        if let e = noMem { return e }
        let c = cfg.dModel
        let out = try runner.memoryAttention(
            feats: [Float](repeating: 0, count: c * hw),
            memFeats: [Float](repeating: 0, count: cfg.memorySlots * cfg.memDim * hw),
            memTpos: [Int32](repeating: 0, count: cfg.memorySlots),
            memValid: [Float](repeating: 0, count: cfg.memorySlots),
            objPtrs: [Float](repeating: 0, count: cfg.ptrSlots * c),
            ptrValid: [Float](repeating: 0, count: cfg.ptrSlots))
        let e = (0..<c).map { out[$0 * hw] }
        noMem = e
        return e
    }

    /// `modelInput` (1,3,S,S) from Preprocess of a width x height photo.
    public func setImage(modelInput: [Float], width: Int, height: Int) throws {
        var f = try runner.imageEncoder(modelInput)
        let e = try noMemEmbed()
        for ch in e.indices {
            let base = ch * hw
            for i in 0..<hw { f[base + i] += e[ch] }
        }
        feats = f
        self.width = width
        self.height = height
    }

    /// Clicks (photo pixels) and/or a box; three candidates with `multimask`, else one.
    public func predict(_ prompt: Prompt, multimask: Bool, maskInput: [Float]? = nil) throws -> ImageResult {
        guard let f = feats else { throw EtamError.prompt("pick a photo first") }
        try Prompts.validate(frame: 0, prompt: prompt, numFrames: 1, width: width, height: height)
        let t = try Prompts.build(prompt, videoWidth: width, videoHeight: height, imageSize: cfg.imageSize, capacity: cfg.points)
        let out = try runner.maskDecoder(condFeats: f, points: t.points, labels: t.labels,
                                         maskInput: maskInput ?? [Float](repeating: 0, count: lr2),
                                         hasMaskInput: maskInput == nil ? 0 : 1)
        let stability = multimask ? 1.0 : Decisions.stabilityScore(out.masks, offset: 0, count: lr2, delta: cfg.stabilityDelta)
        let tokens = ImageMode.chooseTokens(iou: out.iou, stability: stability, multimask: multimask, cfg: cfg)
        var low = [Float]()
        low.reserveCapacity(tokens.count * lr2)
        for tok in tokens { low += out.masks[(tok * lr2)..<((tok + 1) * lr2)] }
        let logits = PostProcess.upsampleBilinear(low, planes: tokens.count, inH: cfg.lowResSize, inW: cfg.lowResSize, outH: height, outW: width)
        return ImageResult(tokens: tokens, scores: tokens.map { out.iou[$0] }, logits: logits,
                           lowRes: low.map { min(max($0, -32), 32) }, width: width, height: height, objectScore: out.objScore)
    }
}
