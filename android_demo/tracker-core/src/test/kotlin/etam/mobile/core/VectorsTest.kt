package etam.mobile.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

/** Input -> output vectors from the Python runtime (vectors.json). */
class VectorsTest {
    private val v = Fixtures.obj("vectors.json")
    private val cfg = TrackerConfig.fromJson(Fixtures.obj("trace_two_objects.json").obj("manifest"))

    private fun bytes(o: JsonObject, key: String): ByteArray = o.intList(key).map { it.toByte() }.toByteArray()

    private fun prompt(o: JsonObject): Prompt {
        val pts = if (o.has("points")) o.list("points").map { p ->
            val l = p as List<*>
            floatArrayOf((l[0] as Double).toFloat(), (l[1] as Double).toFloat())
        } else emptyList()
        val labels = if (o.has("labels")) o.intList("labels") else emptyList()
        val box = if (o.has("box")) o.floatArray("box") else null
        return Prompt(pts, labels, box)
    }

    @Test
    fun promptPaddingAndCoordinates() {
        val cases = v.objects("prompts")
        assertTrue(cases.size >= 6)
        for (c in cases) {
            val size = c.intList("video_size")
            val exp = c.obj("expect")
            val p = prompt(c)
            if (exp.has("error")) {
                try {
                    Prompts.build(p, size[0], size[1], c.int("image_size"), c.int("capacity"))
                    fail("${c.path}: expected a capacity error")
                } catch (e: PromptException) {
                    assertTrue(e.message!!.contains("at most"))
                }
                continue
            }
            val t = Prompts.build(if (p.isEmpty) null else p, size[0], size[1], c.int("image_size"), c.int("capacity"))
            assertArrayEquals(c.path, exp.floatArray("points"), t.points, 0f)
            assertArrayEquals(c.path, exp.intArray("labels"), t.labels)
            assertEquals(c.path, exp.int("num_points"), t.numPoints)
        }
    }

    @Test
    fun normalizationIsBitExact() {
        val n = v.obj("preprocess").obj("normalize")
        val out = Preprocess.normalize(bytes(n, "rgb"), n.int("size"), floatArrayOf(0.485f, 0.456f, 0.406f),
            floatArrayOf(0.229f, 0.224f, 0.225f), 0.00392156862745098)
        assertArrayEquals(n.floatArray("expect"), out, 0f)
    }

    @Test
    fun bicubicResizeMatchesPillow() {
        for (c in v.obj("preprocess").objects("resize_bicubic")) {
            val out = Preprocess.resizeBicubic(bytes(c, "rgb"), c.int("width"), c.int("height"), c.int("size"), c.int("size"))
            assertArrayEquals(c.path, bytes(c, "expect"), out)
        }
    }

    @Test
    fun stabilityAndMaskChoice() {
        val consts = v.obj("constants")
        assertEquals(cfg.stabilityDelta, consts.double("delta"), 0.0)
        for (c in v.objects("stability")) {
            val masks = c.floatArray("masks")
            val iou = c.floatArray("iou")
            val side = c.int("side")
            assertEquals(c.path, c.double("stability"), Decisions.stabilityScore(masks, 0, side * side, cfg.stabilityDelta), 1e-12)
            for (ch in c.objects("choices")) {
                val got = Decisions.chooseMask(masks, iou, ch.int("num_points"), cfg)
                assertEquals(ch.path, ch.int("mask_index"), got.maskIndex)
                assertEquals(ch.path, ch.int("ptr_index"), got.ptrIndex)
                assertEquals(ch.path, ch.bool("multimask"), got.multimask)
            }
        }
    }

    @Test
    fun bfloat16Rounding() {
        val b = v.obj("bf16")
        // uint32 bit patterns: read as Long, reinterpret as Int
        val bits = b.list("bits").map { (it as Double).toLong().toInt() }
        val expect = b.list("expect_bits").map { (it as Double).toLong().toInt() }
        for (i in bits.indices) {
            val got = MemoryRules.roundToBf16(Float.fromBits(bits[i])).toRawBits()
            assertEquals("value #$i", expect[i], got)
        }
    }

    @Test
    fun bilinearUpsampleAndLabelMap() {
        val u = v.obj("upsample")
        val h = u.int("height")
        val w = u.int("width")
        val side = u.int("side")
        val out = PostProcess.upsampleBilinear(u.floatArray("low_res"), u.int("objects"), side, side, h, w)
        val exp = u.floatArray("expect")
        for (i in exp.indices) assertEquals("pixel $i", exp[i], out[i], 1e-5f * maxOf(1f, Math.abs(exp[i])))
        val labels = PostProcess.labelMap(exp, u.intArray("obj_ids"), h, w)
        assertArrayEquals(u.intArray("label_map"), labels)
    }
}
