package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

/** Benchmark maths, the run loop (warm-up excluded) and the device-results JSON the app writes. */
class BenchmarkTest {
    private val manifest = Manifest.parse(Fixtures.text("manifest.json"))

    @Test
    fun medianPercentileAndTrimmedMean() {
        assertEquals(3.0, BenchmarkStats.median(listOf(5.0, 1.0, 3.0, 2.0, 100.0))!!, 0.0)
        assertEquals(2.5, BenchmarkStats.median(listOf(4.0, 1.0, 3.0, 2.0))!!, 0.0)
        assertEquals(9.1, BenchmarkStats.percentile((1..10).map { it.toDouble() }, 90.0)!!, 1e-12)
        // scipy.stats.trim_mean(x, 0.1): one value cut from each end of ten.
        assertEquals(5.5, BenchmarkStats.trimmedMean(listOf(1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 1000.0))!!, 0.0)
        assertEquals("fewer than 10 samples: nothing cut", 3.0, BenchmarkStats.trimmedMean(listOf(2.0, 4.0))!!, 0.0)
        // 20 samples, trim 0.2: four cut from each end.
        assertEquals(10.5, BenchmarkStats.trimmedMean((1..20).map { it.toDouble() }, 0.2)!!, 1e-12)
        assertNull(BenchmarkStats.median(emptyList()))
        assertNull(BenchmarkStats.trimmedMean(emptyList()))
    }

    @Test
    fun runExcludesWarmUpAndKeepsThePeakMemory() {
        val cfg = manifest.tracker
        val n = 3 * cfg.imageSize * cfg.imageSize
        val frames = object : FrameProvider {
            override fun modelInput(frameIdx: Int) = FloatArray(n) { ((it + frameIdx) % 17) * 0.1f }
        }
        val mem = listOf(100.0, 140.0, 120.0, 130.0, 90.0, 110.0, 100.0, 100.0, 100.0, 100.0).iterator()
        val messages = ArrayList<String>()
        val m = BenchmarkRun.run(MixRunner(cfg), cfg, frames, 128, 96, 6, 2, 42.0, mapOf("image_encoder" to 40.0),
            { if (mem.hasNext()) mem.next() else null }, "schedutil") { messages.add(it) }
        assertEquals(6, m.frameTimes.size)
        assertEquals("warm-up calls are not counted", 6, m.stageTimes["image_encoder"]!!.size)
        assertEquals(6, m.stageTimes["memory_attention"]!!.size)
        assertEquals(6, m.stageTimes["memory_encoder"]!!.size)
        assertEquals(42.0, m.modelLoadMs, 0.0)
        assertEquals(140.0, m.peakMemoryMb!!, 0.0)
        assertEquals("schedutil", m.cpuGovernor)
        assertEquals(8, messages.size)
        assertEquals(2, messages.count { it.endsWith("(warm-up)") })
        try {
            BenchmarkRun.run(MixRunner(cfg), cfg, frames, 128, 96, 0, 2, 42.0)
            fail("0 timed frames must be refused")
        } catch (e: IllegalArgumentException) {
            assertTrue(e.message!!.contains("at least 1 timed frame"))
        }
    }

    @Test
    fun governorAndPeakMemoryProbesTolerateAbsentFiles() {
        val dir = createTempDir("probe")
        try {
            assertNull(DeviceProbe.cpuGovernor(File(dir, "missing").path))
            val g = File(dir, "scaling_governor")
            g.writeText("performance\n")
            assertEquals("performance", DeviceProbe.cpuGovernor(g.path))
            val status = File(dir, "status")
            status.writeText("Name:\tapp\nVmPeak:\t  999999 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  100000 kB\n")
            assertEquals(200.0, DeviceProbe.peakRssMb(status.path)!!, 0.0)
            status.writeText("Name:\tapp\n")
            assertNull(DeviceProbe.peakRssMb(status.path))
            assertNull(DeviceProbe.peakRssMb(File(dir, "missing").path))
        } finally {
            dir.deleteRecursively()
        }
    }

    @Test
    fun deviceResultJson() {
        val measured = BenchmarkMeasurements(
            linkedMapOf("image_encoder" to listOf(10.0, 12.0, 11.0, 30.0), "memory_attention" to listOf(5.0, 5.0, 6.0, 5.0),
                "mask_decoder" to listOf(1.0, 1.0, 1.0, 1.0), "memory_encoder" to listOf(2.0, 2.0, 2.0, 3.0)),
            listOf(20.0, 21.0, 22.0, 60.0), 5, 1, 1234.5678, mapOf("image_encoder" to 800.0), 321.5, "schedutil")
        val device = DeviceInfo("Google Pixel 8", "Android", "15", "Tensor G3")
        val report = mapOf("delegate" to "xnnpack", "runtime" to "executorch-android 1.4.1")
        val doc = BenchmarkReport.build(device, "executorch", "xnnpack", manifest, measured, "0.1.0", "ab".repeat(32),
            Manifest.STAGES.associate { it to report }, "2026-01-01T00:00:00Z")
        val text = Json.write(doc)
        val root = Json.parseObject(text, "result")
        assertEquals("etam-device-bench", root.string("schema"))
        assertEquals(1, root.int("version"))
        assertEquals(4, root.int("frames"))
        assertEquals(5, root.int("warmup_frames"))
        assertEquals(1234.568, root.double("model_load_ms"), 0.0)
        assertEquals(321.5, root.double("peak_memory_mb"), 0.0)
        assertEquals("schedutil", root.string("cpu_governor"))
        assertEquals("xnnpack", root.string("compute_units"))
        assertEquals("15", root.obj("device").string("os_version"))
        assertEquals(21.5, root.obj("frame_ms").double("median"), 0.0)
        assertEquals(30.75, root.obj("frame_ms").double("trimmed_mean"), 0.0)
        val enc = root.obj("stages").obj("image_encoder")
        assertEquals(11.5, enc.double("median_ms"), 0.0)
        assertEquals(24.6, enc.double("p90_ms"), 0.0)
        assertEquals(15.75, enc.double("trimmed_mean_ms"), 0.0)
        assertEquals(800.0, enc.double("load_ms"), 0.0)
        assertEquals("xnnpack", enc.obj("compute_unit_report").string("delegate"))
        assertFalse(root.obj("stages").obj("memory_attention").has("load_ms"))
        assertFalse(root.has("thermal_state"))
        assertEquals("device_results_Google_Pixel_8_test_tiny_xnnpack.json", BenchmarkReport.fileName(device, manifest.config, "xnnpack"))
        try {
            BenchmarkReport.build(device, "executorch", "xnnpack", manifest,
                BenchmarkMeasurements(measured.stageTimes, emptyList(), 5, 1, 1.0), "0.1.0", "ab".repeat(32))
            fail("no timed frame must be refused")
        } catch (e: IllegalArgumentException) {
            assertTrue(e.message!!.contains("timed no frame"))
        }
        // tests/test_native_apps.py validates this file with benchmarks/merge_device_results.py.
        val out = System.getenv("ETAM_DEVICE_RESULT_OUT")
        if (out != null) File(out).writeText(text)
    }
}
