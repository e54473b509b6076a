package etam.mobile.core

/**
 * One memory-attention graph: its slot counts, its artifact per target and, where the artifact is a
 * multi-method program (format 2: ExecuTorch buckets are methods of memory_attention.pte, sharing one
 * copy of the weights), the method per target that runs it (manifest.json).
 */
class SlotBucket(val memorySlots: Int, val ptrSlots: Int, val artifacts: Map<String, String>,
                 val methods: Map<String, String> = emptyMap()) {
    /** The method of artifacts[target] to execute: the named one, else the file's only graph, "forward". */
    fun method(target: String): String = methods[target] ?: "forward"

    override fun toString() = "[$memorySlots, $ptrSlots]"
}

/** Memory-attention inputs cut to one bucket's slot counts (valid slots come first). */
class BucketInputs(val bucket: SlotBucket, val memFeats: FloatArray, val memTpos: IntArray, val memValid: FloatArray,
                   val objPtrs: FloatArray, val ptrValid: FloatArray)

/**
 * Which memory-attention graph runs a call: the smallest one that holds every valid slot, so no
 * work is spent on empty slots (etam_mobile/contracts.py choose_slot_bucket, the same rule).
 *
 * The manifest lists the smaller graphs under stages.memory_attention.slot_buckets; the full graph
 * (capacities.memory_slots / ptr_slots, the stage's own artifacts) is the last candidate.
 */
object SlotBuckets {
    /**
     * Index into `buckets` for nMem valid memory and nPtr valid pointer slots: among buckets with
     * memorySlots >= nMem and ptrSlots >= nPtr the one with the fewest memory slots, then the fewest
     * pointer slots, then the earliest in the list; -1 when none fits.
     */
    fun choose(buckets: List<SlotBucket>, nMem: Int, nPtr: Int): Int {
        var best = -1
        for (i in buckets.indices) {
            val b = buckets[i]
            if (b.memorySlots < nMem || b.ptrSlots < nPtr) continue
            if (best < 0) { best = i; continue }
            val c = buckets[best]
            if (b.memorySlots < c.memorySlots || (b.memorySlots == c.memorySlots && b.ptrSlots < c.ptrSlots)) best = i
        }
        return best
    }

    /** stages.memory_attention.slot_buckets of a manifest (absent in older exports: none). */
    fun parse(memoryAttention: JsonObject, memorySlots: Int, ptrSlots: Int): List<SlotBucket> {
        if (!memoryAttention.has("slot_buckets")) return emptyList()
        return memoryAttention.objects("slot_buckets").map { b ->
            val k = b.int("memory_slots")
            val p = b.int("ptr_slots")
            if (k < 1 || k > memorySlots || p < 1 || p > ptrSlots) {
                throw ManifestException("${b.path}: slot bucket [$k, $p] is outside the capacities " +
                    "[$memorySlots, $ptrSlots]; re-export the folder")
            }
            val art = LinkedHashMap<String, String>()
            if (b.has("artifacts")) {
                val a = b.obj("artifacts")
                for (key in a.map.keys) art[key] = a.string(key)
            }
            val methods = LinkedHashMap<String, String>()
            if (b.has("methods")) {
                val m = b.obj("methods")
                for (key in m.map.keys) {
                    val name = m.string(key)
                    if (!art.containsKey(key) || name.isEmpty() || !name.all { it.isLetterOrDigit() || it == '_' }) {
                        throw ManifestException("${m.path}.$key: method '$name' of slot bucket [$k, $p] is not a method " +
                            "name of one of its artifacts; re-export the folder")
                    }
                    methods[key] = name
                }
            }
            SlotBucket(k, p, art, methods)
        }
    }

    /** The candidates for `target`: the listed buckets that have its artifact, then the full graph. */
    fun candidates(manifest: Manifest, target: String): List<SlotBucket> {
        val t = manifest.tracker
        val full = SlotBucket(t.memorySlots, t.ptrSlots, manifest.stage("memory_attention").artifacts)
        return manifest.slotBuckets.filter { it.artifacts.containsKey(target) } + full
    }

    /** Count the valid slots, choose, and cut the padded arrays (sized for the full graph). */
    fun select(candidates: List<SlotBucket>, cfg: TrackerConfig, memFeats: FloatArray, memTpos: IntArray,
               memValid: FloatArray, objPtrs: FloatArray, ptrValid: FloatArray): BucketInputs {
        val nMem = memValid.count { it != 0f }
        val nPtr = ptrValid.count { it != 0f }
        val i = choose(candidates, nMem, nPtr)
        if (i < 0) throw IllegalStateException("no memory-attention graph holds $nMem memories and $nPtr pointers")
        val b = candidates[i]
        for (j in b.memorySlots until memValid.size) check(memValid[j] == 0f) { "valid memory slots must come first" }
        for (j in b.ptrSlots until ptrValid.size) check(ptrValid[j] == 0f) { "valid pointer slots must come first" }
        val slot = cfg.memDim * cfg.featSize * cfg.featSize
        return BucketInputs(b, memFeats.copyOf(b.memorySlots * slot), memTpos.copyOf(b.memorySlots),
            memValid.copyOf(b.memorySlots), objPtrs.copyOf(b.ptrSlots * cfg.dModel), ptrValid.copyOf(b.ptrSlots))
    }
}
