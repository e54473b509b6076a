package etam.mobile.core

/**
 * Mask prompts, upstream `add_new_mask` (etam_mobile/runtime/mask_prompt.py): the mask is the
 * frame's output (logits +-10, object score +10); the decoder runs on the raw image features with
 * `mask_downsample(mask)` as its mask input only to get the object pointer (token 0).
 * The constants come from manifest.json's `mask_prompt` section.
 */
class MaskPromptConstants(
    val downsampleWeight: FloatArray, val downsampleBias: Float, val stride: Int,
    val outputScale: Float, val outputBias: Float, val objectScore: Float
) {
    companion object {
        /** `mask_prompt` of a manifest; null when the export predates mask prompts. */
        fun fromManifest(root: JsonObject): MaskPromptConstants? {
            if (!root.has("mask_prompt")) return null
            val m = root.obj("mask_prompt")
            val w = m.list("downsample_weight").flatMap { row -> (row as List<*>).map { (it as Number).toFloat() } }
            val stride = m.int("downsample_stride")
            if (w.size != stride * stride) throw ManifestException("${m.path}.downsample_weight must be $stride x $stride; re-export the folder")
            return MaskPromptConstants(w.toFloatArray(), m.double("downsample_bias").toFloat(), stride,
                m.double("output_scale").toFloat(), m.double("output_bias").toFloat(), m.double("object_score").toFloat())
        }
    }
}

/** What a mask prompt feeds the tracker: the frame's low-res output and the decoder's mask input. */
class PreparedMask(val lowRes: FloatArray, val decoderInput: FloatArray)

object MaskPrompt {
    /** Separable antialiased bilinear resize of one float plane (PyTorch interpolate, antialias=True). */
    fun resize(src: FloatArray, width: Int, height: Int, outW: Int, outH: Int): FloatArray {
        val tx = ImageMode.taps(width, outW)
        val ty = ImageMode.taps(height, outH)
        val row = FloatArray(height * outW)
        for (y in 0 until height) for (x in 0 until outW) {
            var acc = 0f
            val o = x * tx.maxTaps
            for (j in 0 until tx.count[x]) acc += tx.weights[o + j] * src[y * width + tx.start[x] + j]
            row[y * outW + x] = acc
        }
        val out = FloatArray(outW * outH)
        for (y in 0 until outH) {
            val o = y * ty.maxTaps
            for (x in 0 until outW) {
                var acc = 0f
                for (j in 0 until ty.count[y]) acc += ty.weights[o + j] * row[(ty.start[y] + j) * outW + x]
                out[y * outW + x] = acc
            }
        }
        return out
    }

    /** (height x width) mask -> (S x S) 0/1: resized with antialias then >= 0.5, unless already S x S. */
    fun toInput(mask: BooleanArray, width: Int, height: Int, size: Int): FloatArray {
        val m = FloatArray(mask.size) { if (mask[it]) 1f else 0f }
        if (width == size && height == size) return m
        val r = resize(m, width, height, size, size)
        for (i in r.indices) r[i] = if (r[i] >= 0.5f) 1f else 0f
        return r
    }

    /** Upstream's mask_downsample: a stride-`k` k x k convolution, one channel. */
    fun downsample(m: FloatArray, size: Int, c: MaskPromptConstants): FloatArray {
        val k = c.stride
        val s = size / k
        val out = FloatArray(s * s)
        for (i in 0 until s) for (j in 0 until s) {
            var acc = 0f
            for (a in 0 until k) for (b in 0 until k) acc += m[(i * k + a) * size + j * k + b] * c.downsampleWeight[a * k + b]
            out[i * s + j] = acc + c.downsampleBias
        }
        return out
    }

    fun prepare(mask: BooleanArray, width: Int, height: Int, cfg: TrackerConfig, c: MaskPromptConstants): PreparedMask {
        if (mask.size != width * height) throw PromptException("the mask has ${mask.size} pixels, the frame ${width}x$height; give a mask of the frame's size")
        val s = cfg.imageSize
        val m = toInput(mask, width, height, s)
        if (m.none { it > 0f }) throw PromptException("the mask covers too few pixels to survive resizing to the model's ${s}x$s input; give a larger mask or tap the object")
        val logits = FloatArray(m.size) { m[it] * c.outputScale + c.outputBias }
        val lr = cfg.lowResSize
        return PreparedMask(resize(logits, s, s, lr, lr), downsample(m, s, c))
    }
}
