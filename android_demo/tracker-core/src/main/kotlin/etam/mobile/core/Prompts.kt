package etam.mobile.core

/** A prompt the tracker cannot apply (outside the frame, too many points, ...); shown to the user. */
class PromptException(message: String) : RuntimeException(message)

/** Clicks (frame pixels, label 1 positive / 0 negative) and/or a box [x0, y0, x1, y1] for one object. */
class Prompt(val points: List<FloatArray> = emptyList(), val labels: List<Int> = emptyList(), val box: FloatArray? = null) {
    val isEmpty: Boolean get() = points.isEmpty() && box == null
}

/** Padded decoder inputs: points (capacity x 2, model pixels), labels (capacity), real point count. */
class PromptTensors(val points: FloatArray, val labels: IntArray, val numPoints: Int)

object Prompts {
    const val NOT_A_POINT = -1
    const val EMPTY = -2
    const val BOX_TOP_LEFT = 2
    const val BOX_BOTTOM_RIGHT = 3

    /**
     * Upstream's token order: box corners (labels 2, 3), then clicks, then the not-a-point
     * token(s) (label -1 at (0, 0): one after a prompt, two when tracking with no prompt), then
     * EMPTY slots up to `capacity`. Coordinates: (x / W) * image_size in float32.
     */
    fun build(prompt: Prompt?, videoWidth: Int, videoHeight: Int, imageSize: Int, capacity: Int): PromptTensors {
        val xs = ArrayList<Float>()
        val ys = ArrayList<Float>()
        val labs = ArrayList<Int>()
        if (prompt != null) {
            val box = prompt.box
            if (box != null) {
                xs.add(box[0]); ys.add(box[1]); labs.add(BOX_TOP_LEFT)
                xs.add(box[2]); ys.add(box[3]); labs.add(BOX_BOTTOM_RIGHT)
            }
            for (i in prompt.points.indices) {
                xs.add(prompt.points[i][0]); ys.add(prompt.points[i][1]); labs.add(prompt.labels[i])
            }
        }
        val num = labs.size
        val tokens = num + if (num > 0) 1 else 2
        if (tokens > capacity) {
            throw PromptException("this prompt has $num points (a box counts 2) but the exported model takes at most " +
                "${capacity - 1}; remove points or re-export with a larger point capacity")
        }
        val pts = FloatArray(capacity * 2)
        val out = IntArray(capacity) { EMPTY }
        val w = videoWidth.toFloat()
        val h = videoHeight.toFloat()
        val s = imageSize.toFloat()
        for (i in 0 until num) {
            pts[2 * i] = (xs[i] / w) * s
            pts[2 * i + 1] = (ys[i] / h) * s
            out[i] = labs[i]
        }
        for (i in num until tokens) out[i] = NOT_A_POINT
        return PromptTensors(pts, out, num)
    }

    /** The same checks as the Python tracker, with messages meant for the app's UI. */
    fun validate(frameIdx: Int, prompt: Prompt, numFrames: Int, width: Int, height: Int) {
        if (frameIdx < 0 || frameIdx >= numFrames) throw PromptException("frame $frameIdx is outside the video (frames 0..${numFrames - 1})")
        if (prompt.isEmpty) throw PromptException("tap a point or drag a box first")
        if (prompt.points.size != prompt.labels.size) throw PromptException("points and labels must have the same length")
        for ((i, p) in prompt.points.withIndex()) {
            val lab = prompt.labels[i]
            if (lab != 0 && lab != 1) throw PromptException("label $lab must be 1 (positive) or 0 (negative)")
            if (!(p[0] >= 0f && p[0] <= width && p[1] >= 0f && p[1] <= height)) {
                throw PromptException("the point (${p[0].toInt()}, ${p[1].toInt()}) is outside the ${width}x$height frame; tap inside the picture")
            }
        }
        val b = prompt.box
        if (b != null) {
            if (b[2] < b[0] || b[3] < b[1]) throw PromptException("a box needs x0 <= x1 and y0 <= y1")
            if (!(b[0] >= 0f && b[2] <= width && b[1] >= 0f && b[3] <= height)) {
                throw PromptException("the box is outside the ${width}x$height frame; drag inside the picture")
            }
        }
    }
}
