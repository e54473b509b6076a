package etam.mobile.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Replays image_mode.json (scripts/make_traces.py): image-mode decisions as the Python runtime made them. */
class ImageModeTest {
    private val doc = Fixtures.obj("image_mode.json")
    private val cfg = TrackerConfig.fromJson(doc.obj("manifest"))
    private val size = doc.intList("image_size")
    private val w = size[0]
    private val h = size[1]

    private fun prompt(o: JsonObject): Prompt {
        val pts = if (o.has("points")) o.list("points").map { p ->
            val l = p as List<*>
            floatArrayOf((l[0] as Double).toFloat(), (l[1] as Double).toFloat())
        } else emptyList()
        val labels = if (o.has("labels")) o.intList("labels") else emptyList()
        return Prompt(pts, labels, if (o.has("box")) o.floatArray("box") else null)
    }

    @Test
    fun promptPaddingWithoutMemoryAndTokenChoiceMatchPython() {
        val queries = doc.objects("queries")
        assertTrue(queries.size >= 4)
        var sawMulti = false
        var sawSingle = false
        for (q in queries) {
            val t = Prompts.build(prompt(q), w, h, cfg.imageSize, cfg.points)
            val exp = q.obj("prompt")
            assertArrayEquals(q.path, exp.floatArray("points"), t.points, 1e-5f)
            assertArrayEquals(q.path, exp.intArray("labels"), t.labels)
            assertEquals(q.path, exp.int("num_points"), t.numPoints)
            val counts = q.intList("stab_counts")
            val iou = q.floatArray("iou")
            val multimask = q.bool("multimask")
            val tokens = ImageMode.chooseTokens(iou, ImageMode.stabilityFromCounts(counts[0], counts[1]), multimask, cfg)
            assertArrayEquals(q.path, q.intArray("tokens"), tokens)
            val scores = FloatArray(tokens.size) { iou[tokens[it]] }
            assertArrayEquals(q.path, q.floatArray("scores"), scores, 1e-6f)
            if (multimask) sawMulti = true else sawSingle = true
        }
        assertTrue(sawMulti && sawSingle)
    }

    @Test
    fun unstableSingleMaskFallsBackToBestMultimaskToken() {
        val iou = floatArrayOf(0.9f, 0.2f, 0.7f, 0.5f)
        assertArrayEquals(intArrayOf(2), ImageMode.chooseTokens(iou, 0.5, false, cfg))
        assertArrayEquals(intArrayOf(0), ImageMode.chooseTokens(iou, cfg.stabilityThresh, false, cfg))
        assertArrayEquals(intArrayOf(1, 2, 3), ImageMode.chooseTokens(iou, 0.5, true, cfg))
    }

    @Test
    fun imagePredictorPreprocessingMatchesPython() {
        val mean = floatArrayOf(0.485f, 0.456f, 0.406f)
        val std = floatArrayOf(0.229f, 0.224f, 0.225f)
        val cases = doc.objects("preprocess")
        assertTrue(cases.size >= 2)
        for (c in cases) {
            val rgb = c.intList("rgb").map { it.toByte() }.toByteArray()
            val got = ImageMode.modelInput(rgb, c.int("width"), c.int("height"), c.int("size"), mean, std)
            assertArrayEquals(c.path, c.floatArray("expect"), got, 2e-5f)
        }
    }

    /** Graph stand-ins: distinct encoder values, the empty-bank memory attention, the recorded decoder. */
    private inner class Stub : StageRunner {
        val hw = cfg.featSize * cfg.featSize
        val embed = FloatArray(cfg.dModel) { 0.25f * it - 3f }
        val encoded = FloatArray(cfg.dModel * hw) { ((it * 7919) % 101) / 50f - 1f }
        var encoderCalls = 0
        var attentionCalls = 0
        val first = doc.obj("first_query")

        override fun imageEncoder(image: FloatArray): FloatArray {
            encoderCalls++
            return encoded.copyOf()
        }

        override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                     objPtrs: FloatArray, ptrValid: FloatArray): FloatArray {
            attentionCalls++
            assertTrue("image mode runs memory attention with an empty bank", memValid.all { it == 0f } && ptrValid.all { it == 0f })
            return FloatArray(feats.size) { feats[it] + embed[it / hw] }
        }

        override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput {
            for (i in condFeats.indices) assertEquals(encoded[i] + embed[i / hw], condFeats[i], 0f)
            assertEquals(0f, hasMaskInput, 0f)
            return DecoderOutput(first.floatArray("decoder_masks"), first.floatArray("decoder_iou"), FloatArray(4 * cfg.dModel), 1f)
        }

        override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float): FloatArray =
            throw AssertionError("image mode never encodes memory")
    }

    @Test
    fun sessionEncodesOnceAndReproducesTheFirstQuery() {
        val stub = Stub()
        val session = ImageSession(stub, cfg)
        session.setImage(FloatArray(3 * cfg.imageSize * cfg.imageSize), w, h)
        val q = doc.objects("queries")[0]
        val first = doc.obj("first_query")
        for (rep in 0 until 2) {
            val r = session.predict(prompt(q), q.bool("multimask"))
            assertArrayEquals(q.intArray("tokens"), r.tokens)
            assertArrayEquals(q.floatArray("scores"), r.scores, 1e-6f)
            assertArrayEquals(first.floatArray("logits"), r.logits, 1e-4f)
            val n = w * h
            val areas = IntArray(r.count) { k -> (0 until n).count { r.logits[k * n + it] > 0f } }
            assertArrayEquals(q.intArray("mask_area"), areas)
            assertTrue(r.lowRes.all { it >= -32f && it <= 32f })
        }
        assertEquals(1, stub.encoderCalls)
        assertEquals(1, stub.attentionCalls)
    }

    @Test
    fun badPromptsAreRefusedWithAMessage() {
        val session = ImageSession(Stub(), cfg)
        session.setImage(FloatArray(3 * cfg.imageSize * cfg.imageSize), w, h)
        for (p in listOf(Prompt(), Prompt(listOf(floatArrayOf(w + 5f, 1f)), listOf(1)))) {
            try {
                session.predict(p, true)
                fail("expected a PromptException")
            } catch (e: PromptException) {
                assertTrue(e.message!!.isNotEmpty())
            }
        }
    }
}
