package org.etam.demo

import android.content.Context
import android.graphics.Bitmap
import android.media.MediaMetadataRetriever
import android.net.Uri
import etam.mobile.core.FrameProvider
import etam.mobile.core.Manifest
import etam.mobile.core.Preprocess

/** Frames of a video, decoded on demand (nothing but the current frame is held). */
class VideoFrameSource(context: Context, uri: Uri) {
    private val retriever = MediaMetadataRetriever()
    val numFrames: Int
    val width: Int
    val height: Int

    init {
        try {
            retriever.setDataSource(context, uri)
        } catch (e: RuntimeException) {
            throw IllegalArgumentException("this file cannot be opened as a video (${e.message})")
        }
        numFrames = retriever.extractMetadata(MediaMetadataRetriever.METADATA_KEY_VIDEO_FRAME_COUNT)?.toIntOrNull() ?: 0
        if (numFrames <= 0) throw IllegalArgumentException("this video reports no frames; choose another file")
        val first = frame(0)
        width = first.width
        height = first.height
    }

    fun frame(i: Int): Bitmap = retriever.getFrameAtIndex(i)
        ?: throw IllegalArgumentException("frame $i of the video cannot be decoded")

    fun close() = retriever.release()
}

/** Bitmap -> model input via tracker-core's Pillow-exact preprocessing, with reused buffers. */
class BitmapPreprocessor(private val manifest: Manifest) {
    private var pixels = IntArray(0)
    private var rgb = ByteArray(0)
    private val out = FloatArray(3 * manifest.imageSize * manifest.imageSize)

    fun modelInput(bitmap: Bitmap): FloatArray {
        val n = bitmap.width * bitmap.height
        if (pixels.size != n) {
            pixels = IntArray(n)
            rgb = ByteArray(3 * n)
        }
        val bmp = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        bmp.getPixels(pixels, 0, bmp.width, 0, 0, bmp.width, bmp.height)
        Preprocess.argbToRgb(pixels, rgb)
        return Preprocess.modelInput(rgb, bmp.width, bmp.height, manifest, out)
    }
}

/** FrameProvider over any frame lookup (video index or the latest camera frame). */
class BitmapFrameProvider(private val pre: BitmapPreprocessor, private val lookup: (Int) -> Bitmap) : FrameProvider {
    override fun modelInput(frameIdx: Int): FloatArray = pre.modelInput(lookup(frameIdx)).copyOf()
}
