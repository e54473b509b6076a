package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Bad input never crashes the tracker: it raises PromptException with a message for the UI. */
class TrackerBehaviourTest {
    private val cfg = TrackerConfig.fromJson(Fixtures.obj("trace_two_objects.json").obj("manifest"))

    private class ConstRunner(val cfg: TrackerConfig, val objScore: Float) : StageRunner {
        override fun imageEncoder(image: FloatArray) = FloatArray(cfg.dModel * cfg.featSize * cfg.featSize)
        override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                     objPtrs: FloatArray, ptrValid: FloatArray) = feats.copyOf()
        override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput {
            val lr2 = cfg.lowResSize * cfg.lowResSize
            return DecoderOutput(FloatArray(4 * lr2) { if (it % 2 == 0) 5f else -5f }, floatArrayOf(0.1f, 0.2f, 0.9f, 0.3f),
                FloatArray(4 * cfg.dModel), objScore)
        }
        override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float) = FloatArray(cfg.memDim * cfg.featSize * cfg.featSize)
    }

    private val frames = object : FrameProvider {
        override fun modelInput(frameIdx: Int) = FloatArray(3 * cfg.imageSize * cfg.imageSize)
    }

    private fun tracker(objScore: Float = 1f, trace: MutableList<TraceRecord>? = null) =
        Tracker(ConstRunner(cfg, objScore), cfg, 10, 128, 96, frames, 3, trace)

    private fun click(x: Float, y: Float) = Prompt(listOf(floatArrayOf(x, y)), listOf(1))

    private fun expectPromptError(part: String, block: () -> Unit) {
        try {
            block()
            fail("no error, expected '$part'")
        } catch (e: PromptException) {
            assertTrue("'${e.message}' lacks '$part'", e.message!!.contains(part))
        }
    }

    @Test
    fun absentObjectGivesTheNoObjectScore() {
        val trace = ArrayList<TraceRecord>()
        val t = tracker(-0.5f, trace)
        val low = t.addPrompt(0, 1, click(10f, 10f))
        assertTrue(low.all { it == -1024f })
        t.propagate(end = 3)
        assertEquals(3, trace.size)
        assertTrue(trace.all { it.maskArea == 0 && it.objScore < 0f })
        assertEquals(2, trace[0].maskIndex) // multimask: best IoU among tokens 1..3
    }

    @Test
    fun tapOutsideTheFrameIsAMessage() {
        val t = tracker()
        expectPromptError("outside the 128x96 frame") { t.addPrompt(0, 1, click(130f, 10f)) }
        expectPromptError("outside the 128x96 frame") { t.addPrompt(0, 1, click(-1f, 10f)) }
        expectPromptError("box is outside") { t.addPrompt(0, 1, Prompt(box = floatArrayOf(0f, 0f, 200f, 50f))) }
        expectPromptError("x0 <= x1") { t.addPrompt(0, 1, Prompt(box = floatArrayOf(50f, 0f, 20f, 50f))) }
        expectPromptError("outside the video") { t.addPrompt(12, 1, click(1f, 1f)) }
        expectPromptError("tap a point") { t.addPrompt(0, 1, Prompt()) }
        assertTrue(t.objects.isEmpty())
    }

    @Test
    fun tooManyObjectsOrPointsIsAMessage() {
        val t = tracker()
        for (id in 1..3) t.addPrompt(0, id, click(5f, 5f))
        expectPromptError("at most 3 objects") { t.addPrompt(0, 4, click(5f, 5f)) }
        t.addPrompt(1, 2, click(6f, 6f)) // a known object may get more prompts
        val many = Prompt((0 until 8).map { floatArrayOf(1f, 1f) }, (0 until 8).map { 1 })
        expectPromptError("at most 7") { t.addPrompt(0, 1, many) }
        assertEquals(listOf(1, 2, 3), t.objIds.toList())
    }

    @Test
    fun propagatingWithoutPromptsIsAMessage() {
        expectPromptError("no prompts") { tracker().propagate() }
    }

    @Test
    fun correctionFeedsThePreviousMaskBack() {
        val trace = ArrayList<TraceRecord>()
        val t = tracker(1f, trace)
        t.addPrompt(0, 1, click(5f, 5f))
        t.propagate(end = 4)
        t.addPrompt(2, 1, click(7f, 7f))
        assertEquals(false, trace.last().isInitCond)
        assertEquals(listOf(0, 1), trace.last().selection.memFrames)
    }
}
