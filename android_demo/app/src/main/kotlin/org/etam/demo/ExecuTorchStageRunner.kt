package org.etam.demo

import etam.mobile.core.DecoderOutput
import etam.mobile.core.Manifest
import etam.mobile.core.SlotBucket
import etam.mobile.core.SlotBuckets
import etam.mobile.core.StageRunner
import etam.mobile.core.TensorSpec
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File
import java.nio.FloatBuffer
import java.nio.IntBuffer

/** A model that cannot be loaded or run on this phone; the message is shown in the UI. */
class ModelException(message: String) : RuntimeException(message)

/**
 * The four stages as ExecuTorch programs (.pte, XNNPACK delegate). Each module is loaded once;
 * each input tensor wraps a direct buffer allocated once from the manifest's shapes and
 * refilled per call.
 */
class ExecuTorchStageRunner(folder: File, val manifest: Manifest, val target: String = "executorch") : StageRunner {
    private class Stage(val name: String, val module: Module, specs: List<TensorSpec>, val method: String = "forward") {
        val buffers = specs.map { s ->
            if (s.dtype == "int32") Tensor.allocateIntBuffer(s.count) else Tensor.allocateFloatBuffer(s.count)
        }
        val inputs: Array<EValue> = specs.mapIndexed { i, s ->
            val shape = LongArray(s.shape.size) { s.shape[it].toLong() }
            val b = buffers[i]
            EValue.from(if (b is IntBuffer) Tensor.fromBlob(b, shape) else Tensor.fromBlob(b as FloatBuffer, shape))
        }.toTypedArray()

        fun setFloat(i: Int, values: FloatArray) {
            val b = buffers[i] as FloatBuffer
            b.rewind()
            b.put(values)
        }

        fun setInt(i: Int, values: IntArray) {
            val b = buffers[i] as IntBuffer
            b.rewind()
            b.put(values)
        }

        fun run(): Array<EValue> = try {
            module.execute(method, *inputs)
        } catch (t: Throwable) {
            throw ModelException("$name failed on this phone (${t.message}); re-export the folder with the executorch version this app uses")
        }
    }

    private val stages: Map<String, Stage>
    /** Milliseconds to load each stage's program and its forward method (done here, at start-up). */
    val stageLoadMs = LinkedHashMap<String, Double>()
    val loadMs: Double
    private val bucketCandidates: List<SlotBucket>
    private val bucketStages: Map<Pair<Int, Int>, Stage>

    init {
        manifest.requireProducer("executorch", Manifest.SUPPORTED_EXECUTORCH, Manifest.RECOMMENDED_EXECUTORCH,
            "this app (executorch-android ${BuildConfig.EXECUTORCH_VERSION})")
        val t0 = System.nanoTime()
        val loaded = LinkedHashMap<String, Stage>()
        for (name in Manifest.STAGES) {
            val s0 = System.nanoTime()
            val file = File(folder, manifest.artifact(name, target))
            if (!file.isFile) throw ModelException("${file.name} is missing from ${folder.path}; copy the whole export folder again")
            val module = try {
                Module.load(file.absolutePath)
            } catch (t: Throwable) {
                throw ModelException("${file.name} could not be loaded (${t.message}); it needs a $target runtime matching the exporter")
            }
            // Module.load only maps the file; loading the method here makes a bad .pte fail at start-up, not at the first tap.
            val rc = try {
                module.loadMethod("forward")
            } catch (t: Throwable) {
                throw ModelException("${file.name}: its forward method could not be loaded (${t.message}); re-export with executorch ${Manifest.RECOMMENDED_EXECUTORCH}")
            }
            if (rc != 0) {
                throw ModelException("${file.name}: loading its forward method failed (ExecuTorch error 0x${Integer.toHexString(rc)}); re-export with executorch ${Manifest.RECOMMENDED_EXECUTORCH}")
            }
            loaded[name] = Stage(name, module, manifest.stage(name).inputs)
            stageLoadMs[name] = (System.nanoTime() - s0) / 1e6
        }
        stages = loaded
        // Smaller memory-attention graphs (SlotBuckets.kt): the smallest that holds the valid slots
        // runs. An export with fused attention uses ExecuTorch's LLM custom op llama::custom_sdpa,
        // which the executorch-android AAR ships with its LLM custom-ops library.
        // Format 2: the buckets are methods of memory_attention.pte (one copy of the weights), so the
        // module already loaded for the stage runs them too; format 1: one file (its "forward") each.
        bucketCandidates = SlotBuckets.candidates(manifest, target)
        val specs = manifest.stage("memory_attention").inputs
        val modules = HashMap<String, Module>()
        modules[manifest.artifact("memory_attention", target)] = loaded.getValue("memory_attention").module
        bucketStages = bucketCandidates.dropLast(1).associate { b ->
            val rel = b.artifacts.getValue(target)
            val method = b.method(target)
            val file = File(folder, rel)
            if (!file.isFile) throw ModelException("${file.name} is missing from ${folder.path}; copy the whole export folder again")
            val shapes = specs.map { t ->
                val shape = t.shape.copyOf()
                when (t.name) {
                    "mem_feats", "mem_tpos", "mem_valid" -> shape[0] = b.memorySlots
                    "obj_ptrs", "ptr_valid" -> shape[0] = b.ptrSlots
                }
                TensorSpec(t.name, shape, t.dtype)
            }
            val module = modules.getOrPut(rel) {
                try { Module.load(file.absolutePath) } catch (t: Throwable) {
                    throw ModelException("${file.name} could not be loaded (${t.message}); it needs a $target runtime with the LLM custom ops")
                }
            }
            val rc = try { module.loadMethod(method) } catch (t: Throwable) {
                throw ModelException("${file.name}: method $method of slot bucket $b could not be loaded (${t.message}); re-export the folder")
            }
            if (rc != 0) throw ModelException("${file.name}: loading method $method failed (ExecuTorch error 0x${Integer.toHexString(rc)}); re-export the folder")
            Pair(b.memorySlots, b.ptrSlots) to Stage("memory_attention", module, shapes, method)
        }
        loadMs = (System.nanoTime() - t0) / 1e6
    }


    private fun stage(name: String) = stages.getValue(name)

    override fun imageEncoder(image: FloatArray): FloatArray {
        val s = stage("image_encoder")
        s.setFloat(0, image)
        return s.run()[0].toTensor().dataAsFloatArray
    }

    override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                 objPtrs: FloatArray, ptrValid: FloatArray): FloatArray {
        val cut = SlotBuckets.select(bucketCandidates, manifest.tracker, memFeats, memTpos, memValid, objPtrs, ptrValid)
        val s = bucketStages[Pair(cut.bucket.memorySlots, cut.bucket.ptrSlots)] ?: stage("memory_attention")
        s.setFloat(0, feats)
        s.setFloat(1, cut.memFeats)
        s.setInt(2, cut.memTpos)
        s.setFloat(3, cut.memValid)
        s.setFloat(4, cut.objPtrs)
        s.setFloat(5, cut.ptrValid)
        return s.run()[0].toTensor().dataAsFloatArray
    }

    override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float): DecoderOutput {
        val s = stage("mask_decoder")
        s.setFloat(0, condFeats)
        s.setFloat(1, points)
        s.setInt(2, labels)
        s.setFloat(3, maskInput)
        s.setFloat(4, floatArrayOf(hasMaskInput))
        val out = s.run()
        return DecoderOutput(out[0].toTensor().dataAsFloatArray, out[1].toTensor().dataAsFloatArray,
            out[2].toTensor().dataAsFloatArray, out[3].toTensor().dataAsFloatArray[0])
    }

    override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float): FloatArray {
        val s = stage("memory_encoder")
        s.setFloat(0, feats)
        s.setFloat(1, mask)
        s.setFloat(2, floatArrayOf(binarize))
        return s.run()[0].toTensor().dataAsFloatArray
    }

    fun close() {
        for (s in stages.values) s.module.destroy()
        for (s in bucketStages.values) s.module.destroy()
    }
}
