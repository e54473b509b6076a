package org.etam.demo

import android.content.Context
import etam.mobile.core.BenchmarkReport
import etam.mobile.core.Manifest
import etam.mobile.core.ManifestException
import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

/**
 * Where the app looks for the export folder: `<external files>/etam/` (the README's `adb push`
 * target). Everything is checked before the first frame: manifest format and contract, that
 * every artifact exists and matches its SHA-256 in the manifest.
 */
object ModelStore {
    const val FOLDER = "etam"

    fun folder(context: Context): File = File(context.getExternalFilesDir(null), FOLDER)

    class Loaded(val folder: File, val manifest: Manifest, val manifestSha256: String)

    /** Throws ManifestException with a message for the user. */
    fun open(context: Context, target: String = "executorch", verify: Boolean = true): Loaded {
        val dir = folder(context)
        if (!dir.isDirectory) {
            throw ManifestException("no models found: push an export folder to ${dir.path} (see README: adb push export/. ${dir.path})")
        }
        val manifest = Manifest.load(dir)
        for (stage in Manifest.STAGES) {
            val rel = manifest.artifact(stage, target)
            val file = File(dir, rel)
            if (!file.isFile) throw ManifestException("$rel is missing from ${dir.path} (interrupted copy?); push the whole export folder again")
            if (verify) {
                val want = manifest.checksums[rel]
                    ?: throw ManifestException("manifest.json has no checksum for $rel; re-export the folder")
                if (sha256(file) != want) throw ManifestException("$rel does not match its SHA-256 in manifest.json (altered or truncated); push it again")
            }
        }
        val sha = BenchmarkReport.sha256Hex(File(dir, Manifest.FILE_NAME).readBytes())
        return Loaded(dir, manifest, sha)
    }

    fun sha256(file: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        FileInputStream(file).use { input ->
            val buf = ByteArray(1 shl 20)
            while (true) {
                val n = input.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return md.digest().joinToString("") { String.format("%02x", it.toInt() and 0xFF) }
    }
}

/** One loaded model set: the checked export folder and its ExecuTorch runner (EtamApp holds it). */
class Models(val loaded: ModelStore.Loaded, val runner: ExecuTorchStageRunner) {
    val manifest get() = loaded.manifest
    val preprocessor = BitmapPreprocessor(loaded.manifest)

    fun close() = runner.close()

    companion object {
        /** Throws ManifestException / ModelException with a message for the user. */
        fun load(context: Context): Models {
            val loaded = ModelStore.open(context)
            return Models(loaded, ExecuTorchStageRunner(loaded.folder, loaded.manifest))
        }
    }
}
