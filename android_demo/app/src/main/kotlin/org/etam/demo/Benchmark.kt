package org.etam.demo

import android.graphics.Bitmap
import android.graphics.Color
import android.os.Build
import etam.mobile.core.BenchmarkReport
import etam.mobile.core.DeviceInfo
import etam.mobile.core.Json
import etam.mobile.core.Prompt
import etam.mobile.core.TimedStageRunner
import etam.mobile.core.Tracker
import java.io.File

/**
 * Benchmark mode: one object clicked at the centre of frame 0, then `frames` tracked frames
 * (after `warmup` untimed ones). Writes the device-results JSON (benchmarks/ reads it).
 */
class Benchmark(private val models: ModelStore.Loaded, private val runner: ExecuTorchStageRunner, private val computeUnits: String) {
    /** Frames of the open video, or a synthetic moving square when none is open. */
    private fun syntheticFrame(i: Int, w: Int, h: Int): Bitmap {
        val bmp = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888)
        bmp.eraseColor(Color.rgb(40, 60, 90))
        val px = IntArray(80 * 80) { Color.rgb(230, 60, 40) }
        bmp.setPixels(px, 0, 80, (40 + 6 * i) % (w - 80), h / 2 - 40, 80, 80)
        return bmp
    }

    fun run(video: VideoFrameSource?, frames: Int, warmup: Int, outDir: File, progress: (String) -> Unit): File {
        val w = video?.width ?: 640
        val h = video?.height ?: 480
        val total = minOf(warmup + frames, video?.numFrames ?: Int.MAX_VALUE)
        if (total <= warmup + 1) throw IllegalArgumentException("the video has only ${video?.numFrames} frames; the benchmark needs more than ${warmup + 1}")
        val timed = TimedStageRunner(runner)
        val pre = BitmapPreprocessor(models.manifest)
        val provider = BitmapFrameProvider(pre) { i -> video?.frame(i) ?: syntheticFrame(i, w, h) }
        val tracker = Tracker(timed, models.manifest.tracker, total, w, h, provider, 1)
        tracker.addPrompt(0, 1, Prompt(listOf(floatArrayOf(w / 2f, h / 2f)), listOf(1)))
        val frameTimes = ArrayList<Double>()
        val start = tracker.beginPropagation()
        for (i in start + 1 until total) {
            if (i == start + 1 + warmup) timed.clear()
            val t0 = System.nanoTime()
            tracker.trackFrame(i)
            if (i >= start + 1 + warmup) frameTimes.add((System.nanoTime() - t0) / 1e6)
            progress("benchmark: frame $i / ${total - 1}")
        }
        val device = DeviceInfo(Build.MANUFACTURER + " " + Build.MODEL, "Android", Build.VERSION.RELEASE,
            if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else Build.HARDWARE)
        val doc = BenchmarkReport.build(device, "executorch", computeUnits, models.manifest, timed.times, frameTimes,
            BuildConfig.VERSION_NAME, models.manifestSha256)
        outDir.mkdirs()
        val file = File(outDir, "device_results_${Build.MODEL.replace(' ', '_')}_${models.manifest.config}.json")
        file.writeText(Json.write(doc))
        return file
    }
}
