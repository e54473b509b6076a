package etam.mobile.core

/** A malformed JSON text or a JSON value of the wrong kind; the message names the path. */
class JsonException(message: String) : RuntimeException(message)

/**
 * A tiny JSON reader and writer, so tracker-core needs no third-party library.
 *
 * Values map to Kotlin as: object -> LinkedHashMap<String, Any?> (key order kept),
 * array -> ArrayList<Any?>, number -> Double, string -> String, true/false -> Boolean, null -> null.
 */
object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        p.skipWs()
        val v = p.value()
        p.skipWs()
        if (!p.atEnd()) throw p.error("unexpected trailing characters")
        return v
    }

    /** Parse a document whose top level must be an object. */
    fun parseObject(text: String, what: String): JsonObject {
        val v = parse(text)
        if (v !is Map<*, *>) throw JsonException("$what: top level must be a JSON object")
        @Suppress("UNCHECKED_CAST")
        return JsonObject(v as Map<String, Any?>, what)
    }

    /** Compact-ish JSON with 1-space indentation (maps keep insertion order). */
    fun write(value: Any?): String {
        val sb = StringBuilder()
        writeValue(sb, value, 0)
        sb.append('\n')
        return sb.toString()
    }

    private fun indent(sb: StringBuilder, depth: Int) {
        sb.append('\n')
        for (i in 0 until depth) sb.append(' ')
    }

    private fun writeValue(sb: StringBuilder, value: Any?, depth: Int) {
        when (value) {
            null -> sb.append("null")
            is String -> writeString(sb, value)
            is Boolean -> sb.append(if (value) "true" else "false")
            is Int, is Long, is Short, is Byte -> sb.append(value.toString())
            is Number -> {
                val d = value.toDouble()
                if (d.isNaN() || d.isInfinite()) sb.append("null")
                else if (d == Math.rint(d) && Math.abs(d) < 1e15) sb.append(d.toLong().toString())
                else sb.append(d.toString())
            }
            is Map<*, *> -> {
                if (value.isEmpty()) { sb.append("{}"); return }
                sb.append('{')
                var first = true
                for ((k, v) in value) {
                    if (!first) sb.append(',')
                    first = false
                    indent(sb, depth + 1)
                    writeString(sb, k.toString())
                    sb.append(": ")
                    writeValue(sb, v, depth + 1)
                }
                indent(sb, depth)
                sb.append('}')
            }
            is Iterable<*> -> writeList(sb, value.toList(), depth)
            is IntArray -> writeList(sb, value.toList(), depth)
            is FloatArray -> writeList(sb, value.toList(), depth)
            is DoubleArray -> writeList(sb, value.toList(), depth)
            else -> writeString(sb, value.toString())
        }
    }

    private fun writeList(sb: StringBuilder, list: List<Any?>, depth: Int) {
        if (list.isEmpty()) { sb.append("[]"); return }
        val scalars = list.all { it == null || it is Number || it is Boolean }
        sb.append('[')
        for ((i, v) in list.withIndex()) {
            if (i > 0) sb.append(if (scalars) ", " else ",")
            if (!scalars) indent(sb, depth + 1)
            writeValue(sb, v, depth + 1)
        }
        if (!scalars) indent(sb, depth)
        sb.append(']')
    }

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when {
                c == '"' -> sb.append("\\\"")
                c == '\\' -> sb.append("\\\\")
                c == '\n' -> sb.append("\\n")
                c == '\r' -> sb.append("\\r")
                c == '\t' -> sb.append("\\t")
                c.toInt() < 0x20 -> sb.append(String.format("\\u%04x", c.toInt()))
                else -> sb.append(c)
            }
        }
        sb.append('"')
    }

    private class Parser(val s: String) {
        var i = 0

        fun atEnd() = i >= s.length

        fun error(msg: String): JsonException {
            var line = 1
            var col = 1
            for (k in 0 until minOf(i, s.length)) {
                if (s[k] == '\n') { line++; col = 1 } else col++
            }
            return JsonException("invalid JSON at line $line column $col: $msg")
        }

        fun skipWs() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(): Any? {
            if (atEnd()) throw error("unexpected end of text")
            return when (val c = s[i]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || (c in '0'..'9')) num() else throw error("unexpected character '$c'")
            }
        }

        fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, i)) throw error("expected '$word'")
            i += word.length
            return v
        }

        fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++
            skipWs()
            if (i < s.length && s[i] == '}') { i++; return out }
            while (true) {
                skipWs()
                if (atEnd() || s[i] != '"') throw error("expected a string key")
                val k = str()
                skipWs()
                if (atEnd() || s[i] != ':') throw error("expected ':'")
                i++
                skipWs()
                out[k] = value()
                skipWs()
                if (atEnd()) throw error("unterminated object")
                if (s[i] == ',') { i++; continue }
                if (s[i] == '}') { i++; return out }
                throw error("expected ',' or '}'")
            }
        }

        fun arr(): List<Any?> {
            val out = ArrayList<Any?>()
            i++
            skipWs()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                skipWs()
                out.add(value())
                skipWs()
                if (atEnd()) throw error("unterminated array")
                if (s[i] == ',') { i++; continue }
                if (s[i] == ']') { i++; return out }
                throw error("expected ',' or ']'")
            }
        }

        fun str(): String {
            val sb = StringBuilder()
            i++
            while (true) {
                if (atEnd()) throw error("unterminated string")
                val c = s[i++]
                when (c) {
                    '"' -> return sb.toString()
                    '\\' -> {
                        if (atEnd()) throw error("unterminated escape")
                        when (val e = s[i++]) {
                            '"' -> sb.append('"')
                            '\\' -> sb.append('\\')
                            '/' -> sb.append('/')
                            'b' -> sb.append('\b')
                            'f' -> sb.append('\u000C')
                            'n' -> sb.append('\n')
                            'r' -> sb.append('\r')
                            't' -> sb.append('\t')
                            'u' -> {
                                if (i + 4 > s.length) throw error("bad \\u escape")
                                val code = s.substring(i, i + 4).toIntOrNull(16) ?: throw error("bad \\u escape")
                                sb.append(code.toChar())
                                i += 4
                            }
                            else -> throw error("bad escape '\\$e'")
                        }
                    }
                    else -> sb.append(c)
                }
            }
        }

        fun num(): Double {
            val start = i
            if (s[i] == '-') i++
            while (i < s.length && (s[i] in '0'..'9' || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' || s[i] == '-')) i++
            val text = s.substring(start, i)
            return text.toDoubleOrNull() ?: throw error("bad number '$text'")
        }
    }
}

/** Typed, path-aware access to a parsed JSON object: errors say which key was wrong. */
class JsonObject(val map: Map<String, Any?>, val path: String) {
    fun has(key: String) = map.containsKey(key) && map[key] != null

    private fun need(key: String): Any = map[key] ?: throw JsonException("$path lacks '$key'")

    fun obj(key: String): JsonObject {
        val v = need(key)
        if (v !is Map<*, *>) throw JsonException("$path.$key must be an object")
        @Suppress("UNCHECKED_CAST")
        return JsonObject(v as Map<String, Any?>, "$path.$key")
    }

    fun list(key: String): List<Any?> {
        val v = need(key)
        if (v !is List<*>) throw JsonException("$path.$key must be an array")
        return v
    }

    fun objects(key: String): List<JsonObject> = list(key).mapIndexed { i, v ->
        if (v !is Map<*, *>) throw JsonException("$path.$key[$i] must be an object")
        @Suppress("UNCHECKED_CAST")
        JsonObject(v as Map<String, Any?>, "$path.$key[$i]")
    }

    fun string(key: String): String = need(key) as? String ?: throw JsonException("$path.$key must be a string")

    fun bool(key: String): Boolean = need(key) as? Boolean ?: throw JsonException("$path.$key must be true or false")

    fun double(key: String): Double = (need(key) as? Double) ?: throw JsonException("$path.$key must be a number")

    fun int(key: String): Int = toInt(need(key), "$path.$key")

    fun intList(key: String): List<Int> = list(key).mapIndexed { i, v -> toInt(v, "$path.$key[$i]") }

    fun doubleList(key: String): List<Double> = list(key).mapIndexed { i, v ->
        v as? Double ?: throw JsonException("$path.$key[$i] must be a number")
    }

    fun floatArray(key: String): FloatArray {
        val l = doubleList(key)
        return FloatArray(l.size) { l[it].toFloat() }
    }

    fun intArray(key: String): IntArray = intList(key).toIntArray()

    companion object {
        fun toInt(v: Any?, where: String): Int {
            val d = v as? Double ?: throw JsonException("$where must be an integer")
            if (d != Math.rint(d) || d > Int.MAX_VALUE || d < Int.MIN_VALUE) throw JsonException("$where must be an integer, got $d")
            return d.toInt()
        }
    }
}
