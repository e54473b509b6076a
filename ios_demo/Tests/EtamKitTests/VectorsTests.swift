import XCTest
@testable import EtamKit

/// Input -> output vectors from the Python runtime (vectors.json).
final class VectorsTests: XCTestCase {
    private var v: JSONObject!
    private var cfg: TrackerConfig!

    override func setUpWithError() throws {
        v = try Fixtures.obj("vectors.json")
        cfg = try TrackerConfig(json: try Fixtures.obj("trace_two_objects.json").obj("manifest"))
    }

    private func bytes(_ o: JSONObject, _ key: String) throws -> [UInt8] { try o.intList(key).map { UInt8($0) } }

    func testPromptPaddingAndCoordinates() throws {
        let cases = try v.objects("prompts")
        XCTAssertGreaterThanOrEqual(cases.count, 6)
        for c in cases {
            let size = try c.intList("video_size")
            let exp = try c.obj("expect")
            let p = try Fixtures.prompt(c)
            if exp.has("error") {
                XCTAssertThrowsError(try Prompts.build(p, videoWidth: size[0], videoHeight: size[1], imageSize: c.int("image_size"), capacity: c.int("capacity")), c.path)
                continue
            }
            let t = try Prompts.build(p.isEmpty ? nil : p, videoWidth: size[0], videoHeight: size[1], imageSize: c.int("image_size"), capacity: c.int("capacity"))
            XCTAssertEqual(t.points, try exp.floatList("points"), c.path)
            XCTAssertEqual(t.labels.map { Int($0) }, try exp.intList("labels"), c.path)
            XCTAssertEqual(t.numPoints, try exp.int("num_points"), c.path)
        }
    }

    func testNormalizationIsBitExact() throws {
        let n = try v.obj("preprocess").obj("normalize")
        let out = Preprocess.normalize(try bytes(n, "rgb"), size: try n.int("size"), mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225],
                                       scale: 0.00392156862745098)
        XCTAssertEqual(out, try n.floatList("expect"))
    }

    func testBicubicResizeMatchesPillow() throws {
        for c in try v.obj("preprocess").objects("resize_bicubic") {
            let s = try c.int("size")
            let out = Preprocess.resizeBicubic(try bytes(c, "rgb"), width: try c.int("width"), height: try c.int("height"), outW: s, outH: s)
            XCTAssertEqual(out, try bytes(c, "expect"), c.path)
        }
    }

    func testStabilityAndMaskChoice() throws {
        for c in try v.objects("stability") {
            let masks = try c.floatList("masks"), iou = try c.floatList("iou"), side = try c.int("side")
            XCTAssertEqual(Decisions.stabilityScore(masks, offset: 0, count: side * side, delta: cfg.stabilityDelta), try c.double("stability"), accuracy: 1e-12)
            for ch in try c.objects("choices") {
                let got = Decisions.chooseMask(masks, iou: iou, numPoints: try ch.int("num_points"), cfg: cfg)
                XCTAssertEqual(got.maskIndex, try ch.int("mask_index"), ch.path)
                XCTAssertEqual(got.ptrIndex, try ch.int("ptr_index"), ch.path)
                XCTAssertEqual(got.multimask, try ch.bool("multimask"), ch.path)
            }
        }
    }

    func testBFloat16Rounding() throws {
        let b = try v.obj("bf16")
        let bits = try b.doubleList("bits").map { UInt32($0) }
        let expect = try b.doubleList("expect_bits").map { UInt32($0) }
        for (i, x) in bits.enumerated() {
            XCTAssertEqual(MemoryRules.roundToBF16(Float(bitPattern: x)).bitPattern, expect[i], "value #\(i)")
        }
    }

    func testBilinearUpsampleAndLabelMap() throws {
        let u = try v.obj("upsample")
        let h = try u.int("height"), w = try u.int("width"), side = try u.int("side")
        let out = PostProcess.upsampleBilinear(try u.floatList("low_res"), planes: try u.int("objects"), inH: side, inW: side, outH: h, outW: w)
        let exp = try u.floatList("expect")
        for i in exp.indices { XCTAssertEqual(out[i], exp[i], accuracy: 1e-5 * max(1, abs(exp[i])), "pixel \(i)") }
        XCTAssertEqual(PostProcess.labelMap(exp, objIds: try u.intList("obj_ids"), height: h, width: w), try u.intList("label_map"))
    }
}
