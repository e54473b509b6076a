import Foundation

/// masks (1,4,lr,lr), iou (1,4), obj_ptr (1,4,C), obj_score.
public struct DecoderOutput: Sendable {
    public let masks: [Float]
    public let iou: [Float]
    public let objPtr: [Float]
    public let objScore: Float

    public init(masks: [Float], iou: [Float], objPtr: [Float], objScore: Float) {
        self.masks = masks
        self.iou = iou
        self.objPtr = objPtr
        self.objScore = objScore
    }
}

/// The four stage graphs; flat arrays in the shapes manifest.json gives.
public protocol StageRunner: AnyObject {
    func imageEncoder(_ image: [Float]) throws -> [Float]
    func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float]
    func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput
    func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float]
}

/// One conformance-trace record (etam_mobile/runtime/TRACE.md).
public struct TraceRecord: Equatable, Sendable {
    public let frame: Int
    public let objId: Int
    public let kind: String
    public let isInitCond: Bool
    public let selection: Selection
    public let numPoints: Int
    public let multimask: Bool
    public let maskIndex: Int
    public let ptrIndex: Int
    public let iou: [Float]
    public let stability: Double
    public let objScore: Float
    public let maskArea: Int
    public let maskSum: Double

    public init(frame: Int, objId: Int, kind: String, isInitCond: Bool, selection: Selection, numPoints: Int, multimask: Bool,
                maskIndex: Int, ptrIndex: Int, iou: [Float], stability: Double, objScore: Float, maskArea: Int, maskSum: Double) {
        self.frame = frame
        self.objId = objId
        self.kind = kind
        self.isInitCond = isInitCond
        self.selection = selection
        self.numPoints = numPoints
        self.multimask = multimask
        self.maskIndex = maskIndex
        self.ptrIndex = ptrIndex
        self.iou = iou
        self.stability = stability
        self.objScore = objScore
        self.maskArea = maskArea
        self.maskSum = maskSum
    }
}

/// Low-res mask logits (objects x lr x lr) of one frame, in `objIds` order.
public struct FrameResult: Equatable, Sendable {
    public let frame: Int
    public let objIds: [Int]
    public let lowRes: [Float]
    public let lowResSize: Int

    /// The app builds these too (a prompt's mask shown before tracking, results stored per frame).
    public init(frame: Int, objIds: [Int], lowRes: [Float], lowResSize: Int) {
        precondition(lowRes.count == objIds.count * lowResSize * lowResSize, "lowRes must hold objIds.count x lowResSize^2 values")
        self.frame = frame
        self.objIds = objIds
        self.lowRes = lowRes
        self.lowResSize = lowResSize
    }
}

/// The tracker state machine of etam_mobile/runtime/tracker.py over any StageRunner.
///
/// `addPrompt` on any frame (corrections included), then `beginPropagation()` and
/// `trackFrame(_:)` for each following frame. `numFrames` may be Int.max for a live camera.
///
/// `propagate()` / `beginPropagation()` follow upstream: tracking restarts at the first
/// conditioning frame and a correction on an already tracked frame is tracked over again (so
/// its mask is replaced). Apps call `resumeStart()` and `beginPropagation(start:keepCorrections:)`
/// instead: corrected frames keep the corrected mask and tracking continues after them.
public final class Tracker {
    public let runner: StageRunner
    public let cfg: TrackerConfig
    public let numFrames: Int
    public let videoWidth: Int
    public let videoHeight: Int
    public let maxObjects: Int
    /// Model input (1,3,S,S) of frame i.
    private let frameProvider: (Int) throws -> [Float]
    public private(set) var objectOrder: [Int] = []
    public private(set) var objects: [Int: ObjectBank] = [:]
    public var trace: [TraceRecord]?
    /// Keep every tracked frame's memory instead of only the window forward tracking reads
    /// (results are the same). Costs memory per frame and object, and lets `resumeStart()`
    /// continue right after a correction anywhere in a video instead of only near the end.
    public var keepAllMemories = false
    private var featCache: [Int: [Float]] = [:]
    private let memInputs: MemoryInputs
    private let lr2: Int
    private let zeroMask: [Float]
    private let trackingPrompt: PromptTensors
    /// Frames prompted (per kind) since the last beginPropagation.
    private var pendingCorrections = Set<Int>()
    private var pendingInitFrames = Set<Int>()
    private var keepCorrections = false

    public init(runner: StageRunner, cfg: TrackerConfig, numFrames: Int, videoWidth: Int, videoHeight: Int,
                maxObjects: Int = 8, recordTrace: Bool = false, frameProvider: @escaping (Int) throws -> [Float]) throws {
        self.runner = runner
        self.cfg = cfg
        self.numFrames = numFrames
        self.videoWidth = videoWidth
        self.videoHeight = videoHeight
        self.maxObjects = maxObjects
        self.frameProvider = frameProvider
        self.trace = recordTrace ? [] : nil
        memInputs = MemoryInputs(cfg: cfg)
        lr2 = cfg.lowResSize * cfg.lowResSize
        zeroMask = [Float](repeating: 0, count: lr2)
        trackingPrompt = try Prompts.build(nil, videoWidth: videoWidth, videoHeight: videoHeight, imageSize: cfg.imageSize, capacity: cfg.points)
    }

    public var objIds: [Int] { objectOrder }

    private func features(_ frame: Int) throws -> [Float] {
        if let f = featCache[frame] { return f }
        let f = try runner.imageEncoder(try frameProvider(frame))
        featCache[frame] = f
        return f
    }

    private func condition(_ bank: ObjectBank, _ frame: Int, _ feats: [Float], isInitCond: Bool) throws -> ([Float], Selection) {
        let sel = isInitCond
            ? MemoryRules.selectMemory(frame, condFrames: [], nonCondFrames: [], numFrames: numFrames, cfg: cfg)
            : MemoryRules.selectMemory(frame, condFrames: bank.condOrder, nonCondFrames: Set(bank.nonCond.keys), numFrames: numFrames, cfg: cfg)
        memInputs.fill(bank: bank, selection: sel)
        let m = memInputs
        let out = try runner.memoryAttention(feats: feats, memFeats: m.memFeats, memTpos: m.memTpos, memValid: m.memValid,
                                             objPtrs: m.objPtrs, ptrValid: m.ptrValid)
        return (out, sel)
    }

    private func decode(_ condFeats: [Float], _ prompt: PromptTensors, maskInput: [Float]?) throws -> (FrameMemory, MaskChoice, [Float]) {
        let out = try runner.maskDecoder(condFeats: condFeats, points: prompt.points, labels: prompt.labels,
                                         maskInput: maskInput ?? zeroMask, hasMaskInput: maskInput == nil ? 0 : 1)
        let choice = Decisions.chooseMask(out.masks, iou: out.iou, numPoints: prompt.numPoints, cfg: cfg)
        let low = Decisions.applyObjectScore(Array(out.masks[(choice.maskIndex * lr2)..<((choice.maskIndex + 1) * lr2)]),
                                             objScore: out.objScore, cfg: cfg)
        let c = cfg.dModel
        let ptr = Array(out.objPtr[(choice.ptrIndex * c)..<((choice.ptrIndex + 1) * c)])
        return (FrameMemory(lowRes: low, objPtr: ptr, objScore: out.objScore), choice, out.iou)
    }

    private func encodeMemory(_ mem: FrameMemory, _ feats: [Float], binarize: Bool) throws {
        var mf = try runner.memoryEncoder(feats: feats, mask: mem.lowRes, binarize: binarize ? 1 : 0)
        for i in mf.indices { mf[i] = MemoryRules.roundToBF16(mf[i]) }
        mem.memFeats = mf
    }

    private func record(_ frame: Int, _ bank: ObjectBank, _ kind: String, _ isInit: Bool, _ sel: Selection, _ numPoints: Int,
                        _ mem: FrameMemory, _ choice: MaskChoice, _ iou: [Float]) {
        guard trace != nil else { return }
        var area = 0
        var sum = 0.0
        for v in mem.lowRes {
            if v > 0 { area += 1 }
            sum += Double(min(max(v, -32), 32))
        }
        trace!.append(TraceRecord(frame: frame, objId: bank.objId, kind: kind, isInitCond: isInit, selection: sel, numPoints: numPoints,
                                  multimask: choice.multimask, maskIndex: choice.maskIndex, ptrIndex: choice.ptrIndex, iou: iou,
                                  stability: choice.stability, objScore: mem.objScore, maskArea: area, maskSum: sum))
    }

    /// A new object is refused once `maxObjects` are tracked (one check for clicks and masks).
    private func checkRoom(for objId: Int) throws {
        if objects[objId] == nil && objects.count >= maxObjects {
            throw EtamError.prompt("this app tracks at most \(maxObjects) objects; clear one before adding another")
        }
    }

    /// The object's bank, created (and ordered) on its first prompt.
    private func bankFor(_ objId: Int) -> ObjectBank {
        if let b = objects[objId] { return b }
        let b = ObjectBank(objId: objId)
        objects[objId] = b
        objectOrder.append(objId)
        return b
    }

    /// Clicks and/or a box for one object on one frame. Returns its low-res mask logits (lr x lr).
    @discardableResult
    public func addPrompt(frame: Int, objId: Int, prompt: Prompt) throws -> [Float] {
        try Prompts.validate(frame: frame, prompt: prompt, numFrames: numFrames, width: videoWidth, height: videoHeight)
        try checkRoom(for: objId)
        let tensors = try Prompts.build(prompt, videoWidth: videoWidth, videoHeight: videoHeight, imageSize: cfg.imageSize, capacity: cfg.points)
        let bank = bankFor(objId)
        let isInit = !bank.tracked.contains(frame)
        let clamp = cfg.maskInputClamp
        let maskInput = bank.lookup(frame).map { prev in prev.lowRes.map { min(max($0, -clamp), clamp) } }
        let feats = try features(frame)
        let (condFeats, sel) = try condition(bank, frame, feats, isInitCond: isInit)
        let (mem, choice, iou) = try decode(condFeats, tensors, maskInput: maskInput)
        // A frame seen for the first time becomes a conditioning frame; a correction on an
        // already tracked frame stays non-conditioning (add_all_frames_to_correct_as_cond=False).
        bank.setPending(frame, mem, isCond: isInit)
        if isInit { pendingInitFrames.insert(frame) } else { pendingCorrections.insert(frame); bank.corrections.insert(frame) }
        record(frame, bank, "prompt", isInit, sel, tensors.numPoints, mem, choice, iou)
        return mem.lowRes
    }

    /// A binary mask (videoHeight x videoWidth, row-major) for one object on one frame (upstream
    /// add_new_mask): the mask is the frame's output with score `c.objectScore`; the decoder runs on
    /// the raw features (no memory) with the downsampled mask only for the object pointer (token 0).
    @discardableResult
    public func addMask(frame: Int, objId: Int, mask: [Bool], constants c: MaskPromptConstants) throws -> [Float] {
        guard frame >= 0 && frame < numFrames else { throw EtamError.prompt("frame \(frame) is outside the video (frames 0..\(numFrames - 1))") }
        try checkRoom(for: objId)
        let prepared = try MaskPrompt.prepare(mask, width: videoWidth, height: videoHeight, cfg: cfg, c)
        let bank = bankFor(objId)
        let isInit = !bank.tracked.contains(frame)
        let out = try runner.maskDecoder(condFeats: try features(frame), points: trackingPrompt.points, labels: trackingPrompt.labels,
                                         maskInput: prepared.decoderInput, hasMaskInput: 1)
        let mem = FrameMemory(lowRes: prepared.lowRes, objPtr: Array(out.objPtr[0..<cfg.dModel]), objScore: c.objectScore)
        bank.setPending(frame, mem, isCond: isInit)
        if isInit { pendingInitFrames.insert(frame) } else { pendingCorrections.insert(frame); bank.corrections.insert(frame) }
        record(frame, bank, "mask", isInit, Selection(memFrames: [], memTpos: [], ptrFrames: []), 0, mem,
               MaskChoice(maskIndex: -1, ptrIndex: 0, multimask: false, stability: 1), out.iou)
        return mem.lowRes
    }

    /// Forget an object entirely (the UI's "clear").
    public func removeObject(_ objId: Int) {
        objects[objId] = nil
        objectOrder.removeAll { $0 == objId }
    }

    /// Where tracking must restart so that the prompts given since the last propagation take
    /// effect and nothing already tracked changes: just after the earliest correction, when every
    /// prompt was a correction and each object still holds the memory window before that frame
    /// (memory flows forward only, so earlier frames keep their results). Otherwise (a new
    /// conditioning frame, which every frame's memory attention sees, or a pruned window) the
    /// first conditioning frame, as upstream. nil when nothing was prompted.
    public func resumeStart() -> Int? {
        if pendingInitFrames.isEmpty && pendingCorrections.isEmpty { return nil }
        let firstCond = objectOrder.compactMap { objects[$0]?.condOrder.min() }.min()
            ?? pendingInitFrames.min() ?? pendingCorrections.min()!
        guard pendingInitFrames.isEmpty, let f = pendingCorrections.min() else { return firstCond }
        let window = max(cfg.numMaskmem - 1, cfg.maxObjPtrs - 1)
        for id in objectOrder {
            guard let bank = objects[id] else { continue }
            // Tracking f + 1 reads memories of f - numMaskmem + 2 ... f and pointers back to f + 1 - window.
            let needed = max(firstCond, f + 1 - window)..<f
            for t in needed where bank.tracked.contains(t) && bank.lookup(t) == nil { return firstCond }
        }
        return f + 1
    }

    /// Encode the memories of prompted frames and file them; returns the first frame to track.
    /// `keepCorrections`: a corrected frame reached again keeps its corrected mask and memory
    /// (the app's behaviour) instead of being tracked over (upstream's).
    @discardableResult
    public func beginPropagation(start: Int? = nil, keepCorrections: Bool = false) throws -> Int {
        if objects.isEmpty { throw EtamError.prompt("no prompts were given for any object; tap an object first") }
        for id in objectOrder {
            let bank = objects[id]!
            for (frame, mem, isCond) in bank.takePending() {
                try encodeMemory(mem, try features(frame), binarize: true)
                if isCond { bank.setCond(frame, mem) } else { bank.nonCond[frame] = mem }
            }
            for t in bank.condOrder { bank.nonCond[t] = nil }
        }
        featCache = [:]
        pendingCorrections = []
        pendingInitFrames = []
        self.keepCorrections = keepCorrections
        if let s = start { return s }
        guard let first = objectOrder.compactMap({ objects[$0]?.condOrder.min() }).min() else {
            throw EtamError.prompt("no object has a first prompt; tap the object on a frame it has not been tracked on")
        }
        return first
    }

    /// Track every object on `frame` (call in increasing frame order after beginPropagation).
    public func trackFrame(_ frame: Int) throws -> FrameResult {
        var feats: [Float]?
        var out = [Float](repeating: 0, count: objectOrder.count * lr2)
        for (o, id) in objectOrder.enumerated() {
            let bank = objects[id]!
            let mem: FrameMemory
            if let c = bank.cond[frame] {
                mem = c
            } else if keepCorrections, bank.corrections.contains(frame), let c = bank.nonCond[frame] {
                mem = c
            } else {
                let f: [Float]
                if let cached = feats {
                    f = cached
                } else {
                    f = try features(frame)
                    feats = f
                }
                let (condFeats, sel) = try condition(bank, frame, f, isInitCond: false)
                let (m, choice, iou) = try decode(condFeats, trackingPrompt, maskInput: nil)
                try encodeMemory(m, f, binarize: false)
                bank.nonCond[frame] = m
                record(frame, bank, "track", false, sel, 0, m, choice, iou)
                mem = m
            }
            bank.tracked.insert(frame)
            if !keepAllMemories { bank.prune(frame, cfg: cfg) }
            out.replaceSubrange(o * lr2..<(o + 1) * lr2, with: mem.lowRes)
        }
        featCache = [:]
        return FrameResult(frame: frame, objIds: objectOrder, lowRes: out, lowResSize: cfg.lowResSize)
    }

    /// Track to `end` (default: the last frame); `onFrame` returns false to stop early.
    public func propagate(start: Int? = nil, end: Int? = nil, keepCorrections: Bool = false,
                          onFrame: (FrameResult) throws -> Bool = { _ in true }) throws {
        let first = try beginPropagation(start: start, keepCorrections: keepCorrections)
        let last = end ?? numFrames
        var i = first
        while i < last {
            if try !onFrame(try trackFrame(i)) { break }
            i += 1
        }
    }
}
