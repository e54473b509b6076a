plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// Must match the exporter's executorch (setup.cfg pins executorch==1.4.1; manifest.json records it and
// the app refuses .pte files from other versions): ExecuTorch promises no forward compatibility of .pte files.
val executorchVersion = "1.4.1"

android {
    namespace = "org.etam.demo"
    compileSdk = 34

    defaultConfig {
        applicationId = "org.etam.demo"
        minSdk = 28 // MediaMetadataRetriever.getFrameAtIndex
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        ndk {
            abiFilters += listOf("arm64-v8a")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    buildFeatures {
        buildConfig = true
    }
}

val cameraxVersion = "1.3.4"

dependencies {
    implementation(project(":tracker-core"))
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.facebook.soloader:soloader:0.10.5")
    implementation("com.facebook.fbjni:fbjni:0.5.1")
    implementation("androidx.appcompat:appcompat:1.7.0")
    implementation("androidx.camera:camera-core:$cameraxVersion")
    implementation("androidx.camera:camera-camera2:$cameraxVersion")
    implementation("androidx.camera:camera-lifecycle:$cameraxVersion")
    implementation("androidx.camera:camera-view:$cameraxVersion")
}
