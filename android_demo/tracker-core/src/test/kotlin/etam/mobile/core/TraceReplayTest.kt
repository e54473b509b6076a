package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

/**
 * Replays the Python runtime's conformance traces (scripts/make_traces.py).
 *
 * 1. Rules alone (etam_mobile/runtime/TRACE.md): the selection of every `track` record equals
 *    selectMemory on the bookkeeping the records imply; every mask decision equals choose().
 * 2. The whole Tracker: the trace's prompt/propagate script is run against a scripted
 *    StageRunner that returns the recorded IoUs, object scores and masks with the recorded
 *    stability counts, and tags every tensor with (object, frame) so the runner can check that
 *    each memory and pointer slot holds what the selection says. The Tracker must emit the
 *    same records, in the same order, with the same decisions.
 */
class TraceReplayTest {
    private fun sel(r: JsonObject): Selection {
        val s = r.obj("selection")
        return Selection(s.intList("mem_frames"), s.intList("mem_tpos"), s.intList("ptr_frames"))
    }

    @Test
    fun fixturesArePresent() {
        assertTrue(Fixtures.traceNames().size >= 3)
    }

    @Test
    fun rulesAloneReproduceEveryDecision() {
        var checked = 0
        for (name in Fixtures.traceNames()) {
            val doc = Fixtures.obj(name)
            val cfg = TrackerConfig.fromJson(doc.obj("manifest"))
            val numFrames = doc.int("num_frames")
            val singleSession = doc.objects("script").count { it.string("op") == "propagate" } == 1
            val cond = LinkedHashMap<Int, LinkedHashSet<Int>>()
            val nonCond = HashMap<Int, HashSet<Int>>()
            val pending = HashMap<Int, LinkedHashMap<Int, Boolean>>()
            for (r in doc.objects("records")) {
                val obj = r.int("obj_id")
                val frame = r.int("frame")
                // A mask prompt's output is the mask itself: no choice, pointer token 0.
                val choice = if (r.string("kind") == "mask") MaskChoice(-1, 0, false, 1.0)
                else Decisions.choose(r.floatArray("iou"), r.double("stability"), r.int("num_points"), cfg)
                assertEquals("${r.path} mask_index", r.int("mask_index"), choice.maskIndex)
                assertEquals("${r.path} ptr_index", r.int("ptr_index"), choice.ptrIndex)
                assertEquals("${r.path} multimask", r.bool("multimask"), choice.multimask)
                checked++
                if (!singleSession) continue
                if (r.string("kind") != "track") {
                    pending.getOrPut(obj) { LinkedHashMap() }[frame] = r.bool("is_init_cond")
                    continue
                }
                for ((o, p) in pending) {
                    for ((t, isCond) in p) (if (isCond) cond.getOrPut(o) { LinkedHashSet() } else nonCond.getOrPut(o) { HashSet() }).add(t)
                    for (t in cond[o] ?: LinkedHashSet<Int>()) nonCond[o]?.remove(t)
                }
                pending.clear()
                val got = MemoryRules.selectMemory(frame, (cond[obj] ?: LinkedHashSet<Int>()).toList(),
                    nonCond[obj] ?: HashSet<Int>(), numFrames, cfg)
                assertEquals("$name ${r.path}", sel(r), got)
                nonCond.getOrPut(obj) { HashSet() }.add(frame)
                checked++
            }
        }
        assertTrue(checked > 40)
    }

    /** Tags tensors so every slot can be traced back to the (object, frame) it came from. */
    private class ScriptedRunner(val cfg: TrackerConfig, val records: List<JsonObject>) : StageRunner {
        var next = 0
        val problems = ArrayList<String>()
        private val lastPtrIndex = HashMap<Int, Int>()
        private val featsSize = cfg.dModel * cfg.featSize * cfg.featSize
        private val memSize = cfg.memDim * cfg.featSize * cfg.featSize
        private val lr2 = cfg.lowResSize * cfg.lowResSize
        private val objOrder = records.map { it.int("obj_id") }.distinct()
        /** (object, frame) of prompt outputs whose values cannot name the object (mask prompts, no-object). */
        private val untagged = ArrayList<IntArray>()
        private var lastTrackUntagged = -1

        private fun check(ok: Boolean, msg: () -> String) {
            if (!ok && problems.size < 20) problems.add("record #$next: " + msg())
        }

        private fun current(): JsonObject {
            if (next >= records.size) throw AssertionError("the tracker made more decoder calls than the trace has records (${records.size})")
            return records[next]
        }

        override fun imageEncoder(image: FloatArray): FloatArray {
            val f = FloatArray(featsSize)
            f[0] = image[0]
            return f
        }

        override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                     objPtrs: FloatArray, ptrValid: FloatArray): FloatArray {
            val r = current()
            val obj = r.int("obj_id")
            val s = r.obj("selection")
            val mem = s.intList("mem_frames")
            val tpos = s.intList("mem_tpos")
            val ptr = s.intList("ptr_frames")
            check(feats[0].toInt() == r.int("frame")) { "features of frame ${feats[0]} instead of ${r.int("frame")}" }
            for (i in memValid.indices) {
                if (i < mem.size) {
                    check(memValid[i] == 1f && memTpos[i] == tpos[i]) { "memory slot $i: valid ${memValid[i]} tpos ${memTpos[i]}, want tpos ${tpos[i]}" }
                    val want = obj * 32 + mem[i]
                    check(memFeats[i * memSize] == want.toFloat() && memFeats[(i + 1) * memSize - 1] == want.toFloat()) {
                        "memory slot $i holds ${memFeats[i * memSize]}, want object $obj frame ${mem[i]} ($want)"
                    }
                } else {
                    check(memValid[i] == 0f && memFeats[i * memSize] == 0f) { "memory slot $i should be empty" }
                }
            }
            for (i in ptrValid.indices) {
                if (i < ptr.size) {
                    val k = lastPtrIndex[obj * 1000 + ptr[i]] ?: -1
                    val want = obj * 1000 + ptr[i] * 4 + k
                    check(ptrValid[i] == 1f && objPtrs[i * cfg.dModel] == want.toFloat()) {
                        "pointer slot $i holds ${objPtrs[i * cfg.dModel]} (valid ${ptrValid[i]}), want object $obj frame ${ptr[i]} token $k"
                    }
                } else {
                    check(ptrValid[i] == 0f && objPtrs[i * cfg.dModel] == 0f) { "pointer slot $i should be empty" }
                }
            }
            return feats.copyOf()
        }

        override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput {
            val r = current()
            val obj = r.int("obj_id")
            val frame = condFeats[0].toInt()
            check(frame == r.int("frame")) { "decoder on frame $frame, trace says ${r.int("frame")}" }
            val n = r.int("num_points")
            check(labels.count { it >= 0 } == n && labels[n] == Prompts.NOT_A_POINT) { "labels ${labels.toList()} for $n points" }
            val hasMask = r.bool("has_mask_input")
            check((hasMaskInput == 1f) == hasMask) { "has_mask_input $hasMaskInput, trace says $hasMask" }
            val isMask = r.string("kind") == "mask"
            if (isMask) {
                val want = r.double("mask_input_sum")
                val got = maskInput.fold(0.0) { a, v -> a + v }
                check(Math.abs(got - want) <= 1e-3 * Math.abs(want) + 1e-3) { "mask prompt's decoder input sums to $got, want $want" }
            } else if (hasMask) check(maskInput.max() == (1 + obj).toFloat()) { "mask input is not this object's previous mask" }
            val nameless = isMask || r.double("obj_score") <= 0.0
            if (r.string("kind") == "track") lastTrackUntagged = if (nameless) obj else -1
            else {
                lastTrackUntagged = -1
                if (nameless) untagged.add(intArrayOf(obj, frame))
            }
            val counts = r.intList("stab_counts")
            val big = (1 + obj).toFloat()
            val masks = FloatArray(4 * lr2)
            for (k in 0 until 4) for (i in 0 until lr2) {
                masks[k * lr2 + i] = if (i < counts[0]) big else if (i < counts[1]) 0f else -big
            }
            val ptrs = FloatArray(4 * cfg.dModel)
            for (k in 0 until 4) java.util.Arrays.fill(ptrs, k * cfg.dModel, (k + 1) * cfg.dModel, (obj * 1000 + frame * 4 + k).toFloat())
            lastPtrIndex[obj * 1000 + frame] = r.int("ptr_index")
            next++
            return DecoderOutput(masks, r.floatArray("iou"), ptrs, r.double("obj_score").toFloat())
        }

        override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float): FloatArray {
            val frame = feats[0].toInt()
            var peak = 0f
            for (v in mask) peak = maxOf(peak, Math.abs(v))
            var obj = peak.toInt() - 1
            if (peak >= 9.5f) {  // a mask prompt's +-10 or the no-object -1024: name it from the decoder calls
                val noObject = mask.all { it == cfg.noObjScore }
                check(noObject || peak <= 10.001f) { "memory of frame $frame encodes a mask that is neither tagged, a mask prompt nor empty" }
                if (lastTrackUntagged >= 0) {
                    obj = lastTrackUntagged
                } else {
                    val hit = untagged.filter { it[1] == frame }.minBy { objOrder.indexOf(it[0]) }
                    check(hit != null) { "memory of frame $frame: no mask prompt or absent object there to encode" }
                    obj = hit?.get(0) ?: 0
                    untagged.remove(hit)
                }
                lastTrackUntagged = -1
            }
            return FloatArray(memSize) { (obj * 32 + frame).toFloat() }
        }
    }

    private class TaggedFrames(size: Int) : FrameProvider {
        private val n = 3 * size * size
        override fun modelInput(frameIdx: Int): FloatArray {
            val a = FloatArray(n)
            a[0] = frameIdx.toFloat()
            return a
        }
    }

    private fun prompt(op: JsonObject): Prompt {
        val pts = if (op.has("points")) op.list("points").map { p ->
            val l = p as List<*>
            floatArrayOf((l[0] as Double).toFloat(), (l[1] as Double).toFloat())
        } else emptyList()
        return Prompt(pts, if (op.has("labels")) op.intList("labels") else emptyList(), if (op.has("box")) op.floatArray("box") else null)
    }

    @Test
    fun trackerReplaysEveryTrace() {
        for (name in Fixtures.traceNames()) {
            val doc = Fixtures.obj(name)
            val cfg = TrackerConfig.fromJson(doc.obj("manifest"))
            val records = doc.objects("records")
            val size = doc.intList("video_size")
            val runner = ScriptedRunner(cfg, records)
            val trace = ArrayList<TraceRecord>()
            val tracker = Tracker(runner, cfg, doc.int("num_frames"), size[0], size[1], TaggedFrames(cfg.imageSize), 8, trace)
            var frames = 0
            for (op in doc.objects("script")) {
                if (op.string("op") == "prompt" && op.has("mask_rle")) {
                    val mask = BooleanArray(size[0] * size[1])
                    for (run in op.list("mask_rle")) {
                        val (start, len) = (run as List<*>).map { (it as Number).toInt() }
                        for (i in start until start + len) mask[i] = true
                    }
                    val consts = MaskPromptConstants.fromManifest(doc.obj("manifest")) ?: throw AssertionError("$name: no mask_prompt in manifest")
                    val low = tracker.addMask(op.int("frame"), op.int("obj_id"), mask, consts)
                    assertEquals(cfg.lowResSize * cfg.lowResSize, low.size)
                } else if (op.string("op") == "prompt") {
                    val low = tracker.addPrompt(op.int("frame"), op.int("obj_id"), prompt(op))
                    assertEquals(cfg.lowResSize * cfg.lowResSize, low.size)
                } else {
                    tracker.propagate(if (op.has("start")) op.int("start") else null) { r ->
                        assertEquals(tracker.objIds.size * cfg.lowResSize * cfg.lowResSize, r.lowRes.size)
                        frames++
                        true
                    }
                }
            }
            assertTrue("$name: ${runner.problems.joinToString("\n")}", runner.problems.isEmpty())
            assertEquals("$name: number of records", records.size, trace.size)
            assertEquals(doc.intList("obj_ids"), tracker.objIds.toList())
            for ((i, want) in records.withIndex()) {
                val got = trace[i]
                val where = "$name record #$i"
                assertEquals(where, want.int("frame"), got.frame)
                assertEquals(where, want.int("obj_id"), got.objId)
                assertEquals(where, want.string("kind"), got.kind)
                assertEquals(where, want.bool("is_init_cond"), got.isInitCond)
                assertEquals(where, sel(want), got.selection)
                assertEquals(where, want.int("num_points"), got.numPoints)
                assertEquals(where, want.bool("multimask"), got.multimask)
                assertEquals(where, want.int("mask_index"), got.maskIndex)
                assertEquals(where, want.int("ptr_index"), got.ptrIndex)
                assertEquals(where, want.double("stability"), got.stability, 1e-5)
                assertEquals(where, want.double("obj_score"), got.objScore.toDouble(), 1e-5)
                // Mask prompts (output = the resized mask) and absent objects (-1024 everywhere)
                // do not depend on the scripted decoder masks: their areas and sums must match.
                if (want.string("kind") == "mask" || want.double("obj_score") <= 0.0) {
                    assertEquals("$where mask_area", want.int("mask_area"), got.maskArea)
                    assertEquals("$where mask_sum", want.double("mask_sum"), got.maskSum, 1e-3 * Math.abs(want.double("mask_sum")) + 1e-3)
                }
            }
            assertTrue(frames > 0)
        }
    }

    @Test
    fun newTracesCoverMaskPromptsAndAbsentObjects() {
        val records = Fixtures.traceNames().flatMap { Fixtures.obj(it).objects("records") }
        assertTrue("a mask prompt starting an object", records.any { it.string("kind") == "mask" && it.bool("is_init_cond") })
        assertTrue("a mask prompt on a tracked frame", records.any { it.string("kind") == "mask" && !it.bool("is_init_cond") })
        assertTrue("an absent object while tracking", records.any { it.string("kind") == "track" && it.double("obj_score") <= 0.0 })
        assertTrue("an absent object on a click prompt", records.any { it.string("kind") == "prompt" && it.double("obj_score") <= 0.0 })
        assertTrue("an object that comes back", records.any { it.string("kind") == "track" && it.double("obj_score") > 0.0 &&
            records.any { o -> o.int("obj_id") == it.int("obj_id") && o.int("frame") < it.int("frame") && o.double("obj_score") <= 0.0 } })
    }
}
