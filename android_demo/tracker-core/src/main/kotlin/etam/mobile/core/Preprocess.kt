package etam.mobile.core

/**
 * Frame preprocessing, bit-for-bit like the Python runtime: Pillow's bicubic resize of the RGB
 * frame to image_size x image_size (8-bit fixed point, two passes, horizontal first), then
 * `(uint8 / 255.0 -> float32 - mean) / std` in float32, laid out NCHW.
 */
object Preprocess {
    private const val PRECISION_BITS = 32 - 8 - 2

    private fun bicubic(x0: Double): Double {
        val a = -0.5
        val x = if (x0 < 0.0) -x0 else x0
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a
        return 0.0
    }

    private class Coeffs(val ksize: Int, val bounds: IntArray, val kk: IntArray)

    private fun coeffs(inSize: Int, outSize: Int): Coeffs {
        val scale = inSize.toDouble() / outSize
        val filterscale = if (scale < 1.0) 1.0 else scale
        val support = 2.0 * filterscale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val kd = DoubleArray(outSize * ksize)
        val bounds = IntArray(outSize * 2)
        val ss = 1.0 / filterscale
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            var ww = 0.0
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            for (x in 0 until xmax) {
                val w = bicubic(((x + xmin) - center + 0.5) * ss)
                kd[xx * ksize + x] = w
                ww += w
            }
            if (ww != 0.0) for (x in 0 until xmax) kd[xx * ksize + x] /= ww
            bounds[2 * xx] = xmin
            bounds[2 * xx + 1] = xmax
        }
        val kk = IntArray(kd.size) {
            val v = kd[it] * (1 shl PRECISION_BITS)
            if (kd[it] < 0) (-0.5 + v).toInt() else (0.5 + v).toInt()
        }
        return Coeffs(ksize, bounds, kk)
    }

    private fun clip8(v: Int): Int = when {
        v >= (1 shl PRECISION_BITS shl 8) -> 255
        v <= 0 -> 0
        else -> v shr PRECISION_BITS
    }

    /** Pillow `Image.resize((outW, outH))` (bicubic) of packed RGB bytes (row-major, 3 per pixel). */
    fun resizeBicubic(rgb: ByteArray, width: Int, height: Int, outW: Int, outH: Int): ByteArray {
        require(rgb.size == width * height * 3) { "rgb has ${rgb.size} bytes, expected ${width * height * 3}" }
        var src = rgb
        var w = width
        if (outW != width) {
            val c = coeffs(width, outW)
            val tmp = ByteArray(outW * height * 3)
            for (y in 0 until height) {
                val row = y * width * 3
                for (xx in 0 until outW) {
                    val xmin = c.bounds[2 * xx]
                    val xmax = c.bounds[2 * xx + 1]
                    val k = xx * c.ksize
                    var s0 = 1 shl (PRECISION_BITS - 1)
                    var s1 = s0
                    var s2 = s0
                    for (x in 0 until xmax) {
                        val p = row + (x + xmin) * 3
                        val kv = c.kk[k + x]
                        s0 += (src[p].toInt() and 0xFF) * kv
                        s1 += (src[p + 1].toInt() and 0xFF) * kv
                        s2 += (src[p + 2].toInt() and 0xFF) * kv
                    }
                    val o = (y * outW + xx) * 3
                    tmp[o] = clip8(s0).toByte()
                    tmp[o + 1] = clip8(s1).toByte()
                    tmp[o + 2] = clip8(s2).toByte()
                }
            }
            src = tmp
            w = outW
        }
        if (outH == height) return if (src === rgb) rgb.copyOf() else src
        val c = coeffs(height, outH)
        val out = ByteArray(w * outH * 3)
        for (yy in 0 until outH) {
            val ymin = c.bounds[2 * yy]
            val ymax = c.bounds[2 * yy + 1]
            val k = yy * c.ksize
            for (xx in 0 until w) {
                var s0 = 1 shl (PRECISION_BITS - 1)
                var s1 = s0
                var s2 = s0
                for (y in 0 until ymax) {
                    val p = ((y + ymin) * w + xx) * 3
                    val kv = c.kk[k + y]
                    s0 += (src[p].toInt() and 0xFF) * kv
                    s1 += (src[p + 1].toInt() and 0xFF) * kv
                    s2 += (src[p + 2].toInt() and 0xFF) * kv
                }
                val o = (yy * w + xx) * 3
                out[o] = clip8(s0).toByte()
                out[o + 1] = clip8(s1).toByte()
                out[o + 2] = clip8(s2).toByte()
            }
        }
        return out
    }

    /** size x size packed RGB -> (1, 3, size, size) float32, into `out` when given (reused buffer). */
    fun normalize(rgb: ByteArray, size: Int, mean: FloatArray, std: FloatArray, scale: Double = 1.0 / 255.0, out: FloatArray? = null): FloatArray {
        val n = size * size
        require(rgb.size == n * 3) { "rgb has ${rgb.size} bytes, expected ${n * 3}" }
        val dst = out ?: FloatArray(3 * n)
        require(dst.size == 3 * n) { "output buffer has ${dst.size} floats, expected ${3 * n}" }
        // Python divides by 255.0 in float64; 1/scale recovers that divisor exactly.
        val inv = 1.0 / scale
        val divisor = if (Math.abs(inv - Math.rint(inv)) < 1e-6) Math.rint(inv) else inv
        for (ch in 0 until 3) {
            val m = mean[ch]
            val s = std[ch]
            val base = ch * n
            for (i in 0 until n) {
                val x = ((rgb[i * 3 + ch].toInt() and 0xFF) / divisor).toFloat()
                dst[base + i] = (x - m) / s
            }
        }
        return dst
    }

    /** Any RGB frame -> model input, as the manifest describes (resize, then normalize). */
    fun modelInput(rgb: ByteArray, width: Int, height: Int, manifest: Manifest, out: FloatArray? = null): FloatArray {
        val s = manifest.imageSize
        val resized = if (width == s && height == s) rgb else resizeBicubic(rgb, width, height, s, s)
        return normalize(resized, s, manifest.mean, manifest.std, manifest.scale, out)
    }

    /** Packed ARGB ints (Android Bitmap.getPixels) -> packed RGB bytes. */
    fun argbToRgb(argb: IntArray, out: ByteArray? = null): ByteArray {
        val dst = out ?: ByteArray(argb.size * 3)
        for (i in argb.indices) {
            val p = argb[i]
            dst[3 * i] = (p shr 16).toByte()
            dst[3 * i + 1] = (p shr 8).toByte()
            dst[3 * i + 2] = p.toByte()
        }
        return dst
    }
}
