import XCTest
@testable import EtamKit

/// The memory-attention slot-bucket choice agrees with the Python runtime (scripts/make_traces.py).
final class SlotBucketsTests: XCTestCase {
    private func buckets(_ lists: [JSONValue]) throws -> [SlotBucket] {
        try lists.map { b in
            let kp = try XCTUnwrap(b.arrayValue?.compactMap { $0.intValue }, "bucket is not a list of numbers")
            return SlotBucket(memorySlots: kp[0], ptrSlots: kp[1])
        }
    }

    func testVectorsMatchPython() throws {
        let cases = try Fixtures.obj("vectors.json").objects("slot_buckets")
        XCTAssertGreaterThan(cases.count, 50)
        for c in cases {
            let got = SlotBuckets.choose(try buckets(try c.list("buckets")), nMem: try c.int("n_mem"), nPtr: try c.int("n_ptr"))
            XCTAssertEqual(got ?? -1, try c.int("expect"), c.path)
        }
    }

    func testEveryTraceRecordRunsTheBucketTheRuleGives() throws {
        var checked = 0
        for name in try Fixtures.traceNames() {
            let doc = try Fixtures.obj(name)
            let cands = try buckets(try doc.list("slot_buckets"))
            for r in try doc.objects("records") {
                if try r.string("kind") == "mask" {  // no memory attention runs on a mask prompt
                    XCTAssertEqual(try r.intList("slot_bucket"), [0, 0], "\(name) \(r.path)")
                    continue
                }
                let s = try r.obj("selection")
                let i = try XCTUnwrap(SlotBuckets.choose(cands, nMem: try s.intList("mem_frames").count, nPtr: try s.intList("ptr_frames").count))
                XCTAssertEqual([cands[i].memorySlots, cands[i].ptrSlots], try r.intList("slot_bucket"), "\(name) \(r.path)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 40)
    }

    func testManifestBucketsAndSelect() throws {
        let m = try Manifest.parse(try Fixtures.data("manifest.json"))
        let listed = try SlotBuckets.parse(manifest: try Fixtures.obj("manifest.json"), tracker: m.tracker)
        let cands = try SlotBuckets.candidates(listed, manifest: m, target: "executorch")
        XCTAssertEqual(cands.last?.memorySlots, m.tracker.memorySlots)
        XCTAssertEqual(cands.last?.ptrSlots, m.tracker.ptrSlots)
        // Format 2: ExecuTorch buckets are methods of the stage's own program; Core ML buckets stay files.
        for b in cands.dropLast() {
            XCTAssertEqual(b.artifacts["executorch"], "memory_attention.pte")
            XCTAssertEqual(b.method("executorch"), "k\(b.memorySlots)p\(b.ptrSlots)")
            XCTAssertEqual(b.artifacts["coreml"], "memory_attention.k\(b.memorySlots)p\(b.ptrSlots).mlpackage")
            XCTAssertEqual(b.method("coreml"), "forward")
        }
        XCTAssertEqual(cands.last?.method("executorch"), "forward")
        XCTAssertEqual(try SlotBuckets.candidates(listed, manifest: m, target: "onnx").count, 1)
        let cfg = m.tracker
        let slot = cfg.memDim * cfg.featSize * cfg.featSize
        var memValid = [Float](repeating: 0, count: cfg.memorySlots)
        var ptrValid = [Float](repeating: 0, count: cfg.ptrSlots)
        for i in 0..<3 { memValid[i] = 1; ptrValid[i] = 1 }
        let got = try SlotBuckets.select(cands, tracker: cfg, memFeats: (0..<(cfg.memorySlots * slot)).map { Float($0) },
                                         memTpos: (0..<cfg.memorySlots).map { Int32($0 + 10) }, memValid: memValid,
                                         objPtrs: [Float](repeating: 1, count: cfg.ptrSlots * cfg.dModel), ptrValid: ptrValid)
        XCTAssertEqual(got.bucket.memorySlots, 4)
        XCTAssertEqual(got.memFeats.count, 4 * slot)
        XCTAssertEqual(got.memTpos, [10, 11, 12, 13])
        XCTAssertEqual(got.ptrValid, [1, 1, 1, 0])
    }

    func testMethodNamesAreChecked() throws {
        let m = try Manifest.parse(try Fixtures.data("manifest.json"))
        // A format-1 manifest (one file per bucket, no methods) runs each file's "forward".
        let v1 = try Fixtures.text("manifest.json").replacingOccurrences(
            of: #",\s*"methods": \{[^}]*\}"#, with: "", options: .regularExpression)
        let plain = try SlotBuckets.parse(manifest: try JSONObject.parse(Data(v1.utf8), what: "v1"), tracker: m.tracker)
        XCTAssertFalse(plain.isEmpty)
        for b in plain { XCTAssertEqual(b.method("executorch"), "forward") }
        // A method for a target the bucket has no artifact for is a clear error.
        let bad = try Fixtures.text("manifest.json").replacingOccurrences(of: "\"methods\": {", with: "\"methods\": {\"onnx\": \"k1p1\", ")
        XCTAssertThrowsError(try SlotBuckets.parse(manifest: try JSONObject.parse(Data(bad.utf8), what: "bad"), tracker: m.tracker)) { e in
            let msg = (e as? EtamError)?.message ?? ""
            XCTAssertTrue(msg.contains("onnx") && msg.contains("re-export"), msg)
        }
    }
}
