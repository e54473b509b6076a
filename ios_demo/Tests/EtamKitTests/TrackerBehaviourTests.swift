import XCTest
@testable import EtamKit

/// Bad input never crashes the tracker: it throws EtamError.prompt with a message for the UI.
final class TrackerBehaviourTests: XCTestCase {
    final class ConstRunner: StageRunner {
        let cfg: TrackerConfig
        let objScore: Float

        init(cfg: TrackerConfig, objScore: Float) {
            self.cfg = cfg
            self.objScore = objScore
        }

        func imageEncoder(_ image: [Float]) throws -> [Float] { [Float](repeating: 0, count: cfg.dModel * cfg.featSize * cfg.featSize) }

        func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] { feats }

        func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
            let lr2 = cfg.lowResSize * cfg.lowResSize
            return DecoderOutput(masks: (0..<(4 * lr2)).map { $0 % 2 == 0 ? 5 : -5 }, iou: [0.1, 0.2, 0.9, 0.3],
                                 objPtr: [Float](repeating: 0, count: 4 * cfg.dModel), objScore: objScore)
        }

        func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
            [Float](repeating: 0, count: cfg.memDim * cfg.featSize * cfg.featSize)
        }
    }

    private var cfg: TrackerConfig!

    override func setUpWithError() throws {
        cfg = try TrackerConfig(json: try Fixtures.obj("trace_two_objects.json").obj("manifest"))
    }

    private func tracker(objScore: Float = 1) throws -> Tracker {
        let n = 3 * cfg.imageSize * cfg.imageSize
        return try Tracker(runner: ConstRunner(cfg: cfg, objScore: objScore), cfg: cfg, numFrames: 10, videoWidth: 128, videoHeight: 96,
                           maxObjects: 3, recordTrace: true) { _ in [Float](repeating: 0, count: n) }
    }

    private func click(_ x: Float, _ y: Float) -> Prompt { Prompt(points: [SIMD2<Float>(x, y)], labels: [1]) }

    private func expectPromptError(_ part: String, _ block: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try block(), file: file, line: line) { e in
            guard case .prompt(let msg)? = e as? EtamError else { return XCTFail("not a prompt error: \(e)", file: file, line: line) }
            XCTAssertTrue(msg.contains(part), "'\(msg)' lacks '\(part)'", file: file, line: line)
        }
    }

    func testAbsentObjectGivesTheNoObjectScore() throws {
        let t = try tracker(objScore: -0.5)
        let low = try t.addPrompt(frame: 0, objId: 1, prompt: click(10, 10))
        XCTAssertTrue(low.allSatisfy { $0 == -1024 })
        try t.propagate(end: 3)
        XCTAssertEqual(t.trace?.count, 3)
        XCTAssertTrue(t.trace?.allSatisfy { $0.maskArea == 0 && $0.objScore < 0 } ?? false)
        XCTAssertEqual(t.trace?.first?.maskIndex, 2)
    }

    func testTapOutsideTheFrameIsAMessage() throws {
        let t = try tracker()
        expectPromptError("outside the 128x96 frame") { try t.addPrompt(frame: 0, objId: 1, prompt: self.click(130, 10)) }
        expectPromptError("box is outside") { try t.addPrompt(frame: 0, objId: 1, prompt: Prompt(box: [0, 0, 200, 50])) }
        expectPromptError("outside the video") { try t.addPrompt(frame: 12, objId: 1, prompt: self.click(1, 1)) }
        expectPromptError("tap a point") { try t.addPrompt(frame: 0, objId: 1, prompt: Prompt()) }
        XCTAssertTrue(t.objects.isEmpty)
    }

    func testTooManyObjectsOrPointsIsAMessage() throws {
        let t = try tracker()
        for id in 1...3 { try t.addPrompt(frame: 0, objId: id, prompt: click(5, 5)) }
        expectPromptError("at most 3 objects") { try t.addPrompt(frame: 0, objId: 4, prompt: self.click(5, 5)) }
        let many = Prompt(points: Array(repeating: SIMD2<Float>(1, 1), count: 8), labels: Array(repeating: 1, count: 8))
        expectPromptError("at most 7") { try t.addPrompt(frame: 0, objId: 1, prompt: many) }
        XCTAssertEqual(t.objIds, [1, 2, 3])
    }

    func testPropagatingWithoutPromptsIsAMessage() throws {
        let t = try tracker()
        expectPromptError("no prompts") { try t.propagate() }
    }
}
