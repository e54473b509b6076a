package etam.mobile.core

/** Which stored frames feed the memory attention of one frame, in upstream token order. */
class Selection(val memFrames: List<Int>, val memTpos: List<Int>, val ptrFrames: List<Int>) {
    override fun toString() = "Selection(mem=$memFrames, tpos=$memTpos, ptr=$ptrFrames)"
    override fun equals(other: Any?) = other is Selection && other.memFrames == memFrames &&
        other.memTpos == memTpos && other.ptrFrames == ptrFrames
    override fun hashCode() = memFrames.hashCode() * 31 + ptrFrames.hashCode()
}

/** Upstream's selection rules as pure functions of frame indices (etam_mobile/runtime/memory_bank.py). */
object MemoryRules {
    /** Closest conditioning frame before, closest at-or-after, then the nearest others up to maxNum. */
    fun selectClosestCondFrames(frameIdx: Int, condFrames: List<Int>, maxNum: Int): Pair<List<Int>, List<Int>> {
        if (maxNum < 0 || condFrames.size <= maxNum) return Pair(ArrayList(condFrames), emptyList())
        if (maxNum < 2) throw IllegalArgumentException("at least 2 conditioning-frame slots are needed")
        val selected = ArrayList<Int>()
        val before = condFrames.filter { it < frameIdx }
        val after = condFrames.filter { it >= frameIdx }
        if (before.isNotEmpty()) selected.add(before.max()!!)
        if (after.isNotEmpty()) selected.add(after.min()!!)
        val rest = condFrames.filter { it !in selected }.sortedBy { Math.abs(it - frameIdx) }
        for (t in rest) {
            if (selected.size >= maxNum) break
            selected.add(t)
        }
        return Pair(selected, condFrames.filter { it !in selected })
    }

    /** Memory and pointer slots for tracking `frameIdx` forward (memory stride 1, past pointers only). */
    fun selectMemory(frameIdx: Int, condFrames: List<Int>, nonCondFrames: Set<Int>, numFrames: Int, cfg: TrackerConfig): Selection {
        val (selected, unselected) = selectClosestCondFrames(frameIdx, condFrames, cfg.condFrames)
        val unsel = unselected.toHashSet()
        val memFrames = ArrayList<Int>(selected)
        val memTpos = ArrayList<Int>()
        for (i in selected.indices) memTpos.add(cfg.numMaskmem - 1)
        for (tPos in 1 until cfg.numMaskmem) {
            val tRel = cfg.numMaskmem - tPos
            val prev = frameIdx - tRel
            if (prev in nonCondFrames || prev in unsel) {
                memFrames.add(prev)
                memTpos.add(tRel - 1)
            }
        }
        val ptrFrames = ArrayList<Int>(selected.filter { it <= frameIdx })
        val maxPtrs = minOf(numFrames, cfg.maxObjPtrs)
        for (tDiff in 1 until maxPtrs) {
            val t = frameIdx - tDiff
            if (t < 0 || t >= numFrames) break
            if (t in nonCondFrames || t in unsel) ptrFrames.add(t)
        }
        return Selection(memFrames, memTpos, ptrFrames)
    }

    /** Round a float to bfloat16 precision (nearest even), kept as float: upstream stores memories so. */
    fun roundToBf16(x: Float): Float {
        if (x.isNaN()) return x
        val bits = x.toRawBits()
        val rounding = 0x7FFF + ((bits ushr 16) and 1)
        return Float.fromBits((bits + rounding) and 0xFFFF0000.toInt())
    }

    fun roundToBf16InPlace(a: FloatArray) {
        for (i in a.indices) a[i] = roundToBf16(a[i])
    }
}

/** What one frame leaves behind for one object. */
class FrameMemory(val lowRes: FloatArray, val objPtr: FloatArray, val objScore: Float) {
    var memFeats: FloatArray? = null
}

/** Per-object tracking state: conditioning and recent frame outputs plus bookkeeping. */
class ObjectBank(val objId: Int) {
    val cond = LinkedHashMap<Int, FrameMemory>()
    val nonCond = LinkedHashMap<Int, FrameMemory>()
    val tracked = HashSet<Int>()
    /** Frames whose mask came from a correction click (kept when the app re-tracks). */
    val corrections = HashSet<Int>()
    /** frame -> (output, becomes a conditioning frame) awaiting memory encoding. */
    val pending = LinkedHashMap<Int, Pair<FrameMemory, Boolean>>()

    /** Most recent output on a frame, as upstream looks it up for correction clicks. */
    fun lookup(frameIdx: Int): FrameMemory? = pending[frameIdx]?.first ?: cond[frameIdx] ?: nonCond[frameIdx]

    fun memoryOf(frameIdx: Int): FrameMemory = cond[frameIdx] ?: nonCond[frameIdx]
        ?: throw IllegalStateException("object $objId has no memory for frame $frameIdx")

    /** Drop non-conditioning frames that forward tracking past `frameIdx` can no longer reach. */
    fun prune(frameIdx: Int, cfg: TrackerConfig) {
        val keep = maxOf(cfg.numMaskmem - 1, cfg.maxObjPtrs - 1)
        val drop = nonCond.keys.filter { it <= frameIdx - keep }
        for (t in drop) nonCond.remove(t)
    }
}

/** Padded memory-attention inputs, allocated once and refilled per call. */
class MemoryInputs(cfg: TrackerConfig) {
    val slotSize = cfg.memDim * cfg.featSize * cfg.featSize
    val dModel = cfg.dModel
    val memFeats = FloatArray(cfg.memorySlots * slotSize)
    val memTpos = IntArray(cfg.memorySlots)
    val memValid = FloatArray(cfg.memorySlots)
    val objPtrs = FloatArray(cfg.ptrSlots * cfg.dModel)
    val ptrValid = FloatArray(cfg.ptrSlots)

    /** Valid entries first, the rest zero and marked invalid. */
    fun fill(bank: ObjectBank, sel: Selection) {
        if (sel.memFrames.size > memTpos.size || sel.ptrFrames.size > ptrValid.size) {
            throw IllegalStateException("memory selection exceeds capacity (${sel.memFrames.size}>${memTpos.size} or ${sel.ptrFrames.size}>${ptrValid.size})")
        }
        java.util.Arrays.fill(memFeats, 0f)
        java.util.Arrays.fill(memTpos, 0)
        java.util.Arrays.fill(memValid, 0f)
        java.util.Arrays.fill(objPtrs, 0f)
        java.util.Arrays.fill(ptrValid, 0f)
        for (i in sel.memFrames.indices) {
            val feats = bank.memoryOf(sel.memFrames[i]).memFeats
                ?: throw IllegalStateException("frame ${sel.memFrames[i]} has no encoded memory")
            System.arraycopy(feats, 0, memFeats, i * slotSize, slotSize)
            memTpos[i] = sel.memTpos[i]
            memValid[i] = 1f
        }
        for (i in sel.ptrFrames.indices) {
            System.arraycopy(bank.memoryOf(sel.ptrFrames[i]).objPtr, 0, objPtrs, i * dModel, dModel)
            ptrValid[i] = 1f
        }
    }
}
