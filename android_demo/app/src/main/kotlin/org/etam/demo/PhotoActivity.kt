package org.etam.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import android.os.Bundle
import android.widget.Button
import android.widget.RadioGroup
import android.widget.TextView
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import etam.mobile.core.ImageMode
import etam.mobile.core.ImageResult
import etam.mobile.core.ImageSession
import etam.mobile.core.ManifestException
import etam.mobile.core.Preprocess
import etam.mobile.core.Prompt
import etam.mobile.core.PromptException

/**
 * Photo mode: pick a photo (encoded once), tap points or drag a box, see up to three candidate
 * masks with their predicted IoU, choose one. A single click gives three candidates (upstream's
 * advice for ambiguous prompts); a box or several clicks give one, refined from the chosen mask.
 * Every failure becomes a red message in the status line, never a crash.
 */
class PhotoActivity : AppCompatActivity(), OverlayView.Listener {
    private lateinit var screen: Screen
    private lateinit var overlay: OverlayView
    private lateinit var status: TextView
    private lateinit var candidateButtons: List<Button>

    /** Image mode on the app's shared models (EtamApp): no second copy of the graphs. */
    private var session: ImageSession? = null
    private var photo: Bitmap? = null
    private var result: ImageResult? = null
    private var chosen = 0

    private val clicks = ArrayList<FloatArray>()
    private val clickLabels = ArrayList<Int>()
    private var box: FloatArray? = null

    private val pickPhoto = registerForActivityResult(ActivityResultContracts.GetContent()) { uri: Uri? ->
        if (uri != null) openPhoto(uri)
    }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_photo)
        overlay = findViewById(R.id.photo_overlay)
        status = findViewById(R.id.photo_status)
        screen = Screen(this, status)
        overlay.listener = this
        findViewById<RadioGroup>(R.id.photo_mode).setOnCheckedChangeListener { _, id -> overlay.boxMode = id == R.id.photo_mode_box }
        findViewById<Button>(R.id.pick_photo).setOnClickListener { pickPhoto.launch("image/*") }
        findViewById<Button>(R.id.photo_clear).setOnClickListener { clearPrompt() }
        candidateButtons = listOf(R.id.candidate_0, R.id.candidate_1, R.id.candidate_2).map { id -> findViewById<Button>(id) }
        candidateButtons.forEachIndexed { k, b -> b.setOnClickListener { choose(k) } }
        showCandidates()
        screen.loadModels { m ->
            session = ImageSession(m.runner, m.manifest.tracker)
            info("${m.manifest.config} ready; pick a photo")
        }
    }

    override fun onDestroy() {
        super.onDestroy()
        screen.close() // the models stay loaded for the video screen
    }

    private fun info(msg: String) = screen.info(msg)

    private fun error(msg: String) = screen.error(msg)

    private fun background(block: () -> Unit) = screen.background("out of memory: pick a smaller photo", block)

    private fun openPhoto(uri: Uri) = background {
        val s = session ?: throw ManifestException("models are not loaded: ${status.text}")
        val bmp = contentResolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it) }
            ?: throw PromptException("this file is not a readable image; pick a JPEG or PNG photo")
        val t0 = System.nanoTime()
        // upstream's image-predictor preprocessing (antialiased bilinear), not the video path's
        val argb = IntArray(bmp.width * bmp.height)
        val src = if (bmp.config == Bitmap.Config.ARGB_8888) bmp else bmp.copy(Bitmap.Config.ARGB_8888, false)
        src.getPixels(argb, 0, src.width, 0, 0, src.width, src.height)
        s.setImage(ImageMode.modelInput(Preprocess.argbToRgb(argb), bmp.width, bmp.height, screen.requireModels().manifest), bmp.width, bmp.height)
        val ms = (System.nanoTime() - t0) / 1e6
        photo = bmp
        clicks.clear(); clickLabels.clear(); box = null; result = null
        runOnUiThread {
            overlay.showFrame(bmp)
            overlay.showMasks(null, bmp.width, bmp.height)
            overlay.setMarks(emptyList())
            showCandidates()
        }
        info("${bmp.width}x${bmp.height} photo encoded in ${"%.0f".format(ms)} ms: tap the object or drag a box")
    }

    override fun onTap(x: Float, y: Float, inside: Boolean) {
        val label = if (findViewById<RadioGroup>(R.id.photo_mode).checkedRadioButtonId == R.id.photo_mode_negative) 0 else 1
        if (!inside) {
            error("the tap is outside the photo; tap inside the picture")
            return
        }
        clicks.add(floatArrayOf(x, y))
        clickLabels.add(label)
        predict()
    }

    override fun onBox(x0: Float, y0: Float, x1: Float, y1: Float, inside: Boolean) {
        if (!inside) {
            error("the box is outside the photo; drag inside the picture")
            return
        }
        box = floatArrayOf(minOf(x0, x1), minOf(y0, y1), maxOf(x0, x1), maxOf(y0, y1))
        predict()
    }

    private fun predict() {
        val prompt = Prompt(ArrayList(clicks), ArrayList(clickLabels), box)
        val marks = clicks.mapIndexed { i, p -> Triple(p[0], p[1], clickLabels[i]) }
        overlay.setMarks(marks)
        background {
            val s = session ?: throw ManifestException("models are not loaded: ${status.text}")
            if (!s.hasImage) throw PromptException("pick a photo first")
            val multimask = box == null && clicks.size == 1
            // Refining: feed the chosen candidate's low-res logits back, as upstream's examples do.
            val prev = result
            val lr2 = s.cfg.lowResSize * s.cfg.lowResSize
            val maskInput = if (!multimask && prev != null) prev.lowRes.copyOfRange(chosen * lr2, (chosen + 1) * lr2) else null
            val t0 = System.nanoTime()
            val r = s.predict(prompt, multimask, maskInput)
            val ms = (System.nanoTime() - t0) / 1e6
            result = r
            chosen = r.best
            runOnUiThread { showCandidates(); showChosen() }
            info("${r.count} candidate(s) in ${"%.0f".format(ms)} ms; choose one")
        }
    }

    private fun choose(k: Int) {
        val r = result ?: return
        if (k >= r.count) return
        chosen = k
        showCandidates()
        showChosen()
    }

    private fun showCandidates() {
        val r = result
        candidateButtons.forEachIndexed { k, b ->
            val has = r != null && k < r.count
            b.isEnabled = has
            b.text = if (has) "${if (k == chosen) "✓ " else ""}mask ${k + 1}: ${"%.2f".format(r!!.scores[k])}" else "–"
        }
    }

    private fun showChosen() {
        val r = result ?: return
        val m = r.mask(chosen)
        overlay.showMasks(IntArray(m.size) { if (m[it]) 1 else 0 }, r.width, r.height)
    }

    private fun clearPrompt() {
        clicks.clear(); clickLabels.clear(); box = null; result = null
        overlay.setMarks(emptyList())
        photo?.let { overlay.showMasks(null, it.width, it.height) }
        showCandidates()
        info("prompt cleared: tap the object or drag a box")
    }
}
