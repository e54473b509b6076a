package etam.mobile.core

/** What a mask PNG's header says: size, Pillow-style mode and (palette PNGs) the palette colours. */
class PngHeader(val width: Int, val height: Int, val colorType: Int, val bitDepth: Int, val palette: IntArray) {
    /** The mode Pillow reports for this PNG (the Python CLI's messages name it). */
    val mode: String
        get() = when (colorType) {
            0 -> if (bitDepth == 1) "1" else if (bitDepth == 16) "I;16" else "L"
            2 -> "RGB"
            3 -> "P"
            4 -> "LA"
            else -> "RGBA"
        }
}

/**
 * Mask prompts from PNG files, checked before any model work, with the Python CLI's messages
 * (etam_mobile/runtime/mask_files.py). The platform decodes the pixels (BitmapFactory); this reads
 * the PNG header and palette itself, because decoders hand out colours, not palette indices, and
 * a palette mask (a DAVIS annotation) is chosen by index.
 */
object MaskFile {
    /** "mask prompt for object N on frame F", the start of every message. */
    fun subject(objId: Int, frame: Int) = "mask prompt for object $objId on frame $frame"

    private val SIGNATURE = intArrayOf(137, 80, 78, 71, 13, 10, 26, 10)

    /** IHDR and PLTE of a PNG file; a PromptException naming the fix when the bytes are not a PNG. */
    fun header(data: ByteArray, name: String, subject: String): PngHeader {
        val bad = PromptException("$subject: $name is not a readable image (not a PNG); give a PNG mask")
        if (data.size < 33 || (0 until 8).any { (data[it].toInt() and 255) != SIGNATURE[it] }) throw bad
        fun u8(i: Int) = data[i].toInt() and 255
        fun u32(i: Int): Long = (u8(i).toLong() shl 24) or (u8(i + 1).toLong() shl 16) or (u8(i + 2).toLong() shl 8) or u8(i + 3).toLong()
        var pos = 8
        var ihdr: IntArray? = null
        var palette = IntArray(0)
        while (pos + 8 <= data.size) {
            val length = u32(pos)
            val type = String(data, pos + 4, 4, Charsets.ISO_8859_1)
            val body = pos + 8
            if (body + length > data.size) throw bad
            val n = length.toInt()
            if (type == "IHDR") {
                if (n < 13) throw bad
                ihdr = intArrayOf(u32(body).toInt(), u32(body + 4).toInt(), u8(body + 9), u8(body + 8))
            } else if (type == "PLTE") {
                palette = IntArray(n / 3) { k -> (u8(body + 3 * k) shl 16) or (u8(body + 3 * k + 1) shl 8) or u8(body + 3 * k + 2) }
            } else if (type == "IDAT" || type == "IEND") {
                break
            }
            pos = body + n + 4 // + CRC
        }
        val h = ihdr ?: throw bad
        if (h[0] <= 0 || h[1] <= 0 || h[2] !in intArrayOf(0, 2, 3, 4, 6)) throw bad
        if (h[2] == 3 && palette.isEmpty()) throw bad
        return PngHeader(h[0], h[1], h[2], h[3], palette)
    }

    /**
     * The (height x width) mask of a PNG whose pixels the platform decoded to `argb` (one Int per
     * pixel, not premultiplied, row-major: `Bitmap.getPixels` with `inPremultiplied = false`).
     * `maskValue` picks a palette index; `valueFix` is what a missing value's message tells the
     * user to do (the CLI: set mask_value).
     */
    fun decode(png: ByteArray, argb: IntArray, name: String, frameWidth: Int, frameHeight: Int, maskValue: Int?,
               subject: String, valueFix: String = "set mask_value to one of those"): BooleanArray {
        val h = header(png, name, subject)
        val n = h.width * h.height
        if (argb.size != n) {
            throw PromptException("$subject: $name is not a readable image (decoded to ${argb.size} pixels for ${h.width}x${h.height}); give a PNG mask")
        }
        if (h.width != frameWidth || h.height != frameHeight) {
            throw PromptException("$subject: $name is ${h.width}x${h.height} but the frames are ${frameWidth}x$frameHeight; give a mask of the frame's size")
        }
        if (maskValue != null && h.colorType != 3) {
            throw PromptException("$subject: 'mask_value' needs a palette PNG, $name is mode ${h.mode}; drop mask_value for a binary mask")
        }
        if (h.colorType == 3) {
            val index = paletteIndices(h, argb, name, subject)
            val present = index.filter { it != 0 }.toSortedSet().toList()
            if (maskValue != null) {
                val v = maskValue
                val mask = BooleanArray(n) { index[it] == v }
                if (mask.none { it } && v > 0 && v < h.palette.size) {
                    // A colour listed twice decodes to its first index; one shared with index 0 is background.
                    val first = h.palette.indexOf(h.palette[v])
                    if (first != v && first != 0 && first in present) {
                        throw PromptException("$subject: palette index $v of $name has the same colour as index $first, so the decoded pixels cannot tell them apart; give a binary mask of the object")
                    }
                }
                if (mask.none { it }) {
                    val have = if (present.isEmpty()) "only 0" else present.toString()
                    throw PromptException("$subject: value $v does not occur in $name (it has $have); $valueFix")
                }
                return mask
            }
            if (present.size > 1) {
                throw PromptException("$subject: $name is a palette PNG with several objects $present; add \"mask_value\" to pick one")
            }
            return nonEmpty(BooleanArray(n) { index[it] > 0 }, name, subject)
        }
        // Grey, grey+alpha, RGB, RGBA: any colour channel > 0 (the CLI: max over R, G, B; grey is R=G=B).
        return nonEmpty(BooleanArray(n) { (argb[it] and 0xFFFFFF) != 0 }, name, subject)
    }

    /** What the apps say when the prompted object's number is not in a palette mask. */
    const val APP_VALUE_FIX = "prompt one of those objects (this app takes palette index N as object N)"

    /**
     * The apps' rule (no mask_value field there): a palette PNG with several objects gives the
     * prompted object's number as its index (DAVIS annotations number objects so); any other PNG
     * is read as the CLI reads a mask without mask_value.
     */
    fun decodeForObject(png: ByteArray, argb: IntArray, name: String, frameWidth: Int, frameHeight: Int,
                        objId: Int, frame: Int): BooleanArray {
        val who = subject(objId, frame)
        val h = header(png, name, who)
        var value: Int? = null
        if (h.colorType == 3 && argb.size == h.width * h.height && h.width == frameWidth && h.height == frameHeight) {
            val present = paletteIndices(h, argb, name, who).filter { it != 0 }.toSet()
            if (present.size > 1) value = objId
        }
        return decode(png, argb, name, frameWidth, frameHeight, value, who, APP_VALUE_FIX)
    }

    private fun nonEmpty(mask: BooleanArray, name: String, subject: String): BooleanArray {
        if (mask.none { it }) throw PromptException("$subject: $name is empty (no pixel > 0); draw the object or use clicks/a box")
        return mask
    }

    /** Each pixel's palette index, from its decoded colour (the first index with that colour). */
    private fun paletteIndices(h: PngHeader, argb: IntArray, name: String, subject: String): IntArray {
        val lookup = HashMap<Int, Int>()
        for (k in h.palette.indices) if (!lookup.containsKey(h.palette[k])) lookup[h.palette[k]] = k
        return IntArray(argb.size) {
            lookup[argb[it] and 0xFFFFFF]
                ?: throw PromptException("$subject: $name has pixels whose colour is not in its palette (transparent palette entries?); save the mask without transparency")
        }
    }
}
