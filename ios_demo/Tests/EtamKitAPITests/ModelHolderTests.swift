import EtamKit
import Foundation
import XCTest

/// A stand-in for the app's loaded Core ML models: only its identity matters here.
final class FakeModels: Sendable {
    let units: String
    init(units: String) { self.units = units }
}

/// The one model holder both screens (video, photo) use: loads once, same instance to everyone.
final class ModelHolderTests: XCTestCase {
    func testTwoScreensGetTheSameInstanceFromOneLoad() async throws {
        let started = Collector<String>()
        let holder = ModelHolder<String, FakeModels> { units in
            started.add(units)
            try await Task.sleep(nanoseconds: 20_000_000)  // both screens ask while the load runs
            return FakeModels(units: units)
        }
        async let video = holder.model(for: "ALL")
        async let photo = holder.model(for: "ALL")
        let (a, b) = try await (video, photo)
        XCTAssertTrue(a === b, "the photo screen got a second copy of the models")
        let again = try await holder.model(for: "ALL")
        XCTAssertTrue(again === a)
        XCTAssertEqual(started.values, ["ALL"])
        let loads = await holder.loads
        XCTAssertEqual(loads, 1)
    }

    func testOtherComputeUnitsReplaceTheModelsAndFailuresAreNotKept() async throws {
        let fail = Collector<Bool>()
        let holder = ModelHolder<String, FakeModels> { units in
            if fail.values.isEmpty {
                fail.add(true)
                throw EtamError.model("image_encoder.mlpackage failed to compile")
            }
            return FakeModels(units: units)
        }
        do {
            _ = try await holder.model(for: "ALL")
            XCTFail("the failing load should throw")
        } catch let e as EtamError {
            XCTAssertEqual(e.message, "image_encoder.mlpackage failed to compile")
        }
        let loadedAfterFailure = await holder.loaded
        XCTAssertNil(loadedAfterFailure)
        let all = try await holder.model(for: "ALL")  // tried again, not the cached failure
        let cpu = try await holder.model(for: "CPU_ONLY")
        XCTAssertFalse(all === cpu)
        XCTAssertEqual(cpu.units, "CPU_ONLY")
        let key = await holder.loadedKey
        XCTAssertEqual(key, "CPU_ONLY")
        let released = await holder.release()
        XCTAssertTrue(released)
        let reloaded = try await holder.model(for: "CPU_ONLY")
        XCTAssertFalse(reloaded === cpu)
        let loads = await holder.loads
        XCTAssertEqual(loads, 4)
    }

    /// Video and photo screens share one engine actor: the photo's encoder and decoder calls run
    /// on the same runner as the tracker, one at a time, and the video keeps its prompts.
    func testPhotoModeRunsOnTheVideoEngine() async throws {
        let m = try APIFixtures.manifest()
        let runner = MixRunner(cfg: m.tracker)
        let engine = TrackingEngine(manifest: m, runner: runner)
        try await engine.open(SyntheticFrameSource(numFrames: 4, width: 128, height: 96))
        _ = try await engine.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(30, 40)], labels: [1]))
        do {
            _ = try await engine.predictPhoto(Prompt(points: [SIMD2<Float>(1, 1)], labels: [1]), multimask: true)
            XCTFail("a prompt before a photo should be refused")
        } catch let e as EtamError {
            XCTAssertEqual(e.message, "pick a photo first")
        }
        let rgb = [UInt8](repeating: 90, count: 64 * 48 * 3)
        try await engine.setPhoto(modelInput: ImageMode.modelInput(rgb, width: 64, height: 48, manifest: m), width: 64, height: 48)
        let r = try await engine.predictPhoto(Prompt(points: [SIMD2<Float>(10, 10)], labels: [1]), multimask: true)
        XCTAssertEqual(r.count, 3)
        XCTAssertEqual(r.width, 64)
        let summary = try await engine.propagate { _ in }
        XCTAssertEqual(summary.framesTracked, 4, "the photo screen disturbed the video's prompts")
    }
}
