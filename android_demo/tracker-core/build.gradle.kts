// Pure Kotlin/JVM: no Android dependency, so the core compiles and its trace-replay tests run
// anywhere (CI compiles it with Debian's kotlinc 1.3.31: see scripts/native_tests.sh).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}
