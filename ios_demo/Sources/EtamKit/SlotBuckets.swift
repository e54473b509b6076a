import Foundation

/// One memory-attention graph: its slot counts, its artifact per target and, where the artifact is a
/// multi-method program (format 2: ExecuTorch buckets are methods of memory_attention.pte, one copy of
/// the weights), the method per target that runs it (manifest.json). Core ML buckets are files.
public struct SlotBucket: Equatable {
    public let memorySlots: Int
    public let ptrSlots: Int
    public let artifacts: [String: String]
    public let methods: [String: String]

    public init(memorySlots: Int, ptrSlots: Int, artifacts: [String: String] = [:], methods: [String: String] = [:]) {
        self.memorySlots = memorySlots
        self.ptrSlots = ptrSlots
        self.artifacts = artifacts
        self.methods = methods
    }

    /// The method of artifacts[target] to run: the named one, else the file's only graph, "forward".
    public func method(_ target: String) -> String { methods[target] ?? "forward" }
}

/// Memory-attention inputs cut to one bucket's slot counts (valid slots come first).
public struct BucketInputs {
    public let bucket: SlotBucket
    public let memFeats: [Float]
    public let memTpos: [Int32]
    public let memValid: [Float]
    public let objPtrs: [Float]
    public let ptrValid: [Float]
}

/// Which memory-attention graph runs a call: the smallest one that holds every valid slot, so no
/// work is spent on empty slots (etam_mobile/contracts.py `choose_slot_bucket`, the same rule).
///
/// The manifest lists the smaller graphs under stages.memory_attention.slot_buckets; the full graph
/// (capacities.memory_slots / ptr_slots, the stage's own artifacts) is the last candidate.
public enum SlotBuckets {
    /// Index into `buckets` for `nMem` valid memory and `nPtr` valid pointer slots: among buckets with
    /// memorySlots >= nMem and ptrSlots >= nPtr the one with the fewest memory slots, then the fewest
    /// pointer slots, then the earliest in the list; nil when none fits.
    public static func choose(_ buckets: [SlotBucket], nMem: Int, nPtr: Int) -> Int? {
        var best: Int? = nil
        for (i, b) in buckets.enumerated() where b.memorySlots >= nMem && b.ptrSlots >= nPtr {
            guard let c = best.map({ buckets[$0] }) else { best = i; continue }
            if b.memorySlots < c.memorySlots || (b.memorySlots == c.memorySlots && b.ptrSlots < c.ptrSlots) { best = i }
        }
        return best
    }

    /// stages.memory_attention.slot_buckets of a manifest document (absent in older exports: none).
    public static func parse(manifest root: JSONObject, tracker: TrackerConfig) throws -> [SlotBucket] {
        let ma = try root.obj("stages").obj("memory_attention")
        guard ma.has("slot_buckets") else { return [] }
        return try ma.objects("slot_buckets").map { b in
            let k = try b.int("memory_slots"), p = try b.int("ptr_slots")
            guard k >= 1, k <= tracker.memorySlots, p >= 1, p <= tracker.ptrSlots else {
                throw EtamError.manifest("\(b.path): slot bucket [\(k), \(p)] is outside the capacities [\(tracker.memorySlots), \(tracker.ptrSlots)]; re-export the folder")
            }
            var art: [String: String] = [:]
            if b.has("artifacts") {
                let a = try b.obj("artifacts")
                for key in a.dict.keys { art[key] = try a.string(key) }
            }
            var methods: [String: String] = [:]
            if b.has("methods") {
                let m = try b.obj("methods")
                for key in m.dict.keys {
                    let name = try m.string(key)
                    guard art[key] != nil, !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                        throw EtamError.manifest("\(m.path).\(key): method '\(name)' of slot bucket [\(k), \(p)] is not a method name of one of its artifacts; re-export the folder")
                    }
                    methods[key] = name
                }
            }
            return SlotBucket(memorySlots: k, ptrSlots: p, artifacts: art, methods: methods)
        }
    }

    /// The candidates for `target`: the listed buckets that have its artifact, then the full graph.
    public static func candidates(_ buckets: [SlotBucket], manifest: Manifest, target: String) throws -> [SlotBucket] {
        let t = manifest.tracker
        let full = SlotBucket(memorySlots: t.memorySlots, ptrSlots: t.ptrSlots, artifacts: try manifest.stage("memory_attention").artifacts)
        return buckets.filter { $0.artifacts[target] != nil } + [full]
    }

    /// Count the valid slots, choose, and cut the padded arrays (sized for the full graph).
    public static func select(_ candidates: [SlotBucket], tracker cfg: TrackerConfig, memFeats: [Float], memTpos: [Int32],
                              memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> BucketInputs {
        let nMem = memValid.filter { $0 != 0 }.count
        let nPtr = ptrValid.filter { $0 != 0 }.count
        guard let i = choose(candidates, nMem: nMem, nPtr: nPtr) else {
            throw EtamError.model("no memory-attention graph holds \(nMem) memories and \(nPtr) pointers")
        }
        let b = candidates[i]
        guard memValid.dropFirst(b.memorySlots).allSatisfy({ $0 == 0 }), ptrValid.dropFirst(b.ptrSlots).allSatisfy({ $0 == 0 }) else {
            throw EtamError.model("valid memory and pointer slots must come first")
        }
        let slot = cfg.memDim * cfg.featSize * cfg.featSize
        return BucketInputs(bucket: b, memFeats: Array(memFeats.prefix(b.memorySlots * slot)), memTpos: Array(memTpos.prefix(b.memorySlots)),
                            memValid: Array(memValid.prefix(b.memorySlots)), objPtrs: Array(objPtrs.prefix(b.ptrSlots * cfg.dModel)),
                            ptrValid: Array(ptrValid.prefix(b.ptrSlots)))
    }
}
