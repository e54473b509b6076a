package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotSame
import org.junit.Assert.assertNull
import org.junit.Assert.assertSame
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.util.concurrent.CountDownLatch
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit

/** The one model holder both screens (video, photo) use: loads once, same instance to everyone. */
class ModelHolderTest {
    /** A stand-in for the app's ExecuTorch runner: only identity and closing matter here. */
    private class FakeModels(val id: Int) {
        var closed = false
    }

    private var made = 0
    private fun holder(failFirst: Boolean = false) = ModelHolder({
        made++
        if (failFirst && made == 1) throw ManifestException("image_encoder.pte is missing")
        FakeModels(made)
    }, { m: FakeModels -> m.closed = true })

    @Test
    fun videoAndPhotoScreensShareOneLoad() {
        val h = holder()
        val video = h.acquire()
        val photo = h.acquire()
        assertSame("the photo screen got a second copy of the models", video, photo)
        assertEquals(1, h.loads)
        assertEquals(2, h.users)
        h.release(photo)
        assertFalse("closed while the video screen holds them", h.trim())
        assertFalse(video.closed)
        h.release(video)
        assertSame("released models stay loaded for the next screen", video, h.acquire())
        assertEquals(1, h.loads)
    }

    @Test
    fun lowMemoryClosesOnlyUnusedModelsAndTheNextScreenReloads() {
        val h = holder()
        val a = h.acquire()
        h.release(a)
        h.release(a) // a second release is harmless
        assertEquals(0, h.users)
        assertTrue(h.trim())
        assertTrue(a.closed)
        assertNull(h.loaded)
        assertFalse(h.trim())
        val b = h.acquire()
        assertNotSame(a, b)
        assertEquals(2, h.loads)
        assertEquals(1, h.closes)
        h.release(a) // a stale instance does not release the new one
        assertEquals(1, h.users)
    }

    @Test
    fun aFailedLoadIsNotKept() {
        val h = holder(failFirst = true)
        try {
            h.acquire()
            fail("the failing load should throw")
        } catch (e: ManifestException) {
            assertEquals("image_encoder.pte is missing", e.message)
        }
        assertEquals(0, h.users)
        assertEquals(2, h.acquire().id)
    }

    @Test
    fun concurrentScreensWaitForOneLoad() {
        val gate = CountDownLatch(1)
        var loads = 0
        val h = ModelHolder({
            loads++
            Thread.sleep(50)
            FakeModels(loads)
        }, { _: FakeModels -> })
        val pool = Executors.newFixedThreadPool(2)
        val got = (0 until 2).map { pool.submit<FakeModels> { gate.await(); h.acquire() } }
        gate.countDown()
        val (a, b) = got.map { it.get(5, TimeUnit.SECONDS) }
        pool.shutdown()
        assertSame(a, b)
        assertEquals(1, loads)
    }
}
