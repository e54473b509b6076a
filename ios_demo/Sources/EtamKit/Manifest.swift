import Foundation

public struct TensorSpec: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let dtype: String

    public init(name: String, shape: [Int], dtype: String) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
    }

    public var count: Int { shape.reduce(1, *) }
}

public struct StageSpec: Sendable {
    public let name: String
    public let inputs: [TensorSpec]
    public let outputs: [TensorSpec]
    public let artifacts: [String: String]

    public init(name: String, inputs: [TensorSpec], outputs: [TensorSpec], artifacts: [String: String]) {
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.artifacts = artifacts
    }

    public func input(_ n: String) throws -> TensorSpec {
        guard let t = inputs.first(where: { $0.name == n }) else { throw EtamError.manifest("stage \(name) has no input '\(n)'") }
        return t
    }

    public func output(_ n: String) throws -> TensorSpec {
        guard let t = outputs.first(where: { $0.name == n }) else { throw EtamError.manifest("stage \(name) has no output '\(n)'") }
        return t
    }
}

/// Every constant the tracker needs, read from manifest.json (or a trace's `manifest` block).
public struct TrackerConfig: Sendable {
    public let configName: String
    public let imageSize: Int
    public let points: Int
    public let condFrames: Int
    public let memorySlots: Int
    public let ptrSlots: Int
    public let recentFrames: Int
    public let featSize: Int
    public let lowResSize: Int
    public let dModel: Int
    public let memDim: Int
    public let numMaskmem: Int
    public let maxObjPtrs: Int
    public let multimaskMinPt: Int
    public let multimaskMaxPt: Int
    public let stabilityDelta: Double
    public let stabilityThresh: Double
    public let noObjScore: Float
    public let maskInputClamp: Float

    /// From an object holding `config`, `image_size`, `capacities` and `postprocessing`.
    public init(json root: JSONObject) throws {
        let caps = try root.obj("capacities")
        let post = try root.obj("postprocessing")
        configName = try root.string("config")
        imageSize = try root.int("image_size")
        points = try caps.int("points")
        condFrames = try caps.int("cond_frames")
        memorySlots = try caps.int("memory_slots")
        ptrSlots = try caps.int("ptr_slots")
        recentFrames = try caps.int("recent_frames")
        featSize = try post.int("feat_size")
        lowResSize = try post.int("low_res_size")
        dModel = try post.int("d_model")
        memDim = try post.int("mem_dim")
        numMaskmem = try post.int("num_maskmem")
        maxObjPtrs = try post.int("max_obj_ptrs_in_encoder")
        multimaskMinPt = try post.int("multimask_min_pt_num")
        multimaskMaxPt = try post.int("multimask_max_pt_num")
        stabilityDelta = try post.double("dynamic_multimask_stability_delta")
        stabilityThresh = try post.double("dynamic_multimask_stability_thresh")
        noObjScore = Float(try post.double("no_obj_score"))
        maskInputClamp = Float(try post.double("mask_input_clamp"))
        let fix = "; re-export the folder"
        if condFrames < 2 { throw EtamError.manifest("\(root.path): capacities.cond_frames must be at least 2 (got \(condFrames))\(fix)") }
        if memorySlots != condFrames + numMaskmem - 1 {
            throw EtamError.manifest("\(root.path): capacities.memory_slots \(memorySlots) != cond_frames + num_maskmem - 1\(fix)")
        }
        if ptrSlots != condFrames + maxObjPtrs - 1 {
            throw EtamError.manifest("\(root.path): capacities.ptr_slots \(ptrSlots) != cond_frames + max_obj_ptrs_in_encoder - 1\(fix)")
        }
        if points < 2 { throw EtamError.manifest("\(root.path): capacities.points must be at least 2\(fix)") }
    }
}

/// manifest.json of an export folder: the one contract shared with the Python exporter.
public struct Manifest: Sendable {
    /// Newest format the exporter writes; 2 lets a slot bucket be a method of a shared program.
    public static let formatVersion = 2
    /// Formats this app reads: 1 (one file per slot bucket) and 2 (SlotBucket.methods).
    public static let readableFormatVersions = [1, 2]
    public static let fileName = "manifest.json"
    public static let stageNames = ["image_encoder", "memory_attention", "mask_decoder", "memory_encoder"]
    /// Ordered input and output names of each stage (etam_mobile/contracts.py).
    public static let contract: [String: ([String], [String])] = [
        "image_encoder": (["image"], ["feats"]),
        "memory_attention": (["feats", "mem_feats", "mem_tpos", "mem_valid", "obj_ptrs", "ptr_valid"], ["cond_feats"]),
        "mask_decoder": (["cond_feats", "points", "labels", "mask_input", "has_mask_input"], ["masks", "iou", "obj_ptr", "obj_score"]),
        "memory_encoder": (["feats", "mask", "binarize"], ["mem_feats"]),
    ]

    public let config: String
    public let precision: String
    public let imageSize: Int
    public let mean: [Float]
    public let std: [Float]
    public let scale: Double
    public let tracker: TrackerConfig
    public let stages: [String: StageSpec]
    public let checksums: [String: String]
    public let weightsDescription: String
    /// Package -> version that wrote the artifacts (`artifact_producers`, else `tool.versions`).
    public let producers: [String: String]
    /// The mask-prompt constants (`mask_prompt`); nil for exports made before mask prompts.
    public internal(set) var maskPrompt: MaskPromptConstants? = nil

    /// coremltools versions whose .mlpackage files this app was tested with (major.minor prefixes).
    public static let supportedCoreMLTools = ["8.", "9."]
    public static let recommendedCoreMLTools = "9.0"

    /// Refuse artifacts written by a `package` version this app does not support, with the fix.
    /// `supported` are version prefixes ("1.4." accepts 1.4.0 and 1.4.1), `install` the version to
    /// re-export with, `runtime` what this app runs (named in the message).
    public func requireProducer(_ package: String, supported: [String], install: String, runtime: String) throws {
        guard let v = producers[package] else {
            throw EtamError.manifest("manifest.json does not record which \(package) version wrote the models, and \(runtime) only reads models from \(package) \(supported.map { $0 + "x" }.joined(separator: " or ")); re-export with this etam-mobile and `pip install \(package)==\(install)`")
        }
        guard supported.contains(where: { (v + ".").hasPrefix($0) }) else {
            throw EtamError.manifest("the models were written by \(package) \(v), but \(runtime) only reads models from \(package) \(supported.map { $0 + "x" }.joined(separator: " or ")); re-export with `pip install \(package)==\(install)`")
        }
    }

    /// Targets (coreml, executorch, ...) for which every stage has an artifact.
    public var completeTargets: [String] {
        let all = Manifest.stageNames.compactMap { stages[$0] }
        guard let first = all.first else { return [] }
        return first.artifacts.keys.sorted().filter { t in all.allSatisfy { $0.artifacts[t] != nil } }
    }

    public func stage(_ name: String) throws -> StageSpec {
        guard let s = stages[name] else { throw EtamError.manifest("manifest has no stage \(name)") }
        return s
    }

    public func artifact(_ stage: String, target: String) throws -> String {
        guard let a = try self.stage(stage).artifacts[target] else {
            let have = completeTargets.isEmpty ? "none" : completeTargets.joined(separator: ", ")
            throw EtamError.manifest("the export has no \(target) artifact for \(stage) (it has: \(have)); re-export with --targets \(target)")
        }
        return a
    }

    /// Read `folder/manifest.json`; every problem becomes EtamError.manifest with a fix.
    public static func load(folder: URL) throws -> Manifest {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDir), isDir.boolValue else {
            throw EtamError.manifest("export folder \(folder.lastPathComponent) does not exist; add the folder written by `etam-mobile export` to the app (see README)")
        }
        let file = folder.appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw EtamError.manifest("\(folder.lastPathComponent) has no \(fileName): not an export folder (or an interrupted copy); copy the whole export folder again")
        }
        return try parse(data, source: file.lastPathComponent)
    }

    public static func parse(_ data: Data, source: String = fileName) throws -> Manifest {
        let root: JSONObject
        do {
            root = try JSONObject.parse(data, what: source)
        } catch let e as EtamError {
            throw EtamError.manifest("\(source) is not valid JSON (\(e.message)); copy the export folder again")
        }
        let version = root.dict["format_version"]
        if !readableFormatVersions.contains(where: { version?.intValue == $0 }) {
            let shown: String
            switch version {
            case .number(let d)?: shown = d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
            case .string(let s)?: shown = "\"\(s)\""
            case .bool(let b)?: shown = String(b)
            default: shown = "null"
            }
            throw EtamError.manifest("\(source) has format_version \(shown), this app reads \(readableFormatVersions.map(String.init).joined(separator: " and ")); re-export with the etam-mobile version that matches this app")
        }
        do {
            return try build(root, source: source)
        } catch EtamError.json(let m) {
            throw EtamError.manifest("\(m); re-export the folder")
        }
    }

    private static func build(_ root: JSONObject, source: String) throws -> Manifest {
        for key in ["config", "capacities", "stages", "checksums", "weights"] where !root.has(key) {
            throw EtamError.manifest("\(source) lacks '\(key)'; re-export the folder")
        }
        let tracker = try TrackerConfig(json: root)
        let pre = try root.obj("preprocessing")
        let mean = try pre.floatList("mean")
        let std = try pre.floatList("std")
        guard mean.count == 3, std.count == 3 else { throw EtamError.manifest("\(source): preprocessing mean/std must have 3 values") }
        let stagesObj = try root.obj("stages")
        var stages: [String: StageSpec] = [:]
        for name in stageNames {
            guard stagesObj.has(name) else { throw EtamError.manifest("\(source) has no stage '\(name)'; re-export the folder") }
            let st = try stagesObj.obj(name)
            var art: [String: String] = [:]
            if st.has("artifacts") {
                let a = try st.obj("artifacts")
                for k in a.keys { art[k] = try a.string(k) }
            }
            func specs(_ key: String) throws -> [TensorSpec] {
                return try st.objects(key).map { TensorSpec(name: try $0.string("name"), shape: try $0.intList("shape"), dtype: try $0.string("dtype")) }
            }
            let spec = StageSpec(name: name, inputs: try specs("inputs"), outputs: try specs("outputs"), artifacts: art)
            let want = contract[name]!
            if spec.inputs.map({ $0.name }) != want.0 || spec.outputs.map({ $0.name }) != want.1 {
                throw EtamError.manifest("\(source): stage \(name) has inputs \(spec.inputs.map { $0.name }) and outputs \(spec.outputs.map { $0.name }), this app expects \(want.0) -> \(want.1); re-export the folder")
            }
            stages[name] = spec
        }
        var checks: [String: String] = [:]
        let c = try root.obj("checksums")
        for k in c.keys { checks[k] = try c.string(k) }
        let weights = try root.obj("weights")
        let wdesc: String
        if weights.has("checkpoint") {
            wdesc = "checkpoint \(try weights.string("checkpoint"))"
        } else if weights.has("synthetic_seed") {
            wdesc = "SYNTHETIC weights (seed \(try weights.int("synthetic_seed"))): masks are meaningless"
        } else {
            wdesc = "unrecorded weights"
        }
        var m = Manifest(config: try root.string("config"), precision: root.has("precision") ? try root.string("precision") : "unknown",
                         imageSize: tracker.imageSize, mean: mean, std: std, scale: try pre.double("scale"), tracker: tracker,
                         stages: stages, checksums: checks, weightsDescription: wdesc, producers: try producerVersions(root))
        try m.checkShapes(source)
        m.maskPrompt = try MaskPromptConstants(manifest: root)
        return m
    }

    private static func producerVersions(_ root: JSONObject) throws -> [String: String] {
        var out: [String: String] = [:]
        if root.has("tool"), case .object(let versions)? = try root.obj("tool").dict["versions"] {
            for (k, v) in versions { if let s = v.stringValue { out[k] = s } }
        }
        if root.has("artifact_producers") {
            let p = try root.obj("artifact_producers")
            for k in p.keys { out[k] = try p.string(k) }
        }
        return out
    }

    /// The stage shapes must agree with the capacities and sizes the tracker will use.
    private func checkShapes(_ source: String) throws {
        let t = tracker
        func expect(_ stage: String, _ spec: TensorSpec, _ shape: [Int]) throws {
            if spec.shape != shape {
                throw EtamError.manifest("\(source): \(stage).\(spec.name) has shape \(spec.shape), the capacities say \(shape); re-export the folder")
            }
        }
        let s = t.imageSize, h = t.featSize, lr = t.lowResSize
        try expect("image_encoder", try stage("image_encoder").input("image"), [1, 3, s, s])
        try expect("image_encoder", try stage("image_encoder").output("feats"), [1, t.dModel, h, h])
        let ma = try stage("memory_attention")
        try expect("memory_attention", try ma.input("mem_feats"), [t.memorySlots, t.memDim, h, h])
        try expect("memory_attention", try ma.input("obj_ptrs"), [t.ptrSlots, t.dModel])
        let md = try stage("mask_decoder")
        try expect("mask_decoder", try md.input("points"), [1, t.points, 2])
        try expect("mask_decoder", try md.input("mask_input"), [1, 1, lr, lr])
        try expect("mask_decoder", try md.output("masks"), [1, 4, lr, lr])
        try expect("memory_encoder", try stage("memory_encoder").output("mem_feats"), [1, t.memDim, h, h])
    }
}
