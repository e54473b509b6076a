package org.etam.demo

import android.graphics.Bitmap
import android.graphics.Color
import android.os.Build
import etam.mobile.core.BenchmarkReport
import etam.mobile.core.BenchmarkRun
import etam.mobile.core.DeviceInfo
import etam.mobile.core.DeviceProbe
import etam.mobile.core.Json
import etam.mobile.core.Manifest
import java.io.File
import java.text.SimpleDateFormat
import java.util.Date
import java.util.Locale
import java.util.TimeZone

/**
 * Benchmark mode at the level of ExecuTorch's benchmark apps: one object clicked at the centre
 * of frame 0, `warmup` untimed frames, then `frames` timed ones (tracker-core's BenchmarkRun).
 * Writes the device-results JSON benchmarks/merge_device_results.py reads: model load time
 * (total and per stage), median / p90 / trimmed mean per stage and per frame, peak memory
 * (VmHWM), the CPU governor and the delegate.
 */
class Benchmark(private val models: ModelStore.Loaded, private val runner: ExecuTorchStageRunner, private val delegate: String) {
    /** Frames of the open video, or a synthetic moving square when none is open. */
    private fun syntheticFrame(i: Int, w: Int, h: Int): Bitmap {
        val bmp = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888)
        bmp.eraseColor(Color.rgb(40, 60, 90))
        val px = IntArray(80 * 80) { Color.rgb(230, 60, 40) }
        bmp.setPixels(px, 0, 80, (40 + 6 * i) % (w - 80), h / 2 - 40, 80, 80)
        return bmp
    }

    /** Peak resident memory of the app process; the Java heap's high-water mark is part of it. */
    private fun peakMemoryMb(): Double? = DeviceProbe.peakRssMb()

    fun run(video: VideoFrameSource?, frames: Int, warmup: Int, outDir: File, progress: (String) -> Unit): File {
        val w = video?.width ?: 640
        val h = video?.height ?: 480
        val available = video?.numFrames ?: Int.MAX_VALUE
        if (available < warmup + 2) {
            throw IllegalArgumentException("the video has only $available frames; the benchmark needs at least ${warmup + 2} (or close the video to use synthetic frames)")
        }
        val timedFrames = minOf(frames, available - 1 - warmup)
        val pre = BitmapPreprocessor(models.manifest)
        val provider = BitmapFrameProvider(pre) { i -> video?.frame(i) ?: syntheticFrame(i, w, h) }
        val measured = BenchmarkRun.run(runner, models.manifest.tracker, provider, w, h, timedFrames, warmup,
            runner.loadMs, runner.stageLoadMs, { peakMemoryMb() }, DeviceProbe.cpuGovernor(), progress)
        val device = DeviceInfo(Build.MANUFACTURER + " " + Build.MODEL, "Android", Build.VERSION.RELEASE,
            if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else Build.HARDWARE)
        val report = mapOf<String, Any?>("delegate" to delegate, "runtime" to "executorch-android ${BuildConfig.EXECUTORCH_VERSION}")
        val stamp = SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US).apply { timeZone = TimeZone.getTimeZone("UTC") }.format(Date())
        val doc = BenchmarkReport.build(device, "executorch", delegate, models.manifest, measured,
            BuildConfig.VERSION_NAME, models.manifestSha256, Manifest.STAGES.associate { it to report }, stamp,
            if (video == null) "synthetic frames ${w}x$h" else "video ${w}x$h")
        outDir.mkdirs()
        val file = File(outDir, BenchmarkReport.fileName(device, models.manifest.config, delegate))
        file.writeText(Json.write(doc))
        return file
    }
}
