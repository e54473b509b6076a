import XCTest
@testable import EtamKit

/// Replays the Python runtime's conformance traces, like the Kotlin TraceReplayTest:
/// the rules alone, then the whole Tracker against a scripted StageRunner that tags every
/// tensor with (object, frame) and checks each memory and pointer slot.
final class TraceReplayTests: XCTestCase {
    private func selection(_ r: JSONObject) throws -> Selection {
        let s = try r.obj("selection")
        return Selection(memFrames: try s.intList("mem_frames"), memTpos: try s.intList("mem_tpos"), ptrFrames: try s.intList("ptr_frames"))
    }

    func testRulesAloneReproduceEveryDecision() throws {
        var checked = 0
        for name in try Fixtures.traceNames() {
            let doc = try Fixtures.obj(name)
            let cfg = try TrackerConfig(json: try doc.obj("manifest"))
            let numFrames = try doc.int("num_frames")
            let singleSession = try doc.objects("script").filter { try $0.string("op") == "propagate" }.count == 1
            var cond: [Int: [Int]] = [:]
            var nonCond: [Int: Set<Int>] = [:]
            var pending: [(Int, Int, Bool)] = []
            for r in try doc.objects("records") {
                let obj = try r.int("obj_id"), frame = try r.int("frame")
                // A mask prompt's output is the mask itself: no choice, pointer token 0.
                let choice = try r.string("kind") == "mask" ? MaskChoice(maskIndex: -1, ptrIndex: 0, multimask: false, stability: 1)
                    : Decisions.choose(iou: try r.floatList("iou"), stability: try r.double("stability"), numPoints: try r.int("num_points"), cfg: cfg)
                XCTAssertEqual(choice.maskIndex, try r.int("mask_index"), "\(name) \(r.path)")
                XCTAssertEqual(choice.ptrIndex, try r.int("ptr_index"), "\(name) \(r.path)")
                XCTAssertEqual(choice.multimask, try r.bool("multimask"), "\(name) \(r.path)")
                checked += 1
                if !singleSession { continue }
                if try r.string("kind") != "track" {
                    pending.append((obj, frame, try r.bool("is_init_cond")))
                    continue
                }
                for (o, t, isCond) in pending {
                    if isCond {
                        if !(cond[o] ?? []).contains(t) { cond[o, default: []].append(t) }
                    } else {
                        nonCond[o, default: []].insert(t)
                    }
                }
                for (o, ts) in cond { for t in ts { nonCond[o]?.remove(t) } }
                pending = []
                let got = MemoryRules.selectMemory(frame, condFrames: cond[obj] ?? [], nonCondFrames: nonCond[obj] ?? [], numFrames: numFrames, cfg: cfg)
                XCTAssertEqual(got, try selection(r), "\(name) \(r.path)")
                nonCond[obj, default: []].insert(frame)
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 40)
    }

    /// Tags tensors so every slot can be traced back to the (object, frame) it came from.
    final class ScriptedRunner: StageRunner {
        let cfg: TrackerConfig
        let records: [JSONObject]
        var next = 0
        var problems: [String] = []
        private var lastPtrIndex: [Int: Int] = [:]
        private lazy var objOrder: [Int] = {
            var seen: [Int] = []
            for r in records { if let o = try? r.int("obj_id"), !seen.contains(o) { seen.append(o) } }
            return seen
        }()
        /// (object, frame) of prompt outputs whose values cannot name the object (mask prompts, no-object).
        private var untagged: [(Int, Int)] = []
        private var lastTrackUntagged = -1

        init(cfg: TrackerConfig, records: [JSONObject]) {
            self.cfg = cfg
            self.records = records
        }

        private func check(_ ok: Bool, _ msg: @autoclosure () -> String) {
            if !ok && problems.count < 20 { problems.append("record #\(next): \(msg())") }
        }

        private func current() throws -> JSONObject {
            guard next < records.count else { throw EtamError.model("more decoder calls than the trace has records") }
            return records[next]
        }

        func imageEncoder(_ image: [Float]) throws -> [Float] {
            var f = [Float](repeating: 0, count: cfg.dModel * cfg.featSize * cfg.featSize)
            f[0] = image[0]
            return f
        }

        func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] {
            let r = try current()
            let obj = try r.int("obj_id")
            let s = try r.obj("selection")
            let mem = try s.intList("mem_frames"), tpos = try s.intList("mem_tpos"), ptr = try s.intList("ptr_frames")
            let memSize = cfg.memDim * cfg.featSize * cfg.featSize
            check(Int(feats[0]) == (try r.int("frame")), "features of frame \(feats[0])")
            for i in memValid.indices {
                if i < mem.count {
                    let want = Float(obj * 32 + mem[i])
                    check(memValid[i] == 1 && Int(memTpos[i]) == tpos[i], "memory slot \(i): tpos \(memTpos[i]), want \(tpos[i])")
                    check(memFeats[i * memSize] == want && memFeats[(i + 1) * memSize - 1] == want, "memory slot \(i) holds \(memFeats[i * memSize]), want \(want)")
                } else {
                    check(memValid[i] == 0 && memFeats[i * memSize] == 0, "memory slot \(i) should be empty")
                }
            }
            for i in ptrValid.indices {
                if i < ptr.count {
                    let k = lastPtrIndex[obj * 1000 + ptr[i]] ?? -1
                    let want = Float(obj * 1000 + ptr[i] * 4 + k)
                    check(ptrValid[i] == 1 && objPtrs[i * cfg.dModel] == want, "pointer slot \(i) holds \(objPtrs[i * cfg.dModel]), want \(want)")
                } else {
                    check(ptrValid[i] == 0 && objPtrs[i * cfg.dModel] == 0, "pointer slot \(i) should be empty")
                }
            }
            return feats
        }

        func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
            let r = try current()
            let obj = try r.int("obj_id")
            let frame = Int(condFeats[0])
            check(frame == (try r.int("frame")), "decoder on frame \(frame)")
            let n = try r.int("num_points")
            check(labels.filter { $0 >= 0 }.count == n && labels[n] == Prompts.notAPoint, "labels \(labels) for \(n) points")
            let hasMask = try r.bool("has_mask_input")
            check((hasMaskInput == 1) == hasMask, "has_mask_input \(hasMaskInput), trace says \(hasMask)")
            let isMask = try r.string("kind") == "mask"
            if isMask {
                let want = try r.double("mask_input_sum")
                let got = maskInput.reduce(0.0) { $0 + Double($1) }
                check(abs(got - want) <= 1e-3 * abs(want) + 1e-3, "mask prompt's decoder input sums to \(got), want \(want)")
            } else if hasMask { check(maskInput.max() == Float(1 + obj), "mask input is not this object's previous mask") }
            let nameless = try isMask || r.double("obj_score") <= 0
            if try r.string("kind") == "track" {
                lastTrackUntagged = nameless ? obj : -1
            } else {
                lastTrackUntagged = -1
                if nameless { untagged.append((obj, frame)) }
            }
            let counts = try r.intList("stab_counts")
            let big = Float(1 + obj)
            let lr2 = cfg.lowResSize * cfg.lowResSize
            var masks = [Float](repeating: 0, count: 4 * lr2)
            for k in 0..<4 {
                for i in 0..<lr2 { masks[k * lr2 + i] = i < counts[0] ? big : (i < counts[1] ? 0 : -big) }
            }
            var ptrs = [Float](repeating: 0, count: 4 * cfg.dModel)
            for k in 0..<4 {
                for j in 0..<cfg.dModel { ptrs[k * cfg.dModel + j] = Float(obj * 1000 + frame * 4 + k) }
            }
            lastPtrIndex[obj * 1000 + frame] = try r.int("ptr_index")
            next += 1
            return DecoderOutput(masks: masks, iou: try r.floatList("iou"), objPtr: ptrs, objScore: Float(try r.double("obj_score")))
        }

        func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
            let frame = Int(feats[0])
            let peak = mask.map { abs($0) }.max() ?? 1
            var obj = Int(peak) - 1
            if peak >= 9.5 {  // a mask prompt's +-10 or the no-object -1024: name it from the decoder calls
                let noObject = mask.allSatisfy { $0 == cfg.noObjScore }
                check(noObject || peak <= 10.001, "memory of frame \(frame) encodes a mask that is neither tagged, a mask prompt nor empty")
                if lastTrackUntagged >= 0 {
                    obj = lastTrackUntagged
                } else {
                    let order = objOrder
                    let hits = untagged.enumerated().filter { $0.element.1 == frame }
                    let hit = hits.min { (order.firstIndex(of: $0.element.0) ?? 0) < (order.firstIndex(of: $1.element.0) ?? 0) }
                    check(hit != nil, "memory of frame \(frame): no mask prompt or absent object there to encode")
                    if let h = hit {
                        obj = h.element.0
                        untagged.remove(at: h.offset)
                    }
                }
                lastTrackUntagged = -1
            }
            return [Float](repeating: Float(obj * 32 + frame), count: cfg.memDim * cfg.featSize * cfg.featSize)
        }
    }

    func testTrackerReplaysEveryTrace() throws {
        for name in try Fixtures.traceNames() {
            let doc = try Fixtures.obj(name)
            let cfg = try TrackerConfig(json: try doc.obj("manifest"))
            let records = try doc.objects("records")
            let size = try doc.intList("video_size")
            let runner = ScriptedRunner(cfg: cfg, records: records)
            let n = 3 * cfg.imageSize * cfg.imageSize
            let tracker = try Tracker(runner: runner, cfg: cfg, numFrames: try doc.int("num_frames"), videoWidth: size[0], videoHeight: size[1],
                                      maxObjects: 8, recordTrace: true) { i in
                var a = [Float](repeating: 0, count: n)
                a[0] = Float(i)
                return a
            }
            for op in try doc.objects("script") {
                if try op.string("op") == "prompt" && op.has("mask_rle") {
                    var mask = [Bool](repeating: false, count: size[0] * size[1])
                    for run in try op.list("mask_rle") {
                        let r = (run.arrayValue ?? []).compactMap { $0.intValue }
                        for i in r[0]..<(r[0] + r[1]) { mask[i] = true }
                    }
                    let consts = try XCTUnwrap(try MaskPromptConstants(manifest: try doc.obj("manifest")), "\(name): no mask_prompt in manifest")
                    try tracker.addMask(frame: try op.int("frame"), objId: try op.int("obj_id"), mask: mask, constants: consts)
                } else if try op.string("op") == "prompt" {
                    try tracker.addPrompt(frame: try op.int("frame"), objId: try op.int("obj_id"), prompt: try Fixtures.prompt(op))
                } else {
                    try tracker.propagate(start: op.has("start") ? try op.int("start") : nil)
                }
            }
            XCTAssertEqual(runner.problems, [], name)
            let trace = tracker.trace ?? []
            XCTAssertEqual(trace.count, records.count, "\(name): number of records")
            XCTAssertEqual(tracker.objIds, try doc.intList("obj_ids"))
            for (i, want) in records.enumerated() where i < trace.count {
                let got = trace[i], at = "\(name) record #\(i)"
                XCTAssertEqual(got.frame, try want.int("frame"), at)
                XCTAssertEqual(got.objId, try want.int("obj_id"), at)
                XCTAssertEqual(got.kind, try want.string("kind"), at)
                XCTAssertEqual(got.isInitCond, try want.bool("is_init_cond"), at)
                XCTAssertEqual(got.selection, try selection(want), at)
                XCTAssertEqual(got.numPoints, try want.int("num_points"), at)
                XCTAssertEqual(got.multimask, try want.bool("multimask"), at)
                XCTAssertEqual(got.maskIndex, try want.int("mask_index"), at)
                XCTAssertEqual(got.ptrIndex, try want.int("ptr_index"), at)
                XCTAssertEqual(got.stability, try want.double("stability"), accuracy: 1e-5, at)
                XCTAssertEqual(Double(got.objScore), try want.double("obj_score"), accuracy: 1e-5, at)
                // Mask prompts (output = the resized mask) and absent objects (-1024 everywhere)
                // do not depend on the scripted decoder masks: their areas and sums must match.
                if try want.string("kind") == "mask" || want.double("obj_score") <= 0 {
                    XCTAssertEqual(got.maskArea, try want.int("mask_area"), "\(at) mask_area")
                    let sum = try want.double("mask_sum")
                    XCTAssertEqual(got.maskSum, sum, accuracy: 1e-3 * abs(sum) + 1e-3, "\(at) mask_sum")
                }
            }
        }
    }
}
