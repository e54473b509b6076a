import Foundation

/// Which stored frames feed the memory attention of one frame, in upstream token order.
public struct Selection: Equatable, Sendable, CustomStringConvertible {
    public let memFrames: [Int]
    public let memTpos: [Int]
    public let ptrFrames: [Int]

    public init(memFrames: [Int], memTpos: [Int], ptrFrames: [Int]) {
        self.memFrames = memFrames
        self.memTpos = memTpos
        self.ptrFrames = ptrFrames
    }

    public var description: String { "Selection(mem=\(memFrames), tpos=\(memTpos), ptr=\(ptrFrames))" }
}

/// Upstream's selection rules as pure functions of frame indices (etam_mobile/runtime/memory_bank.py).
public enum MemoryRules {
    /// Closest conditioning frame before, closest at-or-after, then the nearest others up to maxNum.
    public static func selectClosestCondFrames(_ frame: Int, _ condFrames: [Int], maxNum: Int) -> (selected: [Int], unselected: [Int]) {
        if maxNum < 0 || condFrames.count <= maxNum { return (condFrames, []) }
        precondition(maxNum >= 2, "at least 2 conditioning-frame slots are needed")
        var selected: [Int] = []
        if let b = condFrames.filter({ $0 < frame }).max() { selected.append(b) }
        if let a = condFrames.filter({ $0 >= frame }).min() { selected.append(a) }
        // A stable sort by distance, like Python's sorted().
        let rest = condFrames.filter { !selected.contains($0) }.enumerated()
            .sorted { (l, r) in
                let dl = abs(l.element - frame), dr = abs(r.element - frame)
                return dl != dr ? dl < dr : l.offset < r.offset
            }
            .map { $0.element }
        for t in rest where selected.count < maxNum { selected.append(t) }
        return (selected, condFrames.filter { !selected.contains($0) })
    }

    /// Memory and pointer slots for tracking `frame` forward (memory stride 1, past pointers only).
    public static func selectMemory(_ frame: Int, condFrames: [Int], nonCondFrames: Set<Int>, numFrames: Int, cfg: TrackerConfig) -> Selection {
        let (selected, unselected) = selectClosestCondFrames(frame, condFrames, maxNum: cfg.condFrames)
        let unsel = Set(unselected)
        var memFrames = selected
        var memTpos = [Int](repeating: cfg.numMaskmem - 1, count: selected.count)
        for tPos in 1..<cfg.numMaskmem {
            let tRel = cfg.numMaskmem - tPos
            let prev = frame - tRel
            if nonCondFrames.contains(prev) || unsel.contains(prev) {
                memFrames.append(prev)
                memTpos.append(tRel - 1)
            }
        }
        var ptrFrames = selected.filter { $0 <= frame }
        let maxPtrs = min(numFrames, cfg.maxObjPtrs)
        if maxPtrs > 1 {
            for tDiff in 1..<maxPtrs {
                let t = frame - tDiff
                if t < 0 || t >= numFrames { break }
                if nonCondFrames.contains(t) || unsel.contains(t) { ptrFrames.append(t) }
            }
        }
        return Selection(memFrames: memFrames, memTpos: memTpos, ptrFrames: ptrFrames)
    }

    /// Round to bfloat16 precision (nearest even), kept as Float: upstream stores memories so.
    @inline(__always) public static func roundToBF16(_ x: Float) -> Float {
        if x.isNaN { return x }
        let bits = x.bitPattern
        let rounding: UInt32 = 0x7FFF &+ ((bits >> 16) & 1)
        return Float(bitPattern: (bits &+ rounding) & 0xFFFF_0000)
    }
}

/// What one frame leaves behind for one object.
public final class FrameMemory {
    public let lowRes: [Float]
    public let objPtr: [Float]
    public let objScore: Float
    public var memFeats: [Float]?

    public init(lowRes: [Float], objPtr: [Float], objScore: Float) {
        self.lowRes = lowRes
        self.objPtr = objPtr
        self.objScore = objScore
    }
}

/// Per-object tracking state. Dictionaries keep insertion order through the parallel key lists.
public final class ObjectBank {
    public let objId: Int
    public private(set) var condOrder: [Int] = []
    public private(set) var cond: [Int: FrameMemory] = [:]
    public var nonCond: [Int: FrameMemory] = [:]
    public var tracked = Set<Int>()
    /// Frames whose mask came from a correction click (kept when the app re-tracks).
    public internal(set) var corrections = Set<Int>()
    private(set) var pendingOrder: [Int] = []
    private(set) var pending: [Int: (FrameMemory, Bool)] = [:]

    public init(objId: Int) { self.objId = objId }

    public func setCond(_ frame: Int, _ mem: FrameMemory) {
        if cond[frame] == nil { condOrder.append(frame) }
        cond[frame] = mem
    }

    func setPending(_ frame: Int, _ mem: FrameMemory, isCond: Bool) {
        if pending[frame] == nil { pendingOrder.append(frame) }
        pending[frame] = (mem, isCond)
    }

    func takePending() -> [(Int, FrameMemory, Bool)] {
        let out = pendingOrder.map { ($0, pending[$0]!.0, pending[$0]!.1) }
        pendingOrder = []
        pending = [:]
        return out
    }

    /// Most recent output on a frame, as upstream looks it up for correction clicks.
    public func lookup(_ frame: Int) -> FrameMemory? { pending[frame]?.0 ?? cond[frame] ?? nonCond[frame] }

    public func memory(of frame: Int) -> FrameMemory {
        guard let m = cond[frame] ?? nonCond[frame] else { preconditionFailure("object \(objId) has no memory for frame \(frame)") }
        return m
    }

    /// Drop non-conditioning frames that forward tracking past `frame` can no longer reach.
    public func prune(_ frame: Int, cfg: TrackerConfig) {
        let keep = max(cfg.numMaskmem - 1, cfg.maxObjPtrs - 1)
        for t in nonCond.keys where t <= frame - keep { nonCond[t] = nil }
    }
}

/// Padded memory-attention inputs, allocated once and refilled per call.
public final class MemoryInputs {
    public let slotSize: Int
    public let dModel: Int
    public var memFeats: [Float]
    public var memTpos: [Int32]
    public var memValid: [Float]
    public var objPtrs: [Float]
    public var ptrValid: [Float]

    public init(cfg: TrackerConfig) {
        slotSize = cfg.memDim * cfg.featSize * cfg.featSize
        dModel = cfg.dModel
        memFeats = [Float](repeating: 0, count: cfg.memorySlots * slotSize)
        memTpos = [Int32](repeating: 0, count: cfg.memorySlots)
        memValid = [Float](repeating: 0, count: cfg.memorySlots)
        objPtrs = [Float](repeating: 0, count: cfg.ptrSlots * cfg.dModel)
        ptrValid = [Float](repeating: 0, count: cfg.ptrSlots)
    }

    /// Valid entries first, the rest zero and marked invalid.
    public func fill(bank: ObjectBank, selection sel: Selection) {
        precondition(sel.memFrames.count <= memTpos.count && sel.ptrFrames.count <= ptrValid.count, "memory selection exceeds capacity")
        for i in memFeats.indices { memFeats[i] = 0 }
        for i in objPtrs.indices { objPtrs[i] = 0 }
        for i in memTpos.indices { memTpos[i] = 0; memValid[i] = 0 }
        for i in ptrValid.indices { ptrValid[i] = 0 }
        for (i, t) in sel.memFrames.enumerated() {
            guard let f = bank.memory(of: t).memFeats else { preconditionFailure("frame \(t) has no encoded memory") }
            memFeats.replaceSubrange(i * slotSize..<(i + 1) * slotSize, with: f)
            memTpos[i] = Int32(sel.memTpos[i])
            memValid[i] = 1
        }
        for (i, t) in sel.ptrFrames.enumerated() {
            objPtrs.replaceSubrange(i * dModel..<(i + 1) * dModel, with: bank.memory(of: t).objPtr)
            ptrValid[i] = 1
        }
    }
}
