package etam.mobile.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesAllValueKinds() {
        val v = Json.parseObject("""{"a": [1, -2.5e2, true, false, null], "s": "x\"\u00e9\n", "o": {}}""", "t")
        val a = v.list("a")
        assertEquals(1.0, a[0])
        assertEquals(-250.0, a[1])
        assertEquals(true, a[2])
        assertEquals(false, a[3])
        assertEquals(null, a[4])
        assertEquals("x\"\u00e9\n", v.string("s"))
        assertTrue(v.obj("o").map.isEmpty())
    }

    @Test
    fun keepsKeyOrderAndRoundTrips() {
        val text = Json.write(linkedMapOf("z" to 1, "a" to listOf(1.5, 2), "m" to linkedMapOf("k" to "v")))
        val back = Json.parseObject(text, "t")
        assertEquals(listOf("z", "a", "m"), back.map.keys.toList())
        assertEquals(listOf(1.5, 2.0), back.doubleList("a"))
    }

    @Test
    fun reportsErrorsWithPosition() {
        for (bad in listOf("{", "{\"a\" 1}", "[1,]", "{\"a\": tru}", "1 2", "\"abc")) {
            try {
                Json.parse(bad)
                fail("no error for $bad")
            } catch (e: JsonException) {
                assertTrue(e.message!!, e.message!!.startsWith("invalid JSON at line"))
            }
        }
    }

    @Test
    fun typedAccessNamesThePath() {
        val o = Json.parseObject("""{"a": {"b": 1.5}}""", "doc")
        try {
            o.obj("a").int("b")
            fail()
        } catch (e: JsonException) {
            assertTrue(e.message!!.contains("doc.a.b"))
        }
    }
}
