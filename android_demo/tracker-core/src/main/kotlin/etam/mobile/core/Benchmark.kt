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

/** Summary statistics of timings, as ExecuTorch's benchmark apps report them. */
object BenchmarkStats {
    /** numpy.percentile's default (linear interpolation between closest ranks); null when empty. */
    fun percentile(values: List<Double>, q: Double): Double? {
        if (values.isEmpty()) return null
        val s = values.sorted()
        val pos = (s.size - 1) * q / 100.0
        val lo = Math.floor(pos).toInt()
        val hi = minOf(lo + 1, s.size - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)
    }

    fun median(values: List<Double>): Double? = percentile(values, 50.0)

    /**
     * Mean after dropping the `trim` fraction of samples at each end (scipy.stats.trim_mean:
     * floor(trim * n) values cut from each side), robust to the odd stall or thermal spike.
     */
    fun trimmedMean(values: List<Double>, trim: Double = 0.1): Double? {
        if (values.isEmpty()) return null
        require(trim >= 0.0 && trim < 0.5) { "trim must be in [0, 0.5)" }
        val s = values.sorted()
        val cut = Math.floor(trim * s.size).toInt()
        val kept = s.subList(cut, s.size - cut)
        return kept.sum() / kept.size
    }

    fun round3(v: Double) = Math.rint(v * 1000.0) / 1000.0
}

/** Readings of the Linux kernel files an Android app may read (absent ones give null). */
object DeviceProbe {
    const val GOVERNOR_PATH = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"

    /** CPU frequency governor ("schedutil", "performance", ...); null where the file is absent or unreadable. */
    fun cpuGovernor(path: String = GOVERNOR_PATH): String? = try {
        java.io.File(path).readText().trim().ifEmpty { null }
    } catch (e: java.io.IOException) {
        null
    } catch (e: SecurityException) {
        null
    }

    /** Peak resident set size of this process in MB (VmHWM of /proc/self/status); null when unknown. */
    fun peakRssMb(path: String = "/proc/self/status"): Double? = try {
        val line = java.io.File(path).readLines().firstOrNull { it.startsWith("VmHWM:") }
        val kb = line?.substringAfter(':')?.trim()?.split(' ')?.firstOrNull()?.toLongOrNull()
        if (kb == null || kb <= 0L) null else kb / 1024.0
    } catch (e: java.io.IOException) {
        null
    } catch (e: SecurityException) {
        null
    }
}

/** Everything a benchmark run measured, before it becomes the device-results JSON. */
class BenchmarkMeasurements(
    /** Per stage, wall time of every timed call (warm-up already excluded). */
    val stageTimes: Map<String, List<Double>>,
    /** Wall time of every timed frame (all objects, all stages). */
    val frameTimes: List<Double>,
    val warmupFrames: Int,
    val objects: Int,
    /** Time to load every stage's program and method, milliseconds (total and per stage). */
    val modelLoadMs: Double,
    val stageLoadMs: Map<String, Double> = emptyMap(),
    val peakMemoryMb: Double? = null,
    val cpuGovernor: String? = null,
    val thermalState: String? = null
)

/**
 * Benchmark mode as ExecuTorch's benchmark apps run it: one object clicked on frame 0, `warmup`
 * untimed frames, then `frames` timed ones; memory sampled after every frame.
 */
object BenchmarkRun {
    fun run(
        runner: StageRunner, cfg: TrackerConfig, provider: FrameProvider, width: Int, height: Int, frames: Int, warmup: Int,
        modelLoadMs: Double, stageLoadMs: Map<String, Double> = emptyMap(), sampleMemoryMb: () -> Double? = { null },
        cpuGovernor: String? = null, progress: (String) -> Unit = {}
    ): BenchmarkMeasurements {
        if (frames < 1 || warmup < 0) throw IllegalArgumentException("the benchmark needs at least 1 timed frame and 0 or more warm-up frames (got $frames, $warmup)")
        val timed = TimedStageRunner(runner)
        val total = 1 + warmup + frames
        val tracker = Tracker(timed, cfg, total, width, height, provider, 1)
        tracker.addPrompt(0, 1, Prompt(listOf(floatArrayOf(width / 2f, height / 2f)), listOf(1)))
        val start = tracker.beginPropagation()
        val frameTimes = ArrayList<Double>()
        var peak: Double? = sampleMemoryMb()
        for (i in start + 1 until total) {
            val isTimed = i >= start + 1 + warmup
            if (i == start + 1 + warmup) timed.clear()
            val t0 = System.nanoTime()
            tracker.trackFrame(i)
            if (isTimed) frameTimes.add((System.nanoTime() - t0) / 1e6)
            val m = sampleMemoryMb()
            if (m != null && (peak == null || m > peak)) peak = m
            progress("benchmark: frame $i / ${total - 1}${if (isTimed) "" else " (warm-up)"}")
        }
        val stageTimes = LinkedHashMap<String, List<Double>>()
        for ((k, v) in timed.times) stageTimes[k] = ArrayList(v)
        return BenchmarkMeasurements(stageTimes, frameTimes, warmup, 1, modelLoadMs, stageLoadMs, peak, cpuGovernor)
    }
}

/**
 * The device-results JSON (`etam-device-bench` version 1, benchmarks/device_results.schema.json)
 * the apps write and benchmarks/merge_device_results.py reads: per-stage and per-frame median,
 * p90 and trimmed mean in milliseconds, model load time, peak memory, CPU governor, delegate.
 */
object BenchmarkReport {
    /**
     * Median / p90 / trimmed mean per stage and per frame, rounded to microseconds; optional
     * fields left out when unknown. Throws when nothing was timed (a result the merge script rejects).
     */
    fun build(
        device: DeviceInfo, backend: String, computeUnits: String, manifest: Manifest, measured: BenchmarkMeasurements,
        appVersion: String, manifestSha256: String, computeUnitReports: Map<String, Map<String, Any?>> = emptyMap(),
        timestamp: String? = null, notes: String? = null
    ): Map<String, Any?> {
        val r = { v: Double -> BenchmarkStats.round3(v) }
        val stages = LinkedHashMap<String, Any?>()
        for (name in Manifest.STAGES) {
            val t = measured.stageTimes[name] ?: continue
            val med = BenchmarkStats.median(t) ?: continue
            val entry = linkedMapOf<String, Any?>("median_ms" to r(med), "p90_ms" to r(BenchmarkStats.percentile(t, 90.0)!!),
                "trimmed_mean_ms" to r(BenchmarkStats.trimmedMean(t)!!), "calls" to t.size)
            val load = measured.stageLoadMs[name]
            if (load != null) entry["load_ms"] = r(load)
            val report = computeUnitReports[name]
            if (report != null) entry["compute_unit_report"] = report
            stages[name] = entry
        }
        val f = measured.frameTimes
        val fmed = BenchmarkStats.median(f)
        if (stages.isEmpty() || fmed == null) {
            throw IllegalArgumentException("the benchmark timed no frame; use a longer video or fewer warm-up frames")
        }
        val doc = linkedMapOf<String, Any?>(
            "schema" to "etam-device-bench", "version" to 1,
            "device" to linkedMapOf("model" to device.model, "os" to device.os, "os_version" to device.osVersion, "chip" to device.chip),
            "backend" to backend, "compute_units" to computeUnits, "config" to manifest.config, "precision" to manifest.precision,
            "frames" to f.size, "warmup_frames" to measured.warmupFrames, "objects" to measured.objects, "stages" to stages,
            "frame_ms" to linkedMapOf("median" to r(fmed), "p90" to r(BenchmarkStats.percentile(f, 90.0)!!),
                "trimmed_mean" to r(BenchmarkStats.trimmedMean(f)!!)),
            "model_load_ms" to r(measured.modelLoadMs),
            "app_version" to appVersion, "export_manifest_sha256" to manifestSha256
        )
        val peak = measured.peakMemoryMb
        if (peak != null) doc["peak_memory_mb"] = r(peak)
        if (measured.cpuGovernor != null) doc["cpu_governor"] = measured.cpuGovernor
        if (measured.thermalState != null) doc["thermal_state"] = measured.thermalState
        if (timestamp != null) doc["timestamp"] = timestamp
        if (notes != null) doc["notes"] = notes
        return doc
    }

    /** File name the apps write: device_results_<model>_<config>_<units>.json. */
    fun fileName(device: DeviceInfo, config: String, computeUnits: String): String {
        val safe = { s: String -> s.map { if (it.isLetterOrDigit() || it == '-' || it == '.') it else '_' }.joinToString("") }
        return "device_results_${safe(device.model)}_${safe(config)}_${safe(computeUnits)}.json"
    }

    fun sha256Hex(bytes: ByteArray): String {
        val d = java.security.MessageDigest.getInstance("SHA-256").digest(bytes)
        val sb = StringBuilder()
        for (b in d) sb.append(String.format("%02x", b.toInt() and 0xFF))
        return sb.toString()
    }
}
