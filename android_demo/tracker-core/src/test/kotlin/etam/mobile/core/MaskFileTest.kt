package etam.mobile.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.awt.image.BufferedImage
import java.awt.image.IndexColorModel
import java.io.ByteArrayOutputStream
import javax.imageio.ImageIO

/** Mask PNGs as the apps import them: the CLI's checks and messages, palette values by index. */
class MaskFileTest {
    private val subject = MaskFile.subject(2, 0)
    private val w = "mask prompt for object 2 on frame 0"
    // A DAVIS-like palette: 0 black, 1 dark red, 2 dark green, 3 olive, then padding that repeats black.
    private val davis = intArrayOf(0x000000, 0x800000, 0x008000, 0x808000, 0x000000)

    /** A real PNG written by javax.imageio and decoded back to ARGB, as BitmapFactory does on a phone. */
    private fun palettePng(width: Int, height: Int, index: IntArray): Pair<ByteArray, IntArray> {
        val r = ByteArray(davis.size) { (davis[it] shr 16).toByte() }
        val g = ByteArray(davis.size) { (davis[it] shr 8).toByte() }
        val b = ByteArray(davis.size) { davis[it].toByte() }
        val img = BufferedImage(width, height, BufferedImage.TYPE_BYTE_INDEXED, IndexColorModel(8, davis.size, r, g, b))
        img.raster.setPixels(0, 0, width, height, index)
        return encode(img)
    }

    private fun encode(img: BufferedImage): Pair<ByteArray, IntArray> {
        val out = ByteArrayOutputStream()
        assertTrue(ImageIO.write(img, "png", out))
        val bytes = out.toByteArray()
        val back = ImageIO.read(bytes.inputStream())
        return Pair(bytes, back.getRGB(0, 0, back.width, back.height, null, 0, back.width))
    }

    private fun message(body: () -> Any): String = try {
        body()
        "no error"
    } catch (e: PromptException) {
        e.message ?: ""
    }

    @Test
    fun paletteMaskPicksTheValueByIndex() {
        val idx = intArrayOf(1, 0, 2, 2, 1, 0, 2, 2)
        val (png, argb) = palettePng(4, 2, idx)
        assertEquals("P", MaskFile.header(png, "00000.png", subject).mode)
        val mask = MaskFile.decode(png, argb, "00000.png", 4, 2, 2, subject)
        assertArrayEquals(BooleanArray(8) { idx[it] == 2 }, mask)
    }

    @Test
    fun theCliMessages() {
        val (png, argb) = palettePng(4, 2, intArrayOf(1, 0, 2, 2, 1, 0, 2, 2))
        assertEquals("$w: value 3 does not occur in a.png (it has [1, 2]); set mask_value to one of those",
            message { MaskFile.decode(png, argb, "a.png", 4, 2, 3, subject) })
        assertEquals("$w: a.png is a palette PNG with several objects [1, 2]; add \"mask_value\" to pick one",
            message { MaskFile.decode(png, argb, "a.png", 4, 2, null, subject) })
        assertEquals("$w: a.png is 4x2 but the frames are 8x2; give a mask of the frame's size",
            message { MaskFile.decode(png, argb, "a.png", 8, 2, 1, subject) })
        val grey = encode(BufferedImage(4, 2, BufferedImage.TYPE_BYTE_GRAY))
        assertEquals("L", MaskFile.header(grey.first, "g.png", subject).mode)
        assertEquals("$w: 'mask_value' needs a palette PNG, g.png is mode L; drop mask_value for a binary mask",
            message { MaskFile.decode(grey.first, grey.second, "g.png", 4, 2, 1, subject) })
        assertEquals("$w: g.png is empty (no pixel > 0); draw the object or use clicks/a box",
            message { MaskFile.decode(grey.first, grey.second, "g.png", 4, 2, null, subject) })
        assertEquals("$w: x.gif is not a readable image (not a PNG); give a PNG mask",
            message { MaskFile.decode("GIF89a".toByteArray(), IntArray(0), "x.gif", 4, 2, null, subject) })
        assertEquals("$w: value 3 does not occur in a.png (it has [1, 2]); prompt object 1 or 2 instead",
            message { MaskFile.decode(png, argb, "a.png", 4, 2, 3, subject, "prompt object 1 or 2 instead") })
    }

    @Test
    fun theAppsRuleTakesTheObjectNumberAsPaletteIndex() {
        val idx = intArrayOf(1, 0, 2, 2, 1, 0, 2, 2)
        val (png, argb) = palettePng(4, 2, idx)
        assertArrayEquals(BooleanArray(8) { idx[it] == 2 }, MaskFile.decodeForObject(png, argb, "a.png", 4, 2, 2, 5))
        assertEquals("mask prompt for object 3 on frame 5: value 3 does not occur in a.png (it has [1, 2]); " +
            "prompt one of those objects (this app takes palette index N as object N)",
            message { MaskFile.decodeForObject(png, argb, "a.png", 4, 2, 3, 5) })
        // one object in the palette: it is the mask whatever object is prompted
        val (one, oneArgb) = palettePng(4, 2, intArrayOf(1, 0, 1, 1, 0, 0, 0, 0))
        assertArrayEquals(booleanArrayOf(true, false, true, true, false, false, false, false),
            MaskFile.decodeForObject(one, oneArgb, "b.png", 4, 2, 3, 0))
        assertEquals("mask prompt for object 2 on frame 0: a.png is 4x2 but the frames are 2x2; give a mask of the frame's size",
            message { MaskFile.decodeForObject(png, argb, "a.png", 2, 2, 2, 0) })
    }

    @Test
    fun binaryGreyAndRgbMasksAreAnyChannelAboveZero() {
        val grey = BufferedImage(3, 2, BufferedImage.TYPE_BYTE_GRAY)
        grey.raster.setPixels(0, 0, 3, 2, intArrayOf(0, 1, 255, 0, 7, 0))
        val (gp, ga) = encode(grey)
        assertArrayEquals(booleanArrayOf(false, true, true, false, true, false), MaskFile.decode(gp, ga, "m.png", 3, 2, null, subject))
        val rgb = BufferedImage(3, 2, BufferedImage.TYPE_INT_RGB)
        rgb.setRGB(0, 0, 3, 2, intArrayOf(0, 0x000100, 0xFFFFFF, 0, 0x010000, 0), 0, 3)
        val (rp, ra) = encode(rgb)
        assertEquals("RGB", MaskFile.header(rp, "m.png", subject).mode)
        assertArrayEquals(booleanArrayOf(false, true, true, false, true, false), MaskFile.decode(rp, ra, "m.png", 3, 2, null, subject))
    }

    /** The decoded mask feeds the tracker's mask prompt with the manifest's constants. */
    @Test
    fun trackerStartsFromADecodedMask() {
        assertEquals(null, Manifest.parse(Fixtures.text("manifest.json")).maskPrompt)
        val consts = Fixtures.obj("trace_mask_prompt.json").obj("manifest").map["mask_prompt"]
        val text = Fixtures.text("manifest.json").trimEnd().removeSuffix("}") + ", \"mask_prompt\": " + Json.write(consts) + "}"
        val manifest = Manifest.parse(text)
        val c = manifest.maskPrompt ?: throw AssertionError("mask_prompt not read from the manifest")
        assertEquals(4, c.stride)
        val cfg = manifest.tracker
        val (width, height) = Pair(128, 96)
        val idx = IntArray(width * height) { i -> if (i / width in 20 until 70 && i % width in 30 until 90) 3 else 0 }
        val (png, argb) = palettePng(width, height, idx)
        val mask = MaskFile.decode(png, argb, "00000.png", width, height, 3, MaskFile.subject(1, 0))
        assertEquals(50 * 60, mask.count { it })
        val n = 3 * cfg.imageSize * cfg.imageSize
        val frames = object : FrameProvider {
            override fun modelInput(frameIdx: Int) = FloatArray(n) { i -> 0.01f * ((i + frameIdx) % 17) }
        }
        val t = Tracker(MixRunner(cfg), cfg, 3, width, height, frames)
        val low = t.addMask(0, 1, mask, c)
        val lr = cfg.lowResSize
        assertTrue(low[(lr * 45 / 96) * lr + lr * 60 / 128] > 0f)
        assertTrue(low[0] < 0f)
        val seen = ArrayList<Int>()
        t.propagate { r -> seen.add(r.frameIdx); true }
        assertEquals(listOf(0, 1, 2), seen)
    }
}
