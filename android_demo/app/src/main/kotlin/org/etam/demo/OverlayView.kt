package org.etam.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.RectF
import android.util.AttributeSet
import android.view.MotionEvent
import android.view.View

/**
 * Shows the current frame letterboxed, the coloured masks of every object, the prompts, and turns
 * taps and drags into frame-pixel coordinates (a tap outside the picture is reported as such).
 */
class OverlayView(context: Context, attrs: AttributeSet?) : View(context, attrs) {
    interface Listener {
        fun onTap(x: Float, y: Float, inside: Boolean)
        fun onBox(x0: Float, y0: Float, x1: Float, y1: Float, inside: Boolean)
    }

    var listener: Listener? = null
    var boxMode = false
    private var frame: Bitmap? = null
    private var maskBitmap: Bitmap? = null
    private val marks = ArrayList<Triple<Float, Float, Int>>()
    private val dst = RectF()
    private var dragStart: FloatArray? = null
    private var dragNow: FloatArray? = null
    private val paint = Paint(Paint.ANTI_ALIAS_FLAG)
    private val stroke = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        style = Paint.Style.STROKE
        strokeWidth = 4f
        color = Color.YELLOW
    }

    /** Colours per object id (DAVIS-like), alpha for the overlay. */
    fun colour(objId: Int, alpha: Int = 140): Int {
        val palette = intArrayOf(0xE6194B, 0x3CB44B, 0x4363D8, 0xF58231, 0x911EB4, 0x42D4F4, 0xF032E6, 0xBFEF45)
        return (alpha shl 24) or palette[(objId - 1 + palette.size) % palette.size]
    }

    fun showFrame(bitmap: Bitmap?) {
        frame = bitmap
        invalidate()
    }

    /** labels: frame-size object ids (0 = background). */
    fun showMasks(labels: IntArray?, width: Int, height: Int) {
        if (labels == null) {
            maskBitmap = null
        } else {
            val px = IntArray(labels.size) { if (labels[it] == 0) 0 else colour(labels[it]) }
            maskBitmap = Bitmap.createBitmap(px, width, height, Bitmap.Config.ARGB_8888)
        }
        invalidate()
    }

    fun setMarks(list: List<Triple<Float, Float, Int>>) {
        marks.clear()
        marks.addAll(list)
        invalidate()
    }

    private fun layoutRect(b: Bitmap) {
        val s = minOf(width / b.width.toFloat(), height / b.height.toFloat())
        val w = b.width * s
        val h = b.height * s
        dst.set((width - w) / 2f, (height - h) / 2f, (width + w) / 2f, (height + h) / 2f)
    }

    private fun toFrame(x: Float, y: Float): FloatArray {
        val b = frame ?: return floatArrayOf(-1f, -1f)
        layoutRect(b)
        return floatArrayOf((x - dst.left) / dst.width() * b.width, (y - dst.top) / dst.height() * b.height)
    }

    private fun inside(p: FloatArray): Boolean {
        val b = frame ?: return false
        return p[0] >= 0f && p[1] >= 0f && p[0] <= b.width && p[1] <= b.height
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val b = frame ?: return
        layoutRect(b)
        canvas.drawBitmap(b, null, dst, paint)
        maskBitmap?.let { canvas.drawBitmap(it, null, dst, paint) }
        for ((x, y, label) in marks) {
            paint.color = if (label == 1) Color.GREEN else Color.RED
            canvas.drawCircle(dst.left + x / b.width * dst.width(), dst.top + y / b.height * dst.height(), 12f, paint)
        }
        val s = dragStart
        val n = dragNow
        if (s != null && n != null) canvas.drawRect(minOf(s[0], n[0]), minOf(s[1], n[1]), maxOf(s[0], n[0]), maxOf(s[1], n[1]), stroke)
    }

    override fun onTouchEvent(event: MotionEvent): Boolean {
        if (frame == null) return false
        when (event.actionMasked) {
            MotionEvent.ACTION_DOWN -> {
                dragStart = floatArrayOf(event.x, event.y)
                dragNow = dragStart
            }
            MotionEvent.ACTION_MOVE -> if (boxMode) {
                dragNow = floatArrayOf(event.x, event.y)
                invalidate()
            }
            MotionEvent.ACTION_UP -> {
                val s = dragStart ?: return true
                dragStart = null
                dragNow = null
                invalidate()
                if (boxMode) {
                    val a = toFrame(minOf(s[0], event.x), minOf(s[1], event.y))
                    val c = toFrame(maxOf(s[0], event.x), maxOf(s[1], event.y))
                    listener?.onBox(a[0], a[1], c[0], c[1], inside(a) && inside(c))
                } else {
                    val p = toFrame(event.x, event.y)
                    listener?.onTap(p[0], p[1], inside(p))
                }
                performClick()
            }
        }
        return true
    }

    override fun performClick(): Boolean {
        super.performClick()
        return true
    }
}
