package etam.mobile.core

/** Wraps a StageRunner and records wall time per stage call (for the app's benchmark mode). */
class TimedStageRunner(val inner: StageRunner) : StageRunner {
    val times = LinkedHashMap<String, MutableList<Double>>()

    private inline fun <T> time(stage: String, block: () -> T): T {
        val t0 = System.nanoTime()
        val r = block()
        times.getOrPut(stage) { ArrayList() }.add((System.nanoTime() - t0) / 1e6)
        return r
    }

    override fun imageEncoder(image: FloatArray) = time("image_encoder") { inner.imageEncoder(image) }

    override fun memoryAttention(feats: FloatArray, memFeats: FloatArray, memTpos: IntArray, memValid: FloatArray,
                                 objPtrs: FloatArray, ptrValid: FloatArray) =
        time("memory_attention") { inner.memoryAttention(feats, memFeats, memTpos, memValid, objPtrs, ptrValid) }

    override fun maskDecoder(condFeats: FloatArray, points: FloatArray, labels: IntArray, maskInput: FloatArray, hasMaskInput: Float) =
        time("mask_decoder") { inner.maskDecoder(condFeats, points, labels, maskInput, hasMaskInput) }

    override fun memoryEncoder(feats: FloatArray, mask: FloatArray, binarize: Float) =
        time("memory_encoder") { inner.memoryEncoder(feats, mask, binarize) }

    fun clear() = times.clear()
}

/** Device identity for the results file. */
class DeviceInfo(val model: String, val os: String, val osVersion: String, val chip: String)

/**
 * The device-results JSON (`etam-device-bench` version 1) the apps write and benchmarks/ reads:
 * per-stage and per-frame median / p90 in milliseconds.
 */
object BenchmarkReport {
    /** numpy.percentile's default (linear interpolation between closest ranks). */
    fun percentile(values: List<Double>, q: Double): Double {
        if (values.isEmpty()) return Double.NaN
        val s = values.sorted()
        val pos = (s.size - 1) * q / 100.0
        val lo = Math.floor(pos).toInt()
        val hi = minOf(lo + 1, s.size - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)
    }

    private fun round3(v: Double) = Math.rint(v * 1000.0) / 1000.0

    fun build(
        device: DeviceInfo, backend: String, computeUnits: String, manifest: Manifest, stageTimes: Map<String, List<Double>>,
        frameTimes: List<Double>, appVersion: String, manifestSha256: String,
        computeUnitReports: Map<String, Map<String, Any?>> = emptyMap()
    ): Map<String, Any?> {
        val stages = LinkedHashMap<String, Any?>()
        for (name in Manifest.STAGES) {
            val t = stageTimes[name] ?: continue
            val entry = linkedMapOf<String, Any?>("median_ms" to round3(percentile(t, 50.0)), "p90_ms" to round3(percentile(t, 90.0)), "calls" to t.size)
            val report = computeUnitReports[name]
            if (report != null) entry["compute_unit_report"] = report
            stages[name] = entry
        }
        return linkedMapOf(
            "schema" to "etam-device-bench", "version" to 1,
            "device" to linkedMapOf("model" to device.model, "os" to device.os, "os_version" to device.osVersion, "chip" to device.chip),
            "backend" to backend, "compute_units" to computeUnits, "config" to manifest.config, "precision" to manifest.precision,
            "frames" to frameTimes.size, "stages" to stages,
            "frame_ms" to linkedMapOf("median" to round3(percentile(frameTimes, 50.0)), "p90" to round3(percentile(frameTimes, 90.0))),
            "app_version" to appVersion, "export_manifest_sha256" to manifestSha256
        )
    }

    fun sha256Hex(bytes: ByteArray): String {
        val d = java.security.MessageDigest.getInstance("SHA-256").digest(bytes)
        val sb = StringBuilder()
        for (b in d) sb.append(String.format("%02x", b.toInt() and 0xFF))
        return sb.toString()
    }
}
