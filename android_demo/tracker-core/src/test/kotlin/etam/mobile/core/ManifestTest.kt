package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

class ManifestTest {
    private val sample = Fixtures.text("manifest.json")

    private fun expectError(text: String, vararg parts: String) {
        try {
            Manifest.parse(text, "manifest.json")
            fail("no error")
        } catch (e: ManifestException) {
            for (p in parts) assertTrue("'${e.message}' lacks '$p'", e.message!!.contains(p))
        }
    }

    @Test
    fun readsTheSampleManifest() {
        val m = Manifest.parse(sample)
        val t = m.tracker
        assertEquals("test_tiny", m.config)
        assertEquals(128, m.imageSize)
        assertEquals(8, t.points)
        assertEquals(2, t.condFrames)
        assertEquals(8, t.memorySlots)
        assertEquals(17, t.ptrSlots)
        assertEquals(6, t.recentFrames)
        assertEquals(8, t.featSize)
        assertEquals(32, t.lowResSize)
        assertEquals(7, t.numMaskmem)
        assertEquals(16, t.maxObjPtrs)
        assertEquals(0.05, t.stabilityDelta, 0.0)
        assertEquals(0.98, t.stabilityThresh, 0.0)
        assertEquals(-1024f, t.noObjScore, 0f)
        assertEquals(0.485f, m.mean[0], 0f)
        assertEquals(0.225f, m.std[2], 0f)
        assertEquals(listOf("executorch", "coreml"), m.completeTargets)
        assertEquals("image_encoder.pte", m.artifact("image_encoder", "executorch"))
        assertEquals("mask_decoder.mlpackage", m.artifact("mask_decoder", "coreml"))
        assertEquals(listOf(8, 64, 8, 8), m.stage("memory_attention").input("mem_feats").shape.toList())
        assertEquals("int32", m.stage("mask_decoder").input("labels").dtype)
        assertTrue(m.weightsDescription.contains("SYNTHETIC"))
    }

    @Test
    fun wrongFormatVersionIsAClearError() {
        expectError(sample.replaceFirst("\"format_version\": 2", "\"format_version\": 3"), "format_version 3", "reads 1 and 2", "re-export")
        expectError(sample.replaceFirst("\"format_version\": 2,", ""), "format_version null")
    }

    @Test
    fun brokenFilesAreClearErrors() {
        expectError(sample.substring(0, sample.length / 2), "not valid JSON")
        expectError("[1, 2]", "not valid JSON")
        expectError(sample.replaceFirst("\"memory_encoder\": {", "\"memory_encoder_old\": {"), "no stage 'memory_encoder'")
        expectError(sample.replaceFirst("\"cond_frames\": 2", "\"cond_frames\": 3"), "memory_slots")
        expectError(sample.replaceFirst("\"name\": \"mem_tpos\"", "\"name\": \"tpos\""), "memory_attention", "expects")
    }

    @Test
    fun missingArtifactNamesTheFix() {
        val m = Manifest.parse(sample)
        try {
            m.artifact("image_encoder", "onnx")
            fail()
        } catch (e: ManifestException) {
            assertTrue(e.message!!, e.message!!.contains("--targets onnx"))
        }
    }

    @Test
    fun missingFolderOrManifestIsAClearError() {
        val tmp = createTempDir("etam")
        try {
            try {
                Manifest.load(File(tmp, "nope"))
                fail()
            } catch (e: ManifestException) {
                assertTrue(e.message!!.contains("does not exist"))
            }
            try {
                Manifest.load(tmp)
                fail()
            } catch (e: ManifestException) {
                assertTrue(e.message!!.contains("no manifest.json"))
            }
            File(tmp, "manifest.json").writeText(sample)
            assertEquals("test_tiny", Manifest.load(tmp).config)
        } finally {
            tmp.deleteRecursively()
        }
    }

    private fun producerMessage(text: String): String = try {
        Manifest.parse(text, "manifest.json").requireProducer("executorch", Manifest.SUPPORTED_EXECUTORCH,
            Manifest.RECOMMENDED_EXECUTORCH, "this Android app (executorch-android 1.4.1)")
        ""
    } catch (e: ManifestException) {
        e.message!!
    }

    @Test
    fun unsupportedExecutorchIsRefusedWithTheFix() {
        assertEquals("", producerMessage(sample))
        val old = producerMessage(sample.replace("\"executorch\": \"1.4.1\"", "\"executorch\": \"1.0.1\""))
        assertTrue(old, old.contains("executorch 1.0.1") && old.contains("pip install executorch==1.4.1"))
        val newer = producerMessage(sample.replace("\"executorch\": \"1.4.1\"", "\"executorch\": \"1.41.0\""))
        assertTrue(newer, newer.contains("1.41.0"))
        val none = producerMessage(sample.replace("\"executorch\": \"1.4.1\",", ""))
        assertTrue(none, none.contains("does not record") && none.contains("re-export"))
    }
}
