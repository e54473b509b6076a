package etam.mobile.core

class MaskChoice(val maskIndex: Int, val ptrIndex: Int, val multimask: Boolean, val stability: Double)

/** Which decoder output is used, exactly as upstream (etam_mobile/runtime/decisions.py). */
object Decisions {
    /** Several candidates whenever the prompt has few points (tracking frames have 0). */
    fun useMultimask(numPoints: Int, cfg: TrackerConfig): Boolean = numPoints >= cfg.multimaskMinPt && numPoints <= cfg.multimaskMaxPt

    /** Area above +delta over area above -delta (1.0 when both are empty); compared in float32. */
    fun stabilityScore(masks: FloatArray, offset: Int, count: Int, delta: Double): Double {
        val d = delta.toFloat()
        val nd = -d
        var inter = 0
        var union = 0
        for (i in offset until offset + count) {
            val v = masks[i]
            if (v > d) inter++
            if (v > nd) union++
        }
        return if (union > 0) inter.toDouble() / union.toDouble() else 1.0
    }

    /** First index of the best IoU among tokens 1..3. */
    fun bestMultimask(iou: FloatArray): Int {
        var best = 1
        for (k in 2..3) if (iou[k] > iou[best]) best = k
        return best
    }

    /** The decision from the numbers alone (what a conformance trace records). */
    fun choose(iou: FloatArray, stability: Double, numPoints: Int, cfg: TrackerConfig): MaskChoice {
        val best = bestMultimask(iou)
        if (useMultimask(numPoints, cfg)) return MaskChoice(best, best, true, 1.0)
        val idx = if (stability >= cfg.stabilityThresh) 0 else best
        return MaskChoice(idx, 0, false, stability)
    }

    /** masks: (4, lr, lr) flattened. Stability of mask 0 is only computed when it matters. */
    fun chooseMask(masks: FloatArray, iou: FloatArray, numPoints: Int, cfg: TrackerConfig): MaskChoice {
        if (useMultimask(numPoints, cfg)) return choose(iou, 1.0, numPoints, cfg)
        val n = masks.size / 4
        return choose(iou, stabilityScore(masks, 0, n, cfg.stabilityDelta), numPoints, cfg)
    }

    /** Upstream writes the no-object score everywhere when the object is predicted absent. */
    fun applyObjectScore(mask: FloatArray, objScore: Float, cfg: TrackerConfig): FloatArray {
        if (objScore > 0f) return mask
        java.util.Arrays.fill(mask, cfg.noObjScore)
        return mask
    }
}
