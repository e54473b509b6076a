package org.etam.demo

import android.Manifest as AndroidManifest
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.provider.OpenableColumns
import android.widget.Button
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import etam.mobile.core.FrameResult
import etam.mobile.core.ManifestException
import etam.mobile.core.MaskFile
import etam.mobile.core.PostProcess
import etam.mobile.core.Prompt
import etam.mobile.core.PromptException
import etam.mobile.core.Tracker

/**
 * Open a video or the camera, tap points / drag a box on any frame for several objects, track,
 * and see coloured overlays. Every failure (missing or wrong export folder, model that does not
 * load, tap outside the frame, too many objects) becomes a red message in the status line.
 */
class MainActivity : AppCompatActivity(), OverlayView.Listener {
    companion object {
        const val MAX_OBJECTS = 4
        const val BENCH_FRAMES = 50
        const val BENCH_WARMUP = 5
    }

    private val main = Handler(Looper.getMainLooper())
    private lateinit var screen: Screen
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var seek: SeekBar
    private lateinit var preview: PreviewView

    private var video: VideoFrameSource? = null
    private var tracker: Tracker? = null
    private var currentFrame = 0
    private var currentObject = 1
    private var cameraMode = false
    private var cameraFrame: Bitmap? = null
    private var cameraIndex = 0
    private var cameraTracking = false

    /** Clicks and box of the object being prompted on the current frame (re-sent together). */
    private val clicks = ArrayList<FloatArray>()
    private val clickLabels = ArrayList<Int>()
    private var box: FloatArray? = null

    /** Per frame: quantized low-res logits (objects x lr x lr), enough to redraw any frame. */
    private val results = HashMap<Int, Pair<IntArray, ByteArray>>()

    private val pickVideo = registerForActivityResult(ActivityResultContracts.OpenDocument()) { uri: Uri? ->
        if (uri != null) openVideo(uri)
    }

    private val pickMask = registerForActivityResult(ActivityResultContracts.OpenDocument()) { uri: Uri? ->
        if (uri != null) importMask(uri)
    }

    private val cameraPermission = PermissionGate(this, AndroidManifest.permission.CAMERA,
        "camera permission denied; allow it in the system settings to track live", { error(it) }) { startCamera() }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        overlay = findViewById(R.id.overlay)
        status = findViewById(R.id.status)
        seek = findViewById(R.id.seek)
        preview = findViewById(R.id.preview)
        screen = Screen(this, status)
        overlay.listener = this
        findViewById<RadioGroup>(R.id.mode).setOnCheckedChangeListener { _, id -> overlay.boxMode = id == R.id.mode_box }
        findViewById<Button>(R.id.open_video).setOnClickListener { pickVideo.launch(arrayOf("video/*")) }
        findViewById<Button>(R.id.camera).setOnClickListener { cameraPermission.request() }
        findViewById<Button>(R.id.mask).setOnClickListener { pickMask.launch(arrayOf("image/png")) }
        findViewById<Button>(R.id.new_object).setOnClickListener { newObject() }
        findViewById<Button>(R.id.track).setOnClickListener { trackVideo() }
        findViewById<Button>(R.id.clear).setOnClickListener { clearAll() }
        findViewById<Button>(R.id.benchmark).setOnClickListener { benchmark() }
        findViewById<Button>(R.id.photo).setOnClickListener { startActivity(android.content.Intent(this, PhotoActivity::class.java)) }
        seek.setOnSeekBarChangeListener(object : SeekBar.OnSeekBarChangeListener {
            override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                if (fromUser) showFrame(progress)
            }
            override fun onStartTrackingTouch(bar: SeekBar) {}
            override fun onStopTrackingTouch(bar: SeekBar) {}
        })
        screen.loadModels { m ->
            info("${m.manifest.config} (${m.manifest.precision}, ${m.manifest.weightsDescription}) loaded in " +
                "%.0f ms; open a video or the camera".format(m.runner.loadMs))
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        screen.close()
        // The models stay with the app (EtamApp); the video is this screen's: closed on the model
        // thread, after the step that may be reading it.
        screen.executor.execute {
            video?.close()
            video = null
        }
    }

    private fun info(msg: String) = screen.info(msg)

    private fun error(msg: String) = screen.error(msg)

    private fun background(block: () -> Unit) =
        screen.background("out of memory: use a shorter or smaller video, or a smaller model config", block)

    private fun requireModels(): Models = screen.requireModels()

    // ---- sources -----------------------------------------------------------------
    private fun openVideo(uri: Uri) = background {
        requireModels()
        stopCamera()
        video?.close()
        val v = VideoFrameSource(this, uri)
        video = v
        newTracker(v.numFrames, v.width, v.height)
        main.post {
            seek.max = v.numFrames - 1
            seek.progress = 0
        }
        showFrame(0)
        info("${v.numFrames} frames ${v.width}x${v.height}: tap object 1, then Track")
    }

    private fun startCamera() {
        if (screen.models == null) {
            error("models are not loaded: ${status.text}")
            return
        }
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
            analysis.setAnalyzer(screen.executor) { image ->
                val rotation = image.imageInfo.rotationDegrees
                val raw = image.toBitmap()
                image.close()
                // The sensor is landscape: turn the frame upright, as the user sees it.
                val bmp = if (rotation == 0) raw else Bitmap.createBitmap(raw, 0, 0, raw.width, raw.height,
                    android.graphics.Matrix().apply { postRotate(rotation.toFloat()) }, true)
                onCameraFrame(bmp)
            }
            val previewUse = Preview.Builder().build().also { it.setSurfaceProvider(preview.surfaceProvider) }
            provider.unbindAll()
            // The Preview use case needs a laid-out, visible PreviewView to get a surface.
            preview.visibility = android.view.View.VISIBLE
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, previewUse, analysis)
            cameraMode = true
            video?.close()
            video = null
            cameraIndex = 0
            cameraTracking = false
            background {
                val first = cameraFrame
                newTracker(Int.MAX_VALUE, first?.width ?: 640, first?.height ?: 480)
            }
            info("camera: tap the object to track")
        }, ContextCompat.getMainExecutor(this))
    }

    private fun stopCamera() {
        if (!cameraMode) return
        main.post {
            ProcessCameraProvider.getInstance(this).get().unbindAll()
            preview.visibility = android.view.View.INVISIBLE
        }
        cameraMode = false
    }

    /** Runs on the worker: each camera frame is a new frame index; tracked once an object exists. */
    private fun onCameraFrame(bmp: Bitmap) {
        if (screen.closed) return
        try {
            val t = tracker
            if (t == null || t.videoWidth != bmp.width || t.videoHeight != bmp.height) newTracker(Int.MAX_VALUE, bmp.width, bmp.height)
            cameraIndex++
            cameraFrame = bmp
            currentFrame = cameraIndex
            val tr = tracker!!
            if (cameraTracking && tr.objects.isNotEmpty()) {
                // New prompts take effect from this frame on; a correction keeps its mask.
                if (tr.resumeStart() != null) tr.beginPropagation(cameraIndex, keepCorrections = true)
                val r = tr.trackFrame(cameraIndex)
                render(bmp, r)
            } else {
                main.post { overlay.showFrame(bmp) }
            }
        } catch (e: RuntimeException) {
            error("camera tracking stopped: ${e.message}")
            cameraTracking = false
        }
    }

    private fun newTracker(numFrames: Int, width: Int, height: Int) {
        val m = requireModels()
        tracker = Tracker(m.runner, m.manifest.tracker, numFrames, width, height,
            BitmapFrameProvider(m.preprocessor) { i -> if (cameraMode) cameraFrame!! else video!!.frame(i) }, MAX_OBJECTS)
        results.clear()
        currentObject = 1
        resetPrompt()
    }

    /** Prompt state (clicks, labels, box) lives on the UI thread only; worker callers post here. */
    private fun resetPrompt() {
        if (android.os.Looper.myLooper() != android.os.Looper.getMainLooper()) {
            main.post { resetPrompt() }
            return
        }
        clicks.clear()
        clickLabels.clear()
        box = null
        main.post { overlay.setMarks(emptyList()) }
    }

    // ---- prompts -----------------------------------------------------------------
    override fun onTap(x: Float, y: Float, inside: Boolean) {
        val label = if (findViewById<RadioGroup>(R.id.mode).checkedRadioButtonId == R.id.mode_negative) 0 else 1
        clicks.add(floatArrayOf(x, y))
        clickLabels.add(label)
        sendPrompt(inside)
    }

    override fun onBox(x0: Float, y0: Float, x1: Float, y1: Float, inside: Boolean) {
        box = floatArrayOf(x0, y0, x1, y1)
        sendPrompt(inside)
    }

    private fun sendPrompt(inside: Boolean) {
        val pts = ArrayList(clicks)
        val labs = ArrayList(clickLabels)
        val b = box
        if (!inside) {
            // Keep the message of the tracker's own check, but do not keep the bad click.
            if (clicks.isNotEmpty()) { clicks.removeAt(clicks.size - 1); clickLabels.removeAt(clickLabels.size - 1) }
        }
        val frame = currentFrame
        val obj = currentObject
        background {
            val t = tracker ?: throw IllegalArgumentException("open a video or the camera first")
            val low = t.addPrompt(frame, obj, Prompt(pts, labs, b))
            if (cameraMode) cameraTracking = true
            showPrompted(t, frame, obj, low, if (cameraMode) cameraFrame!! else video!!.frame(frame))
            main.post { overlay.setMarks(pts.mapIndexed { i, p -> Triple(p[0], p[1], labs[i]) }) }
            info("object $obj on frame $frame: ${pts.size} click(s)${if (b != null) " + box" else ""}")
        }
    }

    /**
     * A mask PNG as the current object's prompt on the shown video frame (upstream's
     * add_new_mask): binary / grey / RGB (any pixel > 0), or a palette PNG (a DAVIS annotation),
     * where the palette index is the object number when it holds several objects. Checked by
     * tracker-core's MaskFile with the CLI's messages; the frame becomes a conditioning frame.
     */
    private fun importMask(uri: Uri) {
        val frame = currentFrame
        val obj = currentObject
        background {
            val t = tracker ?: throw PromptException("open a video first: a mask prompt is for one frame of a video")
            val v = video ?: throw PromptException("mask prompts need a video frame; open a video (the camera's frames change under the mask)")
            val consts = requireModels().manifest.maskPrompt
                ?: throw ManifestException("this export has no mask_prompt constants (made before mask prompts); re-export the folder to use mask prompts")
            val name = displayName(uri)
            val bytes = contentResolver.openInputStream(uri)?.use { it.readBytes() }
                ?: throw PromptException("${MaskFile.subject(obj, frame)}: mask file $name cannot be read; pick it again")
            val opts = BitmapFactory.Options().apply {
                inPremultiplied = false // palette colours and grey values as written
                inPreferredConfig = Bitmap.Config.ARGB_8888
                inScaled = false
            }
            val argb = BitmapFactory.decodeByteArray(bytes, 0, bytes.size, opts)?.let { bmp ->
                IntArray(bmp.width * bmp.height).also { bmp.getPixels(it, 0, bmp.width, 0, 0, bmp.width, bmp.height) }
            } ?: IntArray(0) // MaskFile names an undecodable file
            val mask = MaskFile.decodeForObject(bytes, argb, name, v.width, v.height, obj, frame)
            val low = t.addMask(frame, obj, mask, consts)
            showPrompted(t, frame, obj, low, v.frame(frame))
            resetPrompt()
            info("object $obj on frame $frame: mask from $name (${mask.count { it }} pixels); Track, or New object for the next")
        }
    }

    private fun displayName(uri: Uri): String =
        contentResolver.query(uri, arrayOf(OpenableColumns.DISPLAY_NAME), null, null, null)?.use { c ->
            if (c.moveToFirst()) c.getString(0) else null
        } ?: uri.lastPathSegment ?: "the mask"

    /** Every object's mask on `frame`, with `obj`'s new one (objects not prompted there show as absent). */
    private fun showPrompted(t: Tracker, frame: Int, obj: Int, low: FloatArray, bmp: Bitmap) {
        val ids = t.objIds
        val all = FloatArray(ids.size * low.size) { -1024f }
        System.arraycopy(low, 0, all, ids.indexOf(obj) * low.size, low.size)
        render(bmp, FrameResult(frame, ids, all, t.cfg.lowResSize))
    }

    private fun newObject() {
        val t = tracker
        if (t != null && t.objects.size >= MAX_OBJECTS) {
            error("this app tracks at most $MAX_OBJECTS objects; press Clear to start over")
            return
        }
        if (t != null && t.objects.containsKey(currentObject)) currentObject++
        resetPrompt()
        info("now prompting object $currentObject")
    }

    private fun clearAll() = background {
        val t = tracker ?: return@background
        newTracker(t.numFrames, t.videoWidth, t.videoHeight)
        cameraTracking = false
        showFrame(currentFrame)
        info("cleared")
    }

    // ---- tracking and display ----------------------------------------------------
    /**
     * Track from where the latest prompts take effect (Tracker.resumeStart(): just after a
     * correction, which keeps its mask, else the first prompted frame) to the last frame.
     */
    private fun trackVideo() = background {
        val t = tracker ?: throw IllegalArgumentException("open a video first")
        val v = video ?: throw IllegalArgumentException("Track runs over a video; in camera mode tracking is live")
        val from = t.resumeStart() ?: throw PromptException("no new prompts since the last Track; tap an object to add or correct it")
        val start = System.nanoTime()
        var n = 0
        t.propagate(start = from, keepCorrections = true) { r ->
            store(r)
            n++
            if (n % 5 == 0 || r.frameIdx == v.numFrames - 1) {
                render(v.frame(r.frameIdx), r)
                main.post { seek.progress = r.frameIdx }
            }
            info("tracking frame ${r.frameIdx + 1} / ${v.numFrames}")
            !screen.closed
        }
        resetPrompt()
        val ms = (System.nanoTime() - start) / 1e6 / maxOf(n, 1)
        info("tracked $n frames from frame $from (%.0f ms/frame); scrub to review, tap to correct".format(ms))
    }

    private fun store(r: FrameResult) {
        val q = ByteArray(r.lowRes.size) { (maxOf(-127f, minOf(127f, r.lowRes[it] * 4f))).toInt().toByte() }
        results[r.frameIdx] = Pair(r.objIds, q)
    }

    private fun showFrame(i: Int) = background {
        val v = video ?: return@background
        currentFrame = i
        resetPrompt()
        val stored = results[i]
        val bmp = v.frame(i)
        if (stored == null) {
            main.post {
                overlay.showFrame(bmp)
                overlay.showMasks(null, 0, 0)
            }
        } else {
            val low = FloatArray(stored.second.size) { stored.second[it] / 4f }
            render(bmp, FrameResult(i, stored.first, low, requireModels().manifest.tracker.lowResSize))
        }
    }

    /** Upsample every object's logits to the frame, pick the winning object per pixel, draw. */
    private fun render(bmp: Bitmap, r: FrameResult) {
        val w = bmp.width
        val h = bmp.height
        val lr = r.lowResSize
        // Draw at most ~640 px wide: the overlay is for the eye, the logits stay low-res.
        val s = minOf(1f, 640f / w)
        val dw = maxOf(1, (w * s).toInt())
        val dh = maxOf(1, (h * s).toInt())
        val up = PostProcess.upsampleBilinear(r.lowRes, r.objIds.size, lr, lr, dh, dw)
        val labels = PostProcess.labelMap(up, r.objIds, dh, dw)
        main.post {
            overlay.showFrame(bmp)
            overlay.showMasks(labels, dw, dh)
        }
    }

    private fun benchmark() = background {
        val m = requireModels()
        stopCamera()
        info("benchmark: ${BENCH_WARMUP} warm-up + ${BENCH_FRAMES} timed frames ...")
        val file = Benchmark(m.loaded, m.runner, "xnnpack").run(video, BENCH_FRAMES, BENCH_WARMUP, getExternalFilesDir("bench")!!) { info(it) }
        info("benchmark written to ${file.path}; adb pull it into benchmarks/device_results/")
    }
}
