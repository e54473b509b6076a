// Versions in one place. The ExecuTorch runtime must be able to read the .pte files the
// Python exporter wrote: use the executorch-android release matching the exporter's
// executorch version when one is published (see README, "Versions").
plugins {
    id("com.android.application") version "8.5.2" apply false
    id("org.jetbrains.kotlin.android") version "1.9.24" apply false
    id("org.jetbrains.kotlin.jvm") version "1.9.24" apply false
}
