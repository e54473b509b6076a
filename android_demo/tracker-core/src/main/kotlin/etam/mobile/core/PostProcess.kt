package etam.mobile.core

/** Low-res mask logits -> frame-size masks, like etam_mobile/runtime/outputs.py. */
object PostProcess {
    /**
     * Bilinear resize with align_corners=false (PyTorch F.interpolate), float32.
     * `src` holds `planes` planes of inH x inW; returns planes of outH x outW.
     */
    fun upsampleBilinear(src: FloatArray, planes: Int, inH: Int, inW: Int, outH: Int, outW: Int, out: FloatArray? = null): FloatArray {
        val dst = out ?: FloatArray(planes * outH * outW)
        val sh = inH.toFloat() / outH
        val sw = inW.toFloat() / outW
        val x0 = IntArray(outW)
        val x1 = IntArray(outW)
        val lx = FloatArray(outW)
        for (x in 0 until outW) {
            val r = maxOf(sw * (x + 0.5f) - 0.5f, 0f)
            val i = r.toInt()
            x0[x] = i
            x1[x] = if (i < inW - 1) i + 1 else i
            lx[x] = r - i
        }
        for (p in 0 until planes) {
            val base = p * inH * inW
            val obase = p * outH * outW
            for (y in 0 until outH) {
                val r = maxOf(sh * (y + 0.5f) - 0.5f, 0f)
                val y0 = r.toInt()
                val y1 = if (y0 < inH - 1) y0 + 1 else y0
                val ly = r - y0
                val hy = 1f - ly
                val row0 = base + y0 * inW
                val row1 = base + y1 * inW
                for (x in 0 until outW) {
                    val wx = lx[x]
                    val hx = 1f - wx
                    dst[obase + y * outW + x] = hy * (hx * src[row0 + x0[x]] + wx * src[row0 + x1[x]]) +
                        ly * (hx * src[row1 + x0[x]] + wx * src[row1 + x1[x]])
                }
            }
        }
        return dst
    }

    /** (objects, H, W) logits -> (H, W) object ids; where objects overlap the highest logit wins, 0 = background. */
    fun labelMap(logits: FloatArray, objIds: IntArray, height: Int, width: Int, out: IntArray? = null): IntArray {
        val n = height * width
        val dst = out ?: IntArray(n)
        for (i in 0 until n) {
            var best = 0
            var bestV = Float.NEGATIVE_INFINITY
            for (o in objIds.indices) {
                val v = logits[o * n + i]
                if (v > bestV) { bestV = v; best = o }
            }
            dst[i] = if (objIds.isNotEmpty() && bestV > 0f) objIds[best] else 0
        }
        return dst
    }
}
