// swift-tools-version:5.9
// EtamKit: the platform-free tracker core (manifest, preprocessing, prompts, memory bank,
// decisions, post-processing, tracker state machine) plus a Core ML stage runner.
import PackageDescription

let package = Package(
    name: "EtamKit",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [
        .library(name: "EtamKit", targets: ["EtamKit"]),
    ],
    targets: [
        .target(name: "EtamKit", path: "Sources/EtamKit"),
        .testTarget(
            name: "EtamKitTests",
            dependencies: ["EtamKit"],
            path: "Tests/EtamKitTests",
            resources: [.copy("Fixtures")]
        ),
    ]
)
