// swift-tools-version:6.0
// EtamKit: the platform-free tracker core (manifest, preprocessing, prompts, memory bank,
// decisions, post-processing, tracker state machine, tracking engine, benchmark maths). It
// builds and is tested on Linux too (`swift build && swift test`, run by `make test`).
// EtamCoreML: the Core ML stage runner; it compiles to an empty module where Core ML does not
// exist, so the whole package builds everywhere. Any new .swift file dropped into
// Sources/EtamKit is part of the core; fixtures go to Tests/EtamKitTests/Fixtures.
import PackageDescription

let package = Package(
    name: "EtamKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EtamKit", targets: ["EtamKit"]),
        .library(name: "EtamCoreML", targets: ["EtamCoreML"]),
    ],
    targets: [
        .target(name: "EtamKit", path: "Sources/EtamKit"),
        .target(name: "EtamCoreML", dependencies: ["EtamKit"], path: "Sources/EtamCoreML"),
        .testTarget(
            name: "EtamKitTests",
            dependencies: ["EtamKit"],
            path: "Tests/EtamKitTests",
            resources: [.copy("Fixtures")]
        ),
        // Imports EtamKit without @testable, as the app does: access-level mistakes fail here.
        .testTarget(
            name: "EtamKitAPITests",
            dependencies: ["EtamKit", "EtamCoreML"],
            path: "Tests/EtamKitAPITests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
