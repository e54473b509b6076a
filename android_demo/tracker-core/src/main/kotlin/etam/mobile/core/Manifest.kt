package etam.mobile.core

import java.io.File

/** An export folder the app cannot use; the message says what is wrong and how to fix it. */
class ManifestException(message: String) : RuntimeException(message)

class TensorSpec(val name: String, val shape: IntArray, val dtype: String) {
    val count: Int get() = shape.fold(1) { a, b -> a * b }
    override fun toString() = "$name${shape.joinToString(",", "(", ")")}:$dtype"
}

class StageSpec(val name: String, val inputs: List<TensorSpec>, val outputs: List<TensorSpec>, val artifacts: Map<String, String>) {
    fun input(name: String): TensorSpec = inputs.firstOrNull { it.name == name }
        ?: throw ManifestException("stage ${this.name} has no input '$name'")
    fun output(name: String): TensorSpec = outputs.firstOrNull { it.name == name }
        ?: throw ManifestException("stage ${this.name} has no output '$name'")
}

/**
 * Every constant the tracker state machine needs, read from manifest.json (or from the
 * `manifest` block of a conformance trace, which uses the same keys). Nothing here is hard-coded.
 */
class TrackerConfig(
    val configName: String,
    val imageSize: Int,
    val points: Int,
    val condFrames: Int,
    val memorySlots: Int,
    val ptrSlots: Int,
    val recentFrames: Int,
    val featSize: Int,
    val lowResSize: Int,
    val dModel: Int,
    val memDim: Int,
    val numMaskmem: Int,
    val maxObjPtrs: Int,
    val multimaskMinPt: Int,
    val multimaskMaxPt: Int,
    val stabilityDelta: Double,
    val stabilityThresh: Double,
    val noObjScore: Float,
    val maskInputClamp: Float
) {
    companion object {
        /** From an object holding `config`, `image_size`, `capacities` and `postprocessing`. */
        fun fromJson(root: JsonObject): TrackerConfig {
            val caps = root.obj("capacities")
            val post = root.obj("postprocessing")
            val cfg = TrackerConfig(
                root.string("config"), root.int("image_size"),
                caps.int("points"), caps.int("cond_frames"), caps.int("memory_slots"), caps.int("ptr_slots"),
                caps.int("recent_frames"),
                post.int("feat_size"), post.int("low_res_size"), post.int("d_model"), post.int("mem_dim"),
                post.int("num_maskmem"), post.int("max_obj_ptrs_in_encoder"),
                post.int("multimask_min_pt_num"), post.int("multimask_max_pt_num"),
                post.double("dynamic_multimask_stability_delta"), post.double("dynamic_multimask_stability_thresh"),
                post.double("no_obj_score").toFloat(), post.double("mask_input_clamp").toFloat()
            )
            cfg.check(root.path)
            return cfg
        }
    }

    private fun check(where: String) {
        fun bad(msg: String): Nothing = throw ManifestException("$where: $msg; re-export the folder")
        if (imageSize <= 0 || featSize <= 0 || lowResSize <= 0) bad("image sizes must be positive")
        if (condFrames < 2) bad("capacities.cond_frames must be at least 2 (got $condFrames)")
        if (memorySlots != condFrames + numMaskmem - 1) bad("capacities.memory_slots $memorySlots != cond_frames + num_maskmem - 1")
        if (ptrSlots != condFrames + maxObjPtrs - 1) bad("capacities.ptr_slots $ptrSlots != cond_frames + max_obj_ptrs_in_encoder - 1")
        if (points < 2) bad("capacities.points must be at least 2 (got $points)")
    }
}

/** manifest.json of an export folder: the one contract shared with the Python exporter. */
class Manifest(
    val formatVersion: Int,
    val config: String,
    val precision: String,
    val imageSize: Int,
    val mean: FloatArray,
    val std: FloatArray,
    val scale: Double,
    val tracker: TrackerConfig,
    val stages: Map<String, StageSpec>,
    val checksums: Map<String, String>,
    val weightsDescription: String,
    /** Package -> version that wrote the artifacts (`artifact_producers`, else `tool.versions`). */
    val producers: Map<String, String> = emptyMap(),
    /** Smaller memory-attention graphs (SlotBuckets.kt); empty for exports without them. */
    val slotBuckets: List<SlotBucket> = emptyList(),
    /** The mask-prompt constants (`mask_prompt`); null for exports made before mask prompts. */
    val maskPrompt: MaskPromptConstants? = null
) {
    /**
     * Refuse artifacts written by a `pkg` version this app's runtime does not read, with the fix.
     * `supported` are version prefixes ("1.4." accepts 1.4.0 and 1.4.1).
     */
    fun requireProducer(pkg: String, supported: List<String>, install: String, runtime: String) {
        val accepted = supported.joinToString(" or ") { it + "x" }
        val v = producers[pkg] ?: throw ManifestException("manifest.json does not record which $pkg version wrote the models, " +
            "and $runtime only reads models from $pkg $accepted; re-export with this etam-mobile and `pip install $pkg==$install`")
        if (supported.none { ("$v.").startsWith(it) }) {
            throw ManifestException("the models were written by $pkg $v, but $runtime only reads models from $pkg $accepted " +
                "(ExecuTorch promises no forward compatibility of .pte files); re-export with `pip install $pkg==$install`")
        }
    }

    /** Targets (executorch, coreml, ...) for which every stage has an artifact. */
    val completeTargets: List<String>
        get() = stages.values.first().artifacts.keys.filter { t -> stages.values.all { it.artifacts.containsKey(t) } }

    fun stage(name: String): StageSpec = stages[name] ?: throw ManifestException("manifest has no stage $name")

    /** Relative path of a stage's artifact for `target`, or a clear error naming the fix. */
    fun artifact(stage: String, target: String): String = stage(stage).artifacts[target]
        ?: throw ManifestException("the export has no $target artifact for $stage (it has: " +
            "${completeTargets.joinToString().ifEmpty { "none" }}); re-export with --targets $target")

    companion object {
        /** Newest format written by the exporter; 2 lets a slot bucket be a method of a shared program. */
        const val FORMAT_VERSION = 2
        /** Formats this app reads: 1 (one file per slot bucket) and 2 (SlotBucket.methods). */
        val READABLE_FORMAT_VERSIONS = listOf(1, 2)
        const val FILE_NAME = "manifest.json"
        val STAGES = listOf("image_encoder", "memory_attention", "mask_decoder", "memory_encoder")

        /** Ordered input and output names of each stage (etam_mobile/contracts.py). */
        val CONTRACT: Map<String, Pair<List<String>, List<String>>> = mapOf(
            "image_encoder" to Pair(listOf("image"), listOf("feats")),
            "memory_attention" to Pair(listOf("feats", "mem_feats", "mem_tpos", "mem_valid", "obj_ptrs", "ptr_valid"), listOf("cond_feats")),
            "mask_decoder" to Pair(listOf("cond_feats", "points", "labels", "mask_input", "has_mask_input"), listOf("masks", "iou", "obj_ptr", "obj_score")),
            "memory_encoder" to Pair(listOf("feats", "mask", "binarize"), listOf("mem_feats"))
        )

        /** Read `folder/manifest.json`; every problem becomes a ManifestException with a fix. */
        fun load(folder: File): Manifest {
            if (!folder.isDirectory) throw ManifestException("export folder $folder does not exist; copy the folder written by `etam-mobile export` there")
            val file = File(folder, FILE_NAME)
            if (!file.isFile) throw ManifestException("$folder has no $FILE_NAME: not an export folder (or an interrupted copy); copy the whole export folder again")
            return parse(file.readText(), file.path)
        }

        fun parse(text: String, source: String = FILE_NAME): Manifest {
            val root = try {
                Json.parseObject(text, source)
            } catch (e: JsonException) {
                throw ManifestException("$source is not valid JSON (${e.message}); copy the export folder again")
            }
            val version = root.map["format_version"]
            if (READABLE_FORMAT_VERSIONS.none { version == it.toDouble() }) {
                val shown = if (version is Double && version == Math.rint(version)) version.toLong().toString() else version.toString()
                throw ManifestException("$source has format_version $shown, this app reads " +
                    "${READABLE_FORMAT_VERSIONS.joinToString(" and ")}; " +
                    "re-export with the etam-mobile version that matches this app")
            }
            try {
                return build(root, source)
            } catch (e: JsonException) {
                throw ManifestException("${e.message}; re-export the folder")
            }
        }

        private fun build(root: JsonObject, source: String): Manifest {
            for (key in listOf("config", "capacities", "stages", "checksums", "weights")) {
                if (!root.has(key)) throw ManifestException("$source lacks '$key'; re-export the folder")
            }
            val tracker = TrackerConfig.fromJson(root)
            val pre = root.obj("preprocessing")
            val mean = pre.floatArray("mean")
            val std = pre.floatArray("std")
            if (mean.size != 3 || std.size != 3) throw ManifestException("$source: preprocessing mean/std must have 3 values")
            val stagesObj = root.obj("stages")
            val stages = LinkedHashMap<String, StageSpec>()
            for (name in STAGES) {
                if (!stagesObj.has(name)) throw ManifestException("$source has no stage '$name'; re-export the folder")
                val st = stagesObj.obj(name)
                val art = LinkedHashMap<String, String>()
                if (st.has("artifacts")) {
                    val a = st.obj("artifacts")
                    for (k in a.map.keys) art[k] = a.string(k)
                }
                val spec = StageSpec(name, specs(st, "inputs"), specs(st, "outputs"), art)
                val want = CONTRACT.getValue(name)
                if (spec.inputs.map { it.name } != want.first || spec.outputs.map { it.name } != want.second) {
                    throw ManifestException("$source: stage $name has inputs ${spec.inputs.map { it.name }} and outputs " +
                        "${spec.outputs.map { it.name }}, this app expects ${want.first} -> ${want.second}; re-export the folder")
                }
                stages[name] = spec
            }
            val checks = LinkedHashMap<String, String>()
            val c = root.obj("checksums")
            for (k in c.map.keys) checks[k] = c.string(k)
            val weights = root.obj("weights")
            val wdesc = when {
                weights.has("checkpoint") -> "checkpoint ${weights.string("checkpoint")}"
                weights.has("synthetic_seed") -> "SYNTHETIC weights (seed ${weights.int("synthetic_seed")}): masks are meaningless"
                else -> "unrecorded weights"
            }
            val m = Manifest(root.int("format_version"), root.string("config"),
                if (root.has("precision")) root.string("precision") else "unknown", tracker.imageSize, mean, std,
                pre.double("scale"), tracker, stages, checks, wdesc, producerVersions(root),
                SlotBuckets.parse(stagesObj.obj("memory_attention"), tracker.memorySlots, tracker.ptrSlots),
                MaskPromptConstants.fromManifest(root))
            m.checkShapes(source)
            return m
        }

        private fun producerVersions(root: JsonObject): Map<String, String> {
            val out = LinkedHashMap<String, String>()
            if (root.has("tool")) {
                val tool = root.obj("tool")
                if (tool.has("versions")) {
                    val versions = tool.obj("versions")
                    for (k in versions.map.keys) {
                        val v = versions.map[k]
                        if (v is String) out[k] = v
                    }
                }
            }
            if (root.has("artifact_producers")) {
                val p = root.obj("artifact_producers")
                for (k in p.map.keys) out[k] = p.string(k)
            }
            return out
        }

        /** The executorch versions whose .pte files the app's executorch-android runtime reads. */
        val SUPPORTED_EXECUTORCH = listOf("1.4.")
        const val RECOMMENDED_EXECUTORCH = "1.4.1"

        private fun specs(st: JsonObject, key: String): List<TensorSpec> = st.objects(key).map {
            TensorSpec(it.string("name"), it.intArray("shape"), it.string("dtype"))
        }
    }

    /** The stage shapes must agree with the capacities and sizes the tracker will use. */
    private fun checkShapes(source: String) {
        val t = tracker
        fun expect(stage: String, spec: TensorSpec, shape: IntArray) {
            if (!spec.shape.contentEquals(shape)) {
                throw ManifestException("$source: $stage.${spec.name} has shape ${spec.shape.joinToString(",", "(", ")")}, " +
                    "the capacities say ${shape.joinToString(",", "(", ")")}; re-export the folder")
            }
        }
        val s = t.imageSize
        val h = t.featSize
        val lr = t.lowResSize
        expect("image_encoder", stage("image_encoder").input("image"), intArrayOf(1, 3, s, s))
        expect("image_encoder", stage("image_encoder").output("feats"), intArrayOf(1, t.dModel, h, h))
        val ma = stage("memory_attention")
        expect("memory_attention", ma.input("mem_feats"), intArrayOf(t.memorySlots, t.memDim, h, h))
        expect("memory_attention", ma.input("obj_ptrs"), intArrayOf(t.ptrSlots, t.dModel))
        val md = stage("mask_decoder")
        expect("mask_decoder", md.input("points"), intArrayOf(1, t.points, 2))
        expect("mask_decoder", md.input("mask_input"), intArrayOf(1, 1, lr, lr))
        expect("mask_decoder", md.output("masks"), intArrayOf(1, 4, lr, lr))
        expect("memory_encoder", stage("memory_encoder").output("mem_feats"), intArrayOf(1, t.memDim, h, h))
    }
}
