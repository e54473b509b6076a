import XCTest
@testable import EtamKit

/// Replays image_mode.json (scripts/make_traces.py): image-mode decisions as the Python runtime made them.
final class ImageModeTests: XCTestCase {
    private var doc: JSONObject!
    private var cfg: TrackerConfig!
    private var w = 0, h = 0

    override func setUpWithError() throws {
        doc = try Fixtures.obj("image_mode.json")
        cfg = try TrackerConfig(json: try doc.obj("manifest"))
        let size = try doc.intList("image_size")
        w = size[0]
        h = size[1]
    }

    func testPromptPaddingWithoutMemoryAndTokenChoiceMatchPython() throws {
        let queries = try doc.objects("queries")
        XCTAssertGreaterThanOrEqual(queries.count, 4)
        var kinds = Set<Bool>()
        for q in queries {
            let t = try Prompts.build(try Fixtures.prompt(q), videoWidth: w, videoHeight: h, imageSize: cfg.imageSize, capacity: cfg.points)
            let exp = try q.obj("prompt")
            let want = try exp.floatList("points")
            for (a, b) in zip(t.points, want) { XCTAssertEqual(a, b, accuracy: 1e-5, q.path) }
            XCTAssertEqual(t.labels.map { Int($0) }, try exp.intList("labels"), q.path)
            XCTAssertEqual(t.numPoints, try exp.int("num_points"), q.path)
            let counts = try q.intList("stab_counts")
            let iou = try q.floatList("iou")
            let multimask = try q.bool("multimask")
            let tokens = ImageMode.chooseTokens(iou: iou, stability: ImageMode.stabilityFromCounts(counts[0], counts[1]), multimask: multimask, cfg: cfg)
            XCTAssertEqual(tokens, try q.intList("tokens"), q.path)
            for (a, b) in zip(tokens.map { iou[$0] }, try q.floatList("scores")) { XCTAssertEqual(a, b, accuracy: 1e-6, q.path) }
            kinds.insert(multimask)
        }
        XCTAssertEqual(kinds, [true, false])
    }

    func testUnstableSingleMaskFallsBackToBestMultimaskToken() {
        let iou: [Float] = [0.9, 0.2, 0.7, 0.5]
        XCTAssertEqual(ImageMode.chooseTokens(iou: iou, stability: 0.5, multimask: false, cfg: cfg), [2])
        XCTAssertEqual(ImageMode.chooseTokens(iou: iou, stability: cfg.stabilityThresh, multimask: false, cfg: cfg), [0])
        XCTAssertEqual(ImageMode.chooseTokens(iou: iou, stability: 0.5, multimask: true, cfg: cfg), [1, 2, 3])
    }

    func testImagePredictorPreprocessingMatchesPython() throws {
        let cases = try doc.objects("preprocess")
        XCTAssertGreaterThanOrEqual(cases.count, 2)
        for c in cases {
            let got = ImageMode.modelInput(try c.intList("rgb").map { UInt8($0) }, width: try c.int("width"), height: try c.int("height"),
                                           size: try c.int("size"), mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
            let want = try c.floatList("expect")
            XCTAssertEqual(got.count, want.count, c.path)
            for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 2e-5, c.path) }
        }
    }

    /// Graph stand-ins: distinct encoder values, the empty-bank memory attention, the recorded decoder.
    final class Stub: StageRunner {
        let hw: Int
        let embed: [Float]
        let encoded: [Float]
        let first: JSONObject
        let dModel: Int
        var encoderCalls = 0, attentionCalls = 0
        var failure: String?

        init(cfg: TrackerConfig, first: JSONObject) {
            hw = cfg.featSize * cfg.featSize
            dModel = cfg.dModel
            embed = (0..<cfg.dModel).map { 0.25 * Float($0) - 3 }
            encoded = (0..<(cfg.dModel * cfg.featSize * cfg.featSize)).map { Float(($0 * 7919) % 101) / 50 - 1 }
            self.first = first
        }

        func imageEncoder(_ image: [Float]) throws -> [Float] {
            encoderCalls += 1
            return encoded
        }

        func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] {
            attentionCalls += 1
            if !(memValid.allSatisfy { $0 == 0 } && ptrValid.allSatisfy { $0 == 0 }) { failure = "memory attention with a non-empty bank" }
            return feats.indices.map { feats[$0] + embed[$0 / hw] }
        }

        func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
            for i in condFeats.indices where condFeats[i] != encoded[i] + embed[i / hw] { failure = "decoder features are not encoder + no_mem_embed" }
            return DecoderOutput(masks: try first.floatList("decoder_masks"), iou: try first.floatList("decoder_iou"),
                                 objPtr: [Float](repeating: 0, count: 4 * dModel), objScore: 1)
        }

        func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
            failure = "image mode never encodes memory"
            return []
        }
    }

    func testSessionEncodesOnceAndReproducesTheFirstQuery() throws {
        let stub = Stub(cfg: cfg, first: try doc.obj("first_query"))
        let session = ImageSession(runner: stub, cfg: cfg)
        try session.setImage(modelInput: [Float](repeating: 0, count: 3 * cfg.imageSize * cfg.imageSize), width: w, height: h)
        let q = try doc.objects("queries")[0]
        let expected = try doc.obj("first_query").floatList("logits")
        for _ in 0..<2 {
            let r = try session.predict(try Fixtures.prompt(q), multimask: try q.bool("multimask"))
            XCTAssertEqual(r.tokens, try q.intList("tokens"))
            for (a, b) in zip(r.scores, try q.floatList("scores")) { XCTAssertEqual(a, b, accuracy: 1e-6) }
            XCTAssertEqual(r.logits.count, expected.count)
            for (a, b) in zip(r.logits, expected) { XCTAssertEqual(a, b, accuracy: 1e-4) }
            let n = w * h
            let areas = (0..<r.count).map { k in (0..<n).filter { r.logits[k * n + $0] > 0 }.count }
            XCTAssertEqual(areas, try q.intList("mask_area"))
            XCTAssertTrue(r.lowRes.allSatisfy { $0 >= -32 && $0 <= 32 })
        }
        XCTAssertNil(stub.failure)
        XCTAssertEqual(stub.encoderCalls, 1)
        XCTAssertEqual(stub.attentionCalls, 1)
    }

    func testBadPromptsAreRefusedWithAMessage() throws {
        let session = ImageSession(runner: Stub(cfg: cfg, first: try doc.obj("first_query")), cfg: cfg)
        XCTAssertThrowsError(try session.predict(Prompt(points: [SIMD2<Float>(1, 1)], labels: [1]), multimask: true))
        try session.setImage(modelInput: [Float](repeating: 0, count: 3 * cfg.imageSize * cfg.imageSize), width: w, height: h)
        XCTAssertThrowsError(try session.predict(Prompt(), multimask: true))
        XCTAssertThrowsError(try session.predict(Prompt(points: [SIMD2<Float>(Float(w) + 5, 1)], labels: [1]), multimask: true))
    }
}
