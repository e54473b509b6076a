package etam.mobile.core

/** The four stage graphs; flat float/int arrays in the shapes manifest.json gives. */
interface StageRunner {
    /** image (1,3,S,S) -> feats (1,C,h,w) */
    fun imageEncoder(image: FloatArray): FloatArray

    /** -> cond_feats (1,C,h,w) */
    fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                        objPtrs: FloatArray, ptrValid: FloatArray): FloatArray

    fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput

    /** feats, mask (1,1,lr,lr), binarize flag -> mem_feats (1,M,h,w) */
    fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float): FloatArray
}

/** masks (1,4,lr,lr), iou (1,4), obj_ptr (1,4,C), obj_score. */
class DecoderOutput(val masks: FloatArray, val iou: FloatArray, val objPtr: FloatArray, val objScore: Float)

/** Model input (1,3,S,S) of frame i (preprocessed). */
interface FrameProvider {
    fun modelInput(frameIdx: Int): FloatArray
}

/** One conformance-trace record (etam_mobile/runtime/TRACE.md). */
class TraceRecord(
    val frame: Int, val objId: Int, val kind: String, val isInitCond: Boolean, val selection: Selection,
    val numPoints: Int, val multimask: Boolean, val maskIndex: Int, val ptrIndex: Int, val iou: FloatArray,
    val stability: Double, val objScore: Float, val maskArea: Int, val maskSum: Double
) {
    fun toMap(): Map<String, Any?> = linkedMapOf(
        "frame" to frame, "obj_id" to objId, "kind" to kind, "is_init_cond" to isInitCond,
        "selection" to linkedMapOf("mem_frames" to selection.memFrames, "mem_tpos" to selection.memTpos, "ptr_frames" to selection.ptrFrames),
        "num_points" to numPoints, "multimask" to multimask, "mask_index" to maskIndex, "ptr_index" to ptrIndex,
        "iou" to iou.map { it.toDouble() }, "stability" to stability, "obj_score" to objScore.toDouble(),
        "mask_area" to maskArea, "mask_sum" to maskSum
    )
}

/** Low-res mask logits (objects x lr x lr) of one frame, in `objIds` order. */
class FrameResult(val frameIdx: Int, val objIds: IntArray, val lowRes: FloatArray, val lowResSize: Int)

/**
 * The tracker state machine of etam_mobile/runtime/tracker.py over any StageRunner.
 *
 * Objects are independent; `addPrompt` on any frame (corrections included), then
 * `beginPropagation()` and `trackFrame(i)` for each following frame (or `propagate`).
 * `numFrames` may be Int.MAX_VALUE for a live camera.
 *
 * `propagate()` / `beginPropagation()` follow upstream: tracking restarts at the first
 * conditioning frame and a correction on an already tracked frame is tracked over again (so
 * its mask is replaced). Apps call `resumeStart()` and `beginPropagation(start, keepCorrections = true)`
 * instead: corrected frames keep the corrected mask and tracking continues after them.
 */
class Tracker(
    val runner: StageRunner,
    val cfg: TrackerConfig,
    val numFrames: Int,
    val videoWidth: Int,
    val videoHeight: Int,
    val frames: FrameProvider,
    val maxObjects: Int = 8,
    val trace: MutableList<TraceRecord>? = null
) {
    val objects = LinkedHashMap<Int, ObjectBank>()
    private val featCache = HashMap<Int, FloatArray>()
    private val memInputs = MemoryInputs(cfg)
    private val lr2 = cfg.lowResSize * cfg.lowResSize
    private val zeroMask = FloatArray(lr2)
    private val trackingPrompt = Prompts.build(null, videoWidth, videoHeight, cfg.imageSize, cfg.points)

    /**
     * Keep every tracked frame's memory instead of only the window forward tracking reads
     * (results are the same). Costs memory per frame and object, and lets `resumeStart()`
     * continue right after a correction anywhere in a video instead of only near the end.
     */
    var keepAllMemories = false
    /** Frames prompted (per kind) since the last beginPropagation. */
    private val pendingCorrections = HashSet<Int>()
    private val pendingInitFrames = HashSet<Int>()
    private var keepCorrections = false

    val objIds: IntArray get() = objects.keys.toIntArray()

    private fun features(frameIdx: Int): FloatArray =
        featCache[frameIdx] ?: runner.imageEncoder(frames.modelInput(frameIdx)).also { featCache[frameIdx] = it }

    private fun condition(bank: ObjectBank, frameIdx: Int, feats: FloatArray, isInitCond: Boolean): Pair<FloatArray, Selection> {
        val sel = if (isInitCond) MemoryRules.selectMemory(frameIdx, emptyList(), emptySet(), numFrames, cfg)
        else MemoryRules.selectMemory(frameIdx, bank.cond.keys.toList(), bank.nonCond.keys, numFrames, cfg)
        memInputs.fill(bank, sel)
        val m = memInputs
        return Pair(runner.memoryAttention(feats, m.memFeats, m.memTpos, m.memValid, m.objPtrs, m.ptrValid), sel)
    }

    private class Decoded(val mem: FrameMemory, val choice: MaskChoice, val iou: FloatArray)

    private fun decode(condFeats: FloatArray, prompt: PromptTensors, maskInput: FloatArray?): Decoded {
        val out = runner.maskDecoder(condFeats, prompt.points, prompt.labels, maskInput ?: zeroMask, if (maskInput == null) 0f else 1f)
        val choice = Decisions.chooseMask(out.masks, out.iou, prompt.numPoints, cfg)
        val low = out.masks.copyOfRange(choice.maskIndex * lr2, (choice.maskIndex + 1) * lr2)
        Decisions.applyObjectScore(low, out.objScore, cfg)
        val c = cfg.dModel
        val ptr = out.objPtr.copyOfRange(choice.ptrIndex * c, (choice.ptrIndex + 1) * c)
        return Decoded(FrameMemory(low, ptr, out.objScore), choice, out.iou.copyOf())
    }

    private fun encodeMemory(mem: FrameMemory, feats: FloatArray, binarize: Boolean) {
        val mf = runner.memoryEncoder(feats, mem.lowRes, if (binarize) 1f else 0f).copyOf()
        MemoryRules.roundToBf16InPlace(mf)
        mem.memFeats = mf
    }

    private fun record(frameIdx: Int, bank: ObjectBank, kind: String, isInit: Boolean, sel: Selection, numPoints: Int, d: Decoded) {
        val t = trace ?: return
        var area = 0
        var sum = 0.0
        for (v in d.mem.lowRes) {
            if (v > 0f) area++
            sum += minOf(maxOf(v, -32f), 32f).toDouble()
        }
        t.add(TraceRecord(frameIdx, bank.objId, kind, isInit, sel, numPoints, d.choice.multimask, d.choice.maskIndex,
            d.choice.ptrIndex, d.iou, d.choice.stability, d.mem.objScore, area, sum))
    }

    /**
     * Clicks and/or a box for one object on one frame (upstream add_new_points_or_box).
     * Returns that object's low-res mask logits (lr x lr) on the frame.
     */
    fun addPrompt(frameIdx: Int, objId: Int, prompt: Prompt): FloatArray {
        Prompts.validate(frameIdx, prompt, numFrames, videoWidth, videoHeight)
        if (!objects.containsKey(objId) && objects.size >= maxObjects) {
            throw PromptException("this app tracks at most $maxObjects objects; clear one before adding another")
        }
        val tensors = Prompts.build(prompt, videoWidth, videoHeight, cfg.imageSize, cfg.points)
        val bank = objects.getOrPut(objId) { ObjectBank(objId) }
        val isInit = frameIdx !in bank.tracked
        val prev = bank.lookup(frameIdx)
        val maskInput = if (prev == null) null else FloatArray(lr2) { minOf(maxOf(prev.lowRes[it], -cfg.maskInputClamp), cfg.maskInputClamp) }
        val feats = features(frameIdx)
        val (condFeats, sel) = condition(bank, frameIdx, feats, isInit)
        val d = decode(condFeats, tensors, maskInput)
        // A frame seen for the first time becomes a conditioning frame; a correction on an
        // already tracked frame stays non-conditioning (add_all_frames_to_correct_as_cond=False).
        bank.pending[frameIdx] = Pair(d.mem, isInit)
        if (isInit) {
            pendingInitFrames.add(frameIdx)
        } else {
            pendingCorrections.add(frameIdx)
            bank.corrections.add(frameIdx)
        }
        record(frameIdx, bank, "prompt", isInit, sel, tensors.numPoints, d)
        return d.mem.lowRes
    }

    /**
     * A binary mask (videoHeight x videoWidth, row-major) for one object on one frame (upstream
     * add_new_mask): the mask is the frame's output with score `c.objectScore`; the decoder runs on
     * the raw features (no memory) with the downsampled mask only for the object pointer (token 0).
     */
    fun addMask(frameIdx: Int, objId: Int, mask: BooleanArray, c: MaskPromptConstants): FloatArray {
        if (frameIdx < 0 || frameIdx >= numFrames) throw PromptException("frame $frameIdx is outside the video (frames 0..${numFrames - 1})")
        if (!objects.containsKey(objId) && objects.size >= maxObjects) {
            throw PromptException("this app tracks at most $maxObjects objects; clear one before adding another")
        }
        val prepared = MaskPrompt.prepare(mask, videoWidth, videoHeight, cfg, c)
        val bank = objects.getOrPut(objId) { ObjectBank(objId) }
        val isInit = frameIdx !in bank.tracked
        val out = runner.maskDecoder(features(frameIdx), trackingPrompt.points, trackingPrompt.labels, prepared.decoderInput, 1f)
        val mem = FrameMemory(prepared.lowRes, out.objPtr.copyOfRange(0, cfg.dModel), c.objectScore)
        bank.pending[frameIdx] = Pair(mem, isInit)
        val choice = MaskChoice(-1, 0, false, 1.0)
        record(frameIdx, bank, "mask", isInit, Selection(emptyList(), emptyList(), emptyList()), 0, Decoded(mem, choice, out.iou.copyOf()))
        return mem.lowRes
    }

    /** Forget an object entirely (the UI's "clear"). */
    fun removeObject(objId: Int) {
        objects.remove(objId)
    }

    private fun firstCondFrame(): Int? {
        var first: Int? = null
        for (bank in objects.values) for (t in bank.cond.keys) if (first == null || t < first) first = t
        return first
    }

    /**
     * Where tracking must restart so that the prompts given since the last propagation take
     * effect and nothing already tracked changes: just after the earliest correction, when every
     * prompt was a correction and each object still holds the memory window before that frame
     * (memory flows forward only, so earlier frames keep their results). Otherwise (a new
     * conditioning frame, which every frame's memory attention sees, or a pruned window) the
     * first conditioning frame, as upstream. null when nothing was prompted.
     */
    fun resumeStart(): Int? {
        if (pendingInitFrames.isEmpty() && pendingCorrections.isEmpty()) return null
        val firstCond = firstCondFrame() ?: pendingInitFrames.min() ?: pendingCorrections.min()!!
        if (pendingInitFrames.isNotEmpty()) return firstCond
        val f = pendingCorrections.min()!!
        val window = maxOf(cfg.numMaskmem - 1, cfg.maxObjPtrs - 1)
        for (bank in objects.values) {
            // Tracking f + 1 reads memories of f - numMaskmem + 2 ... f and pointers back to f + 1 - window.
            for (t in maxOf(firstCond, f + 1 - window) until f) {
                if (t in bank.tracked && bank.lookup(t) == null) return firstCond
            }
        }
        return f + 1
    }

    /**
     * Encode the memories of prompted frames and file them; returns the first frame to track.
     * `keepCorrections`: a corrected frame reached again keeps its corrected mask and memory
     * (the app's behaviour) instead of being tracked over (upstream's).
     */
    fun beginPropagation(start: Int? = null, keepCorrections: Boolean = false): Int {
        if (objects.isEmpty()) throw PromptException("no prompts were given for any object; tap an object first")
        for (bank in objects.values) {
            for ((frameIdx, entry) in bank.pending) {
                encodeMemory(entry.first, features(frameIdx), true)
                if (entry.second) bank.cond[frameIdx] = entry.first else bank.nonCond[frameIdx] = entry.first
            }
            bank.pending.clear()
            for (t in bank.cond.keys) bank.nonCond.remove(t)
        }
        featCache.clear()
        pendingCorrections.clear()
        pendingInitFrames.clear()
        this.keepCorrections = keepCorrections
        if (start != null) return start
        return firstCondFrame()
            ?: throw PromptException("no object has a first prompt; tap the object on a frame it has not been tracked on")
    }

    /** Track every object on `frameIdx` (call in increasing frame order after beginPropagation). */
    fun trackFrame(frameIdx: Int): FrameResult {
        var feats: FloatArray? = null
        val ids = objIds
        val out = FloatArray(ids.size * lr2)
        for ((o, bank) in objects.values.withIndex()) {
            val condMem = bank.cond[frameIdx]
            val corrected = if (keepCorrections && frameIdx in bank.corrections) bank.nonCond[frameIdx] else null
            val mem: FrameMemory
            if (condMem != null) {
                mem = condMem
            } else if (corrected != null) {
                mem = corrected
            } else {
                val f = feats ?: features(frameIdx)
                feats = f
                val (condFeats, sel) = condition(bank, frameIdx, f, false)
                val d = decode(condFeats, trackingPrompt, null)
                encodeMemory(d.mem, f, false)
                bank.nonCond[frameIdx] = d.mem
                record(frameIdx, bank, "track", false, sel, 0, d)
                mem = d.mem
            }
            bank.tracked.add(frameIdx)
            if (!keepAllMemories) bank.prune(frameIdx, cfg)
            System.arraycopy(mem.lowRes, 0, out, o * lr2, lr2)
        }
        featCache.clear()
        return FrameResult(frameIdx, ids, out, cfg.lowResSize)
    }

    /** Track to `end` (default: the last frame); `onFrame` returns false to stop early. */
    fun propagate(start: Int? = null, end: Int = numFrames, keepCorrections: Boolean = false,
                  onFrame: (FrameResult) -> Boolean = { true }) {
        val first = beginPropagation(start, keepCorrections)
        for (i in first until end) {
            if (!onFrame(trackFrame(i))) break
        }
    }
}
