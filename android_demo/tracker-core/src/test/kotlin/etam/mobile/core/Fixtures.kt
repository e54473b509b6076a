package etam.mobile.core

/** Loads the fixtures written by scripts/make_traces.py (src/test/resources/traces/). */
object Fixtures {
    fun text(name: String): String {
        val url = Fixtures::class.java.classLoader.getResource("traces/$name")
            ?: throw AssertionError("fixture traces/$name not on the classpath; run scripts/make_traces.py")
        return url.readText()
    }

    fun obj(name: String): JsonObject = Json.parseObject(text(name), name)

    fun traceNames(): List<String> = obj("index.json").list("traces").map { it as String }
}
