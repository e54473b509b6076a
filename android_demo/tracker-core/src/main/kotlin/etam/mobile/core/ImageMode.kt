package etam.mobile.core

/**
 * One prompt's answer in image mode: `count` masks in model order (decoder tokens `tokens`),
 * logits (count, height, width) at photo size, predicted-IoU `scores`, low-res logits
 * (count, lr, lr) clamped to +-32 (feed one back as mask input to refine).
 */
class ImageResult(
    val tokens: IntArray, val scores: FloatArray, val logits: FloatArray, val lowRes: FloatArray,
    val width: Int, val height: Int, val objectScore: Float
) {
    val count: Int get() = tokens.size

    /** Index of the highest score (first on ties), the candidate to pre-select in a UI. */
    val best: Int get() {
        var b = 0
        for (k in 1 until scores.size) if (scores[k] > scores[b]) b = k
        return b
    }

    /** Mask k as booleans (logit > 0), row-major height x width. */
    fun mask(k: Int): BooleanArray {
        val n = width * height
        return BooleanArray(n) { logits[k * n + it] > 0f }
    }
}

/** Image-mode decisions, exactly as etam_mobile/runtime/image_mode.py. */
object ImageMode {
    val MULTIMASK_TOKENS = intArrayOf(1, 2, 3)

    /**
     * multimask: tokens 1, 2, 3 in model order (not sorted by score). Otherwise one mask:
     * token 0 if its stability is >= the threshold, else the best of tokens 1..3.
     */
    fun chooseTokens(iou: FloatArray, stability: Double, multimask: Boolean, cfg: TrackerConfig): IntArray {
        if (multimask) return MULTIMASK_TOKENS.copyOf()
        return intArrayOf(if (stability >= cfg.stabilityThresh) 0 else Decisions.bestMultimask(iou))
    }

    /** Stability from the two pixel counts a trace records (area > +delta, area > -delta). */
    fun stabilityFromCounts(inter: Int, union: Int): Double = if (union > 0) inter.toDouble() / union.toDouble() else 1.0

    /** Per output pixel: first input index, tap count, and `maxTaps` normalised weights. */
    internal class Taps(val start: IntArray, val count: IntArray, val weights: FloatArray, val maxTaps: Int)

    /** PyTorch's antialiased bilinear weights: a triangle filter widened by the downscale factor. */
    internal fun taps(inSize: Int, outSize: Int): Taps {
        val scale = inSize.toFloat() / outSize
        val support = if (scale >= 1f) scale else 1f
        val invScale = if (scale >= 1f) 1f / scale else 1f
        val maxTaps = Math.ceil(support.toDouble()).toInt() * 2 + 1
        val start = IntArray(outSize)
        val count = IntArray(outSize)
        val w = FloatArray(outSize * maxTaps)
        for (i in 0 until outSize) {
            val center = scale * (i + 0.5f)
            val lo = maxOf((center - support + 0.5f).toInt(), 0)
            val n = minOf((center + support + 0.5f).toInt(), inSize) - lo
            var total = 0f
            for (j in 0 until n) {
                val x = Math.abs((j + lo - center + 0.5f) * invScale)
                val v = if (x < 1f) 1f - x else 0f
                w[i * maxTaps + j] = v
                total += v
            }
            if (total != 0f) for (j in 0 until n) w[i * maxTaps + j] /= total
            start[i] = lo
            count[i] = n
        }
        return Taps(start, count, w, maxTaps)
    }

    /**
     * Upstream's image-predictor preprocessing (not the video path): packed RGB bytes -> x / 255 in
     * float32 -> separable antialiased bilinear resize to size x size -> (x - mean) / std, planar (1,3,S,S).
     */
    fun modelInput(rgb: ByteArray, width: Int, height: Int, size: Int, mean: FloatArray, std: FloatArray, out: FloatArray? = null): FloatArray {
        val dst = out ?: FloatArray(3 * size * size)
        val tx = taps(width, size)
        val ty = taps(height, size)
        val row = FloatArray(height * size)
        for (ch in 0 until 3) {
            // horizontal pass: height x size
            for (y in 0 until height) {
                val base = y * width
                for (x in 0 until size) {
                    var acc = 0f
                    val o = x * tx.maxTaps
                    for (j in 0 until tx.count[x]) acc += tx.weights[o + j] * ((rgb[3 * (base + tx.start[x] + j) + ch].toInt() and 0xFF) / 255f)
                    row[y * size + x] = acc
                }
            }
            // vertical pass, then normalise
            val plane = ch * size * size
            for (y in 0 until size) {
                val o = y * ty.maxTaps
                for (x in 0 until size) {
                    var acc = 0f
                    for (j in 0 until ty.count[y]) acc += ty.weights[o + j] * row[(ty.start[y] + j) * size + x]
                    dst[plane + y * size + x] = (acc - mean[ch]) / std[ch]
                }
            }
        }
        return dst
    }

    /** The same, with the manifest's image size and normalisation. */
    fun modelInput(rgb: ByteArray, width: Int, height: Int, manifest: Manifest, out: FloatArray? = null): FloatArray =
        modelInput(rgb, width, height, manifest.imageSize, manifest.mean, manifest.std, out)
}

/**
 * Encode a photo once, answer many prompts (what the photo screen does while the user taps).
 *
 * No image-mode graph: upstream's image predictor adds `no_mem_embed` to the encoder features;
 * the memory-attention graph returns exactly `feats + no_mem_embed` when every slot is invalid,
 * so it is called once per session on zero features to read that vector out. Per photo: one
 * encoder call and a vector add; per tap: one decoder call and a bilinear resize.
 */
class ImageSession(val runner: StageRunner, val cfg: TrackerConfig) {
    private var noMem: FloatArray? = null
    private var feats: FloatArray? = null
    var width = 0
        private set
    var height = 0
        private set
    private val lr2 = cfg.lowResSize * cfg.lowResSize
    private val hw = cfg.featSize * cfg.featSize

    val hasImage: Boolean get() = feats != null

    /** (C,) read out of the memory-attention graph's empty-bank branch, once. */
    fun noMemEmbed(): FloatArray {
        noMem?.let { return it }
        val c = cfg.dModel
        val out = runner.memoryAttention(
            FloatArray(c * hw), FloatArray(cfg.memorySlots * cfg.memDim * hw), IntArray(cfg.memorySlots),
            FloatArray(cfg.memorySlots), FloatArray(cfg.ptrSlots * c), FloatArray(cfg.ptrSlots)
        )
        val e = FloatArray(c) { out[it * hw] }
        noMem = e
        return e
    }

    /** `modelInput` (1,3,S,S) from Preprocess.modelInput of a width x height photo. */
    fun setImage(modelInput: FloatArray, width: Int, height: Int) {
        val f = runner.imageEncoder(modelInput)
        val e = noMemEmbed()
        for (ch in e.indices) {
            val v = e[ch]
            val base = ch * hw
            for (i in 0 until hw) f[base + i] += v
        }
        feats = f
        this.width = width
        this.height = height
    }

    /** Clicks (photo pixels) and/or a box; three candidates with `multimask`, else one. */
    fun predict(prompt: Prompt, multimask: Boolean, maskInput: FloatArray? = null): ImageResult {
        val f = feats ?: throw IllegalStateException("setImage before predict")
        Prompts.validate(0, prompt, 1, width, height)
        val t = Prompts.build(prompt, width, height, cfg.imageSize, cfg.points)
        val mask = maskInput ?: FloatArray(lr2)
        val out = runner.maskDecoder(f, t.points, t.labels, mask, if (maskInput == null) 0f else 1f)
        val stability = if (multimask) 1.0 else Decisions.stabilityScore(out.masks, 0, lr2, cfg.stabilityDelta)
        val tokens = ImageMode.chooseTokens(out.iou, stability, multimask, cfg)
        val low = FloatArray(tokens.size * lr2)
        for ((k, tok) in tokens.withIndex()) System.arraycopy(out.masks, tok * lr2, low, k * lr2, lr2)
        val logits = PostProcess.upsampleBilinear(low, tokens.size, cfg.lowResSize, cfg.lowResSize, height, width)
        for (i in low.indices) low[i] = low[i].coerceIn(-32f, 32f)
        val scores = FloatArray(tokens.size) { out.iou[tokens[it]] }
        return ImageResult(tokens, scores, logits, low, width, height, out.objScore)
    }
}
