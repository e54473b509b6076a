import EtamKit
import Foundation
import XCTest

/// After a correction click, Track continues from the corrected frame and keeps the correction;
/// camera frames that arrive during a step are dropped.
final class CorrectionAndCameraTests: XCTestCase {
    private func tracker(_ m: Manifest, frames: Int) throws -> Tracker {
        let source = SyntheticFrameSource(numFrames: frames, width: 128, height: 96)
        var input = [Float](repeating: 0, count: 3 * m.imageSize * m.imageSize)
        return try Tracker(runner: MixRunner(cfg: m.tracker), cfg: m.tracker, numFrames: frames, videoWidth: 128, videoHeight: 96) { i in
            let f = try source.frame(i)
            Preprocess.modelInput(f.rgb, width: f.width, height: f.height, manifest: m, into: &input)
            return input
        }
    }

    private func run(_ t: Tracker, start: Int?, keep: Bool) throws -> [Int: [Float]] {
        var out: [Int: [Float]] = [:]
        try t.propagate(start: start, keepCorrections: keep) { r in
            out[r.frame] = r.lowRes
            return true
        }
        return out
    }

    private let click = Prompt(points: [SIMD2<Float>(30, 40)], labels: [1])
    private let fix = Prompt(points: [SIMD2<Float>(90, 50), SIMD2<Float>(30, 40)], labels: [1, 0])

    func testResumingAfterACorrectionEqualsTrackingEverythingAgainWithItKept() throws {
        let m = try APIFixtures.manifest()
        let a = try tracker(m, frames: 12), b = try tracker(m, frames: 12), up = try tracker(m, frames: 12)
        var corrected: [Float] = []
        for t in [a, b, up] {
            try t.addPrompt(frame: 0, objId: 1, prompt: click)
            _ = try run(t, start: nil, keep: false)
            corrected = try t.addPrompt(frame: 5, objId: 1, prompt: fix)
        }
        XCTAssertEqual(a.resumeStart(), 6, "a correction on frame 5 resumes at frame 6")
        let resumed = try run(a, start: a.resumeStart(), keep: true)
        XCTAssertEqual(resumed.keys.sorted(), Array(6..<12))
        let full = try run(b, start: nil, keep: true)
        XCTAssertEqual(full[5], corrected, "the corrected mask is kept")
        for f in 6..<12 { XCTAssertTrue(resumed[f] == full[f], "frame \(f)") }
        // Upstream's order re-tracks frame 5 and loses the correction: what the app must not do.
        let upstream = try run(up, start: nil, keep: false)
        XCTAssertNotEqual(upstream[5], corrected)
    }

    func testANewConditioningFrameOrAPrunedWindowRestartsAtTheFirstPrompt() throws {
        let m = try APIFixtures.manifest()
        let t = try tracker(m, frames: 40)
        try t.addPrompt(frame: 2, objId: 1, prompt: click)
        XCTAssertEqual(t.resumeStart(), 2)
        _ = try run(t, start: t.resumeStart(), keep: true)
        XCTAssertNil(t.resumeStart())
        // Frame 10's memory window was pruned while tracking to frame 39: start over at frame 2.
        try t.addPrompt(frame: 10, objId: 1, prompt: fix)
        XCTAssertEqual(t.resumeStart(), 2)
        let again = try run(t, start: t.resumeStart(), keep: true)
        XCTAssertEqual(again.keys.min(), 2)
        // A correction on the last frame still has its window (nothing left to track).
        try t.addPrompt(frame: 39, objId: 1, prompt: fix)
        XCTAssertEqual(t.resumeStart(), 40)
        // A second object is a new conditioning frame, which every frame's memory sees.
        try t.addPrompt(frame: 20, objId: 2, prompt: click)
        XCTAssertEqual(t.resumeStart(), 2)
    }

    func testKeepingAllMemoriesResumesAnywhereWithTheSameResults() throws {
        let m = try APIFixtures.manifest()
        let kept = try tracker(m, frames: 30), keptFull = try tracker(m, frames: 30), pruned = try tracker(m, frames: 30)
        kept.keepAllMemories = true
        keptFull.keepAllMemories = true
        var firstRuns: [[Int: [Float]]] = []
        for t in [kept, keptFull, pruned] {
            try t.addPrompt(frame: 0, objId: 1, prompt: click)
            firstRuns.append(try run(t, start: nil, keep: true))
            try t.addPrompt(frame: 8, objId: 1, prompt: fix)
        }
        XCTAssertEqual(firstRuns[0], firstRuns[2], "keeping memories changes no tracking result")
        XCTAssertEqual(kept.resumeStart(), 9)
        XCTAssertEqual(pruned.resumeStart(), 0, "frame 8's window was pruned")
        let resumed = try run(kept, start: kept.resumeStart(), keep: true)
        let full = try run(keptFull, start: 0, keep: true)
        XCTAssertEqual(resumed.keys.sorted(), Array(9..<30))
        for f in 9..<30 { XCTAssertTrue(resumed[f] == full[f], "frame \(f)") }
    }

    func testCameraStepsTrackEachAdmittedFrameAndTheGateDropsTheRest() async throws {
        let m = try APIFixtures.manifest()
        let engine = TrackingEngine(manifest: m, runner: MixRunner(cfg: m.tracker))
        let cam = SyntheticFrameSource(numFrames: 100, width: 160, height: 120)
        let first = try await engine.cameraStep(try cam.frame(0))
        XCTAssertEqual(first.index, 0)
        XCTAssertNil(first.result, "nothing is tracked before a tap")
        _ = try await engine.addPrompt(frame: 0, objId: 1, prompt: click)
        for i in 1...3 {
            let step = try await engine.cameraStep(try cam.frame(i))
            XCTAssertEqual(step.index, i)
            XCTAssertEqual(step.result?.frame, i)
            XCTAssertEqual(step.result?.objIds, [1])
        }
        // Many callbacks at once: exactly one step runs at a time, the others are dropped.
        let gate = StepGate()
        let running = Collector<Int>()
        let active = Collector<Int>()  // +1 / -1 events in order
        DispatchQueue.concurrentPerform(iterations: 64) { i in
            guard gate.tryEnter() else { return }
            active.add(1)
            Thread.sleep(forTimeInterval: 0.002)
            running.add(i)
            active.add(-1)
            gate.leave()
        }
        let c = gate.counts
        XCTAssertEqual(c.admitted + c.dropped, 64)
        XCTAssertEqual(c.admitted, running.values.count)
        var level = 0, maxLevel = 0
        for d in active.values {
            level += d
            maxLevel = max(maxLevel, level)
        }
        XCTAssertEqual(maxLevel, 1, "two steps ran at once")
    }
}
