package org.etam.demo

import android.app.Application
import android.content.ComponentCallbacks2
import etam.mobile.core.ModelHolder
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Application-scoped model state: one loaded model set (tracker-core's ModelHolder) that the
 * video and the photo screen share, and the one thread every model call runs on, so the two
 * screens never use the ExecuTorch modules (and their reused input buffers) at the same time.
 * On low memory the models are closed when no screen holds them; the next screen loads again.
 */
class EtamApp : Application() {
    val modelThread: ExecutorService = Executors.newSingleThreadExecutor()
    val models = ModelHolder({ Models.load(this) }, { m: Models -> m.close() })

    override fun onTrimMemory(level: Int) {
        super.onTrimMemory(level)
        if (level >= ComponentCallbacks2.TRIM_MEMORY_BACKGROUND) modelThread.execute { models.trim() }
    }

    override fun onLowMemory() {
        super.onLowMemory()
        modelThread.execute { models.trim() }
    }
}
