package etam.mobile.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

/** After a correction click, Track continues from the corrected frame and keeps the correction. */
class CorrectionTest {
    private val manifest = Manifest.parse(Fixtures.text("manifest.json"))
    private val cfg = manifest.tracker

    private fun tracker(frames: Int): Tracker {
        val n = 3 * cfg.imageSize * cfg.imageSize
        val provider = object : FrameProvider {
            // A square that moves with the frame index, so every frame's input differs.
            override fun modelInput(frameIdx: Int) = FloatArray(n) { i ->
                val x = (i % cfg.imageSize + 3 * frameIdx) % cfg.imageSize
                if (x in 40..80) 1f else -0.5f + 0.001f * (i % 13)
            }
        }
        return Tracker(MixRunner(cfg), cfg, frames, 128, 96, provider)
    }

    private fun run(t: Tracker, start: Int?, keep: Boolean): Map<Int, FloatArray> {
        val out = LinkedHashMap<Int, FloatArray>()
        t.propagate(start = start, keepCorrections = keep) { r ->
            out[r.frameIdx] = r.lowRes
            true
        }
        return out
    }

    private val click = Prompt(listOf(floatArrayOf(30f, 40f)), listOf(1))
    private val fix = Prompt(listOf(floatArrayOf(90f, 50f), floatArrayOf(30f, 40f)), listOf(1, 0))

    @Test
    fun resumingAfterACorrectionEqualsTrackingEverythingAgainWithItKept() {
        val a = tracker(12)
        val b = tracker(12)
        val up = tracker(12)
        var corrected = FloatArray(0)
        for (t in listOf(a, b, up)) {
            t.addPrompt(0, 1, click)
            run(t, null, false)
            corrected = t.addPrompt(5, 1, fix)
        }
        assertEquals("a correction on frame 5 resumes at frame 6", 6, a.resumeStart())
        val resumed = run(a, a.resumeStart(), true)
        assertEquals((6 until 12).toList(), resumed.keys.sorted())
        val full = run(b, null, true)
        assertArrayEquals("the corrected mask is kept", corrected, full[5], 0f)
        for (f in 6 until 12) assertArrayEquals("frame $f", full[f], resumed[f], 0f)
        // Upstream's order re-tracks frame 5 and loses the correction: what the app must not do.
        val upstream = run(up, null, false)
        assertFalse(upstream[5]!!.contentEquals(corrected))
    }

    @Test
    fun aNewConditioningFrameOrAPrunedWindowRestartsAtTheFirstPrompt() {
        val t = tracker(40)
        t.addPrompt(2, 1, click)
        assertEquals(2, t.resumeStart())
        run(t, t.resumeStart(), true)
        assertNull(t.resumeStart())
        // Frame 10's memory window was pruned while tracking to frame 39: start over at frame 2.
        t.addPrompt(10, 1, fix)
        assertEquals(2, t.resumeStart())
        val again = run(t, t.resumeStart(), true)
        assertEquals(2, again.keys.min())
        // A correction on the last frame still has its window (nothing left to track).
        t.addPrompt(39, 1, fix)
        assertEquals(40, t.resumeStart())
        // A second object is a new conditioning frame, which every frame's memory sees.
        t.addPrompt(20, 2, click)
        assertEquals(2, t.resumeStart())
    }

    @Test
    fun keepingAllMemoriesResumesAnywhereWithTheSameResults() {
        val kept = tracker(30)
        val keptFull = tracker(30)
        val pruned = tracker(30)
        kept.keepAllMemories = true
        keptFull.keepAllMemories = true
        val firstRuns = ArrayList<Map<Int, FloatArray>>()
        for (t in listOf(kept, keptFull, pruned)) {
            t.addPrompt(0, 1, click)
            firstRuns.add(run(t, null, true))
            t.addPrompt(8, 1, fix)
        }
        for (f in 0 until 30) assertArrayEquals("keeping memories changes no tracking result (frame $f)", firstRuns[2][f], firstRuns[0][f], 0f)
        assertEquals(9, kept.resumeStart())
        assertEquals("frame 8's window was pruned", 0, pruned.resumeStart())
        val resumed = run(kept, kept.resumeStart(), true)
        val full = run(keptFull, 0, true)
        assertEquals((9 until 30).toList(), resumed.keys.sorted())
        for (f in 9 until 30) assertArrayEquals("frame $f", full[f], resumed[f], 0f)
        assertTrue(full[8]!!.contentEquals(kept.objects[1]!!.nonCond[8]!!.lowRes))
    }
}

/**
 * A stage runner whose outputs are deterministic functions of all their inputs, so any change
 * of memory, pointers or prompts changes every later result (exact equality is meaningful).
 */
class MixRunner(val cfg: TrackerConfig) : StageRunner {
    var calls = 0

    private fun checksum(a: FloatArray): Float {
        var s = 0f
        for (i in a.indices) if (a[i] != 0f) s += a[i] * (i % 7 + 1).toFloat()
        return s
    }

    override fun imageEncoder(image: FloatArray): FloatArray {
        calls++
        val n = cfg.dModel * cfg.featSize * cfg.featSize
        val step = maxOf(1, image.size / n)
        return FloatArray(n) { image[(it * step) % image.size] * 0.5f + (it % 5) * 0.01f }
    }

    override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                 objPtrs: FloatArray, ptrValid: FloatArray): FloatArray {
        calls++
        var s = checksum(memFeats) * 1e-4f + checksum(objPtrs) * 1e-3f
        for (i in memTpos.indices) s += memTpos[i] * memValid[i] * 0.1f
        s += checksum(ptrValid)
        return FloatArray(feats.size) { feats[it] + s * 1e-3f }
    }

    override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput {
        calls++
        val lr2 = cfg.lowResSize * cfg.lowResSize
        val p = checksum(points) * 1e-3f + labels.sum() * 0.01f + checksum(maskInput) * 1e-5f + hasMaskInput
        val masks = FloatArray(4 * lr2) { condFeats[it % condFeats.size] * 10f - 2f + p + (it / lr2) * 0.1f }
        val iou = FloatArray(4) { 0.5f + 0.1f * Math.sin((it + p).toDouble()).toFloat() }
        val ptr = FloatArray(4 * cfg.dModel) { condFeats[it % condFeats.size] + p }
        return DecoderOutput(masks, iou, ptr, 1f)
    }

    override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float): FloatArray {
        calls++
        val n = cfg.memDim * cfg.featSize * cfg.featSize
        val m = checksum(mask) * 1e-6f + binarize
        return FloatArray(n) { feats[it % feats.size] + m }
    }
}
