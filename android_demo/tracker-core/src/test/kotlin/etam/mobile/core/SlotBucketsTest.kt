package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/** The memory-attention slot-bucket choice agrees with the Python runtime (scripts/make_traces.py). */
class SlotBucketsTest {
    private fun buckets(lists: List<Any?>): List<SlotBucket> = lists.map { b ->
        val kp = (b as List<*>).map { (it as Double).toInt() }
        SlotBucket(kp[0], kp[1], emptyMap())
    }

    @Test
    fun vectorsMatchPython() {
        val cases = Fixtures.obj("vectors.json").objects("slot_buckets")
        assertTrue(cases.size > 50)
        for (c in cases) {
            val got = SlotBuckets.choose(buckets(c.list("buckets")), c.int("n_mem"), c.int("n_ptr"))
            assertEquals("${c.path} ${c.list("buckets")} n_mem=${c.int("n_mem")} n_ptr=${c.int("n_ptr")}", c.int("expect"), got)
        }
    }

    @Test
    fun everyTraceRecordRunsTheBucketTheRuleGives() {
        var checked = 0
        for (name in Fixtures.traceNames()) {
            val doc = Fixtures.obj(name)
            val cands = buckets(doc.list("slot_buckets"))
            for (r in doc.objects("records")) {
                if (r.string("kind") == "mask") {  // no memory attention runs on a mask prompt
                    assertEquals("$name ${r.path}", listOf(0, 0), r.intList("slot_bucket"))
                    continue
                }
                val s = r.obj("selection")
                val i = SlotBuckets.choose(cands, s.intList("mem_frames").size, s.intList("ptr_frames").size)
                val want = r.intList("slot_bucket")
                assertEquals("$name ${r.path}", want, listOf(cands[i].memorySlots, cands[i].ptrSlots))
                checked++
            }
        }
        assertTrue(checked > 40)
    }

    @Test
    fun manifestListsBucketsAndTheFullGraphIsLast() {
        val m = Manifest.parse(Fixtures.text("manifest.json"))
        val cands = SlotBuckets.candidates(m, "executorch")
        assertTrue(cands.size >= 2)
        val full = cands.last()
        assertEquals(m.tracker.memorySlots, full.memorySlots)
        assertEquals(m.tracker.ptrSlots, full.ptrSlots)
        assertEquals(m.artifact("memory_attention", "executorch"), full.artifacts["executorch"])
        assertEquals("forward", full.method("executorch"))
        // Format 2: ExecuTorch buckets are methods of the stage's own program (one copy of the weights).
        for (b in cands.dropLast(1)) {
            assertEquals("memory_attention.pte", b.artifacts["executorch"])
            assertEquals("k${b.memorySlots}p${b.ptrSlots}", b.method("executorch"))
        }
        // Core ML buckets stay files, each run through its only graph.
        for (b in SlotBuckets.candidates(m, "coreml").dropLast(1)) {
            assertEquals("memory_attention.k${b.memorySlots}p${b.ptrSlots}.mlpackage", b.artifacts["coreml"])
            assertEquals("forward", b.method("coreml"))
        }
        // A target without bucket artifacts falls back to the full graph alone.
        assertEquals(1, SlotBuckets.candidates(m, "onnx").size)
    }

    @Test
    fun formatOneManifestWithOneFilePerBucketStillLoads() {
        // The format-1 form of the sample: no methods, each ExecuTorch bucket its own file.
        val v1 = Fixtures.text("manifest.json").replaceFirst("\"format_version\": 2", "\"format_version\": 1")
            .replace(Regex(",\\s*\"methods\": \\{[^}]*\\}"), "")
            .replace(Regex("(\"memory_slots\": (\\d+),\\s*\"ptr_slots\": (\\d+),\\s*\"artifacts\": \\{\\s*\"executorch\": \")memory_attention\\.pte")) {
                "${it.groupValues[1]}memory_attention.k${it.groupValues[2]}p${it.groupValues[3]}.pte"
            }
        assertTrue(!v1.contains("\"methods\""))
        val m = Manifest.parse(v1)
        assertEquals(1, m.formatVersion)
        val cands = SlotBuckets.candidates(m, "executorch")
        assertTrue(cands.size >= 2)
        for (b in cands.dropLast(1)) {
            assertEquals("memory_attention.k${b.memorySlots}p${b.ptrSlots}.pte", b.artifacts["executorch"])
            assertEquals("forward", b.method("executorch"))
        }
    }

    @Test
    fun aMethodForATargetWithoutArtifactIsAClearError() {
        val bad = Fixtures.text("manifest.json").replaceFirst("\"methods\": {", "\"methods\": {\"onnx\": \"k1p1\", ")
        try {
            Manifest.parse(bad)
            throw AssertionError("accepted a method for a target the bucket has no artifact for")
        } catch (e: ManifestException) {
            assertTrue(e.message!!, e.message!!.contains("onnx") && e.message!!.contains("re-export"))
        }
    }

    @Test
    fun selectCutsThePaddedArraysToTheChosenBucket() {
        val m = Manifest.parse(Fixtures.text("manifest.json"))
        val cfg = m.tracker
        val cands = SlotBuckets.candidates(m, "executorch")
        val slot = cfg.memDim * cfg.featSize * cfg.featSize
        val memValid = FloatArray(cfg.memorySlots)
        val ptrValid = FloatArray(cfg.ptrSlots)
        for (i in 0 until 3) memValid[i] = 1f
        for (i in 0 until 3) ptrValid[i] = 1f
        val memFeats = FloatArray(cfg.memorySlots * slot) { it.toFloat() }
        val objPtrs = FloatArray(cfg.ptrSlots * cfg.dModel) { -it.toFloat() }
        val memTpos = IntArray(cfg.memorySlots) { it + 10 }
        val got = SlotBuckets.select(cands, cfg, memFeats, memTpos, memValid, objPtrs, ptrValid)
        assertEquals(4, got.bucket.memorySlots)
        assertEquals(4, got.bucket.ptrSlots)
        assertEquals(4 * slot, got.memFeats.size)
        assertEquals(memFeats[4 * slot - 1], got.memFeats.last())
        assertEquals(listOf(10, 11, 12, 13), got.memTpos.toList())
        assertEquals(4 * cfg.dModel, got.objPtrs.size)
        assertEquals(listOf(1f, 1f, 1f, 0f), got.ptrValid.toList())
        // Nothing valid (an initial conditioning frame): the smallest graph.
        val none = SlotBuckets.select(cands, cfg, memFeats, memTpos, FloatArray(cfg.memorySlots), objPtrs, FloatArray(cfg.ptrSlots))
        assertEquals(1, none.bucket.memorySlots)
    }
}
