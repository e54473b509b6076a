package org.etam.demo

import android.graphics.Color
import android.os.Handler
import android.os.Looper
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import etam.mobile.core.ManifestException
import etam.mobile.core.PromptException

/**
 * What both screens (video, photo) need around the models: the status line (grey info, red
 * error), work on the app's model thread with every failure turned into a message, and the
 * shared models, acquired when the screen starts and released when it is destroyed.
 */
class Screen(private val activity: AppCompatActivity, private val status: TextView) {
    private val app by lazy { activity.application as EtamApp }
    private val main = Handler(Looper.getMainLooper())

    /** The thread every model call runs on (shared by the screens). */
    val executor get() = app.modelThread

    /** Set once the screen is destroyed: queued work is skipped, long loops stop. */
    @Volatile
    var closed = false
        private set

    /** The shared models, once loaded (read them on the model thread). */
    var models: Models? = null
        private set

    fun info(msg: String) = main.post {
        status.setTextColor(Color.LTGRAY)
        status.text = msg
    }

    fun error(msg: String) = main.post {
        status.setTextColor(Color.rgb(255, 90, 90))
        status.text = msg
    }

    /** Runs `block` on the model thread; any failure becomes a message, never a crash. */
    fun background(outOfMemory: String, block: () -> Unit) = executor.execute {
        if (closed) return@execute
        try {
            block()
        } catch (e: PromptException) {
            error(e.message ?: "invalid prompt")
        } catch (e: ManifestException) {
            error(e.message ?: "unusable export folder")
        } catch (e: ModelException) {
            error(e.message ?: "model failure")
        } catch (e: IllegalArgumentException) {
            error(e.message ?: "invalid input")
        } catch (e: OutOfMemoryError) {
            error(outOfMemory)
        } catch (e: RuntimeException) {
            error("unexpected error: ${e.message}")
        }
    }

    /** Acquire the app's models (loaded by the first screen that asks), then `onReady` on the model thread. */
    fun loadModels(onReady: (Models) -> Unit) {
        info("loading models from ${ModelStore.folder(activity).path} ...")
        executor.execute {
            if (closed) return@execute
            try {
                val m = app.models.acquire()
                models = m
                onReady(m)
            } catch (e: ManifestException) {
                error(e.message ?: "unusable export folder")
            } catch (e: ModelException) {
                error(e.message ?: "model failure")
            } catch (e: RuntimeException) {
                error("models could not be loaded: ${e.message}")
            }
        }
    }

    fun requireModels(): Models = models ?: throw ManifestException("models are not loaded: ${status.text}")

    /** From onDestroy: skip queued work, and release the models after whatever is running. */
    fun close() {
        closed = true
        executor.execute {
            models?.let { app.models.release(it) }
            models = null
        }
    }
}
