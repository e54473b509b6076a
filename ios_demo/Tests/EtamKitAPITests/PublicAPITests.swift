import EtamKit
import Foundation
import XCTest

/// The app's uses of EtamKit, compiled without @testable: an internal initializer or property
/// the app needs fails to compile here.
final class PublicAPITests: XCTestCase {
    func testAppBuildsFrameResultsAndRendersThem() throws {
        let r = FrameResult(frame: 3, objIds: [1, 2], lowRes: [Float](repeating: -1, count: 2 * 4 * 4), lowResSize: 4)
        XCTAssertEqual(r.objIds, [1, 2])
        let up = PostProcess.upsampleBilinear(r.lowRes, planes: 2, inH: 4, inW: 4, outH: 8, outW: 6)
        XCTAssertEqual(PostProcess.labelMap(up, objIds: r.objIds, height: 8, width: 6), [Int](repeating: 0, count: 48))
        let p = Prompt(points: [SIMD2<Float>(1, 2)], labels: [1], box: nil)
        XCTAssertFalse(p.isEmpty)
        let t = PromptTensors(points: [0, 0], labels: [-1], numPoints: 0)
        XCTAssertEqual(t.numPoints, 0)
        _ = MaskChoice(maskIndex: 0, ptrIndex: 0, multimask: false, stability: 1)
        _ = TensorSpec(name: "x", shape: [1], dtype: "float32")
        _ = DecoderOutput(masks: [], iou: [], objPtr: [], objScore: 0)
    }

    func testManifestAndErrorsAsTheAppReadsThem() throws {
        let m = try APIFixtures.manifest()
        XCTAssertEqual(m.config, "test_tiny")
        XCTAssertEqual(m.tracker.imageSize, m.imageSize)
        XCTAssertEqual(try m.artifact("image_encoder", target: "coreml"), "image_encoder.mlpackage")
        XCTAssertFalse(m.weightsDescription.isEmpty)
        XCTAssertEqual(m.producers["coremltools"], "9.0")
        XCTAssertNoThrow(try m.requireProducer("coremltools", supported: Manifest.supportedCoreMLTools,
                                               install: Manifest.recommendedCoreMLTools, runtime: "this iOS app"))
        let e: EtamError = .prompt("x")
        XCTAssertEqual(e.message, "x")
    }

    func testTrackerWithAnAppDefinedRunner() throws {
        let m = try APIFixtures.manifest()
        let source = SyntheticFrameSource(numFrames: 6, width: 128, height: 96)
        var input = [Float](repeating: 0, count: 3 * m.imageSize * m.imageSize)
        let t = try Tracker(runner: MixRunner(cfg: m.tracker), cfg: m.tracker, numFrames: 6, videoWidth: 128, videoHeight: 96, maxObjects: 2) { i in
            let f = try source.frame(i)
            Preprocess.modelInput(f.rgb, width: f.width, height: f.height, manifest: m, into: &input)
            return input
        }
        try t.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(20, 40)], labels: [1]))
        var frames: [Int] = []
        try t.propagate { r in
            frames.append(r.frame)
            return true
        }
        XCTAssertEqual(frames, Array(0..<6))
    }

    /// As TrackingSession does: runner made on the main actor, handed to the engine actor;
    /// results published back through a @Sendable callback, never on the main thread.
    @MainActor
    func testEngineRunsOffTheMainActorAndPublishesResults() async throws {
        let m = try APIFixtures.manifest()
        let runner = MixRunner(cfg: m.tracker)
        let engine = TrackingEngine(manifest: m, runner: runner, modelLoadMs: 12.5)
        try await engine.open(SyntheticFrameSource(numFrames: 8, width: 128, height: 96))
        let shown = try await engine.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(30, 40)], labels: [1]))
        XCTAssertEqual(shown.objIds, [1])
        let seen = Collector<Int>()
        let onMain = Collector<Bool>()
        let summary = try await engine.propagate { r in
            onMain.add(Thread.isMainThread)
            seen.add(r.frame)
        }
        XCTAssertEqual(summary.start, 0)
        XCTAssertEqual(summary.framesTracked, 8)
        XCTAssertEqual(seen.values, Array(0..<8))
        XCTAssertEqual(onMain.values, [Bool](repeating: false, count: 8), "model calls ran on the main thread")
        // A second Track without a new prompt is a message, not a silent re-run.
        do {
            _ = try await engine.propagate { _ in }
            XCTFail("propagating twice without prompts should be refused")
        } catch let e as EtamError {
            XCTAssertTrue(e.message.contains("no new prompts"), e.message)
        }
    }

    func testPropagationStopsWhenTheTaskIsCancelled() async throws {
        let m = try APIFixtures.manifest()
        let engine = TrackingEngine(manifest: m, runner: MixRunner(cfg: m.tracker))
        try await engine.open(SyntheticFrameSource(numFrames: 30, width: 128, height: 96))
        _ = try await engine.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(30, 40)], labels: [1]))
        let seen = Collector<Int>()
        let task = Task {
            try await engine.propagate { r in
                seen.add(r.frame)
                if r.frame == 4 { withUnsafeCurrentTask { $0?.cancel() } }
            }
        }
        let summary = try await task.value
        XCTAssertTrue(summary.cancelled)
        XCTAssertEqual(seen.values, [0, 1, 2, 3, 4])
    }
}
