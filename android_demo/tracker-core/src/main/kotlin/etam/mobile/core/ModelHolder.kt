package etam.mobile.core

/**
 * The app's one loaded model set, shared by every screen (video and photo), so the graphs are
 * loaded once, never once per screen.
 *
 * `acquire()` loads on first use and hands every screen the same instance; a screen calls
 * `release()` when it goes away. `trim()` (the system's low-memory signal) closes the models only
 * when no screen holds them, so nothing is closed under a running tracker; the next `acquire()`
 * loads again. A failed load is not kept: the exception reaches the caller and the next call
 * tries again. Thread-safe; a second caller during a load waits for it instead of loading twice.
 */
class ModelHolder<M : Any>(private val load: () -> M, private val close: (M) -> Unit) {
    private val lock = Any()
    private var model: M? = null
    private var holders = 0

    /** How many loads were started and how many models were closed (tests, status line). */
    var loads = 0
        private set
    var closes = 0
        private set

    /** Screens holding the models now. */
    val users: Int get() = synchronized(lock) { holders }

    /** The loaded models, if any (never loads). */
    val loaded: M? get() = synchronized(lock) { model }

    fun acquire(): M = synchronized(lock) {
        val m = model ?: run {
            loads++
            load().also { model = it }
        }
        holders++
        m
    }

    /** The screen that acquired `m` is done with it; the models stay loaded for the next screen. */
    fun release(m: M) = synchronized(lock) {
        if (m === model && holders > 0) holders--
    }

    /** Close the models if no screen holds them (low memory). Returns whether they were closed. */
    fun trim(): Boolean = synchronized(lock) {
        val m = model
        if (m == null || holders > 0) return@synchronized false
        model = null
        closes++
        close(m)
        true
    }
}
