#if canImport(CoreML)
import CoreML
import EtamKit
import Foundation

/// Compute units the app offers (Core ML's MLComputeUnits, named as in the results JSON).
public enum ComputeUnits: String, CaseIterable, Identifiable, Sendable {
    case all = "ALL"
    case cpuAndNeuralEngine = "CPU_AND_NE"
    case cpuAndGPU = "CPU_AND_GPU"
    case cpuOnly = "CPU_ONLY"

    public var id: String { rawValue }

    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuOnly: return .cpuOnly
        }
    }
}

/// One stage as a Core ML model: loaded once, input MLMultiArrays allocated once and refilled.
final class CoreMLStage {
    let spec: StageSpec
    let model: MLModel
    let compiledURL: URL
    private var inputs: [String: MLMultiArray] = [:]
    private let provider: MLDictionaryFeatureProvider

    init(spec: StageSpec, compiledURL: URL, configuration: MLModelConfiguration) throws {
        self.spec = spec
        self.compiledURL = compiledURL
        do {
            model = try MLModel(contentsOf: compiledURL, configuration: configuration)
        } catch {
            throw EtamError.model("\(spec.name) could not be loaded on this device (\(error.localizedDescription)); re-export it or choose other compute units")
        }
        var features: [String: MLFeatureValue] = [:]
        for t in spec.inputs {
            let type: MLMultiArrayDataType = t.dtype == "int32" ? .int32 : .float32
            let arr = try MLMultiArray(shape: t.shape.map { NSNumber(value: $0) }, dataType: type)
            inputs[t.name] = arr
            features[t.name] = MLFeatureValue(multiArray: arr)
        }
        provider = try MLDictionaryFeatureProvider(dictionary: features)
    }

    func setFloat(_ name: String, _ values: [Float]) {
        guard let arr = inputs[name] else { preconditionFailure("\(spec.name) has no input \(name)") }
        precondition(arr.count == values.count, "\(spec.name).\(name): \(values.count) values for \(arr.count) elements")
        arr.withUnsafeMutableBufferPointer(ofType: Float.self) { ptr, _ in
            values.withUnsafeBufferPointer { src in ptr.baseAddress!.update(from: src.baseAddress!, count: values.count) }
        }
    }

    func setInt(_ name: String, _ values: [Int32]) {
        guard let arr = inputs[name] else { preconditionFailure("\(spec.name) has no input \(name)") }
        precondition(arr.count == values.count, "\(spec.name).\(name): \(values.count) values for \(arr.count) elements")
        arr.withUnsafeMutableBufferPointer(ofType: Int32.self) { ptr, _ in
            values.withUnsafeBufferPointer { src in ptr.baseAddress!.update(from: src.baseAddress!, count: values.count) }
        }
    }

    /// Runs the model; returns every output as a flat Float array (fp16 outputs are widened).
    func run() throws -> [String: [Float]] {
        let out: MLFeatureProvider
        do {
            out = try model.prediction(from: provider)
        } catch {
            throw EtamError.model("\(spec.name) failed on this device (\(error.localizedDescription))")
        }
        var result: [String: [Float]] = [:]
        for t in spec.outputs {
            guard let arr = out.featureValue(for: t.name)?.multiArrayValue else {
                throw EtamError.model("\(spec.name) returned no output \(t.name); re-export the folder")
            }
            result[t.name] = CoreMLStage.floats(arr)
        }
        return result
    }

    /// Dense row-major Floats of an output, read through its strides: Core ML may pad the last
    /// dimension (the Neural Engine aligns rows), so the storage is not a flat copy.
    static func floats(_ arr: MLMultiArray) -> [Float] {
        let shape = arr.shape.map { $0.intValue }, strides = arr.strides.map { $0.intValue }
        switch arr.dataType {
        case .float32:
            return arr.withUnsafeBytes { raw in
                let p = raw.bindMemory(to: Float.self)
                return StridedCopy.dense(shape: shape, strides: strides) { p[$0] }
            }
        case .float16:
            #if arch(arm64)
            return arr.withUnsafeBytes { raw in
                let p = raw.bindMemory(to: Float16.self)
                return StridedCopy.dense(shape: shape, strides: strides) { Float(p[$0]) }
            }
            #else
            return slowFloats(arr, shape: shape)
            #endif
        case .double:
            return arr.withUnsafeBytes { raw in
                let p = raw.bindMemory(to: Double.self)
                return StridedCopy.dense(shape: shape, strides: strides) { Float(p[$0]) }
            }
        default:
            return slowFloats(arr, shape: shape)
        }
    }

    /// Subscripting by multi-index honours strides for any data type.
    private static func slowFloats(_ arr: MLMultiArray, shape: [Int]) -> [Float] {
        let count = shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        let dense = StridedCopy.denseStrides(shape)
        for i in 0..<count {
            let key = zip(dense, shape).map { NSNumber(value: (i / $0.0) % $0.1) }
            out[i] = arr[key].floatValue
        }
        return out
    }
}

/// The four stages on Core ML. Models are compiled once per device and cached, then loaded once.
public final class CoreMLStageRunner: StageRunner {
    public let manifest: Manifest
    public let computeUnits: ComputeUnits
    private var stages: [String: CoreMLStage] = [:]
    /// Per-stage compiled model URLs (for MLComputePlan).
    public private(set) var compiledURLs: [String: URL] = [:]
    /// Load (compile on first launch + MLModel load) time per stage and in all, milliseconds.
    public private(set) var stageLoadMs: [String: Double] = [:]
    public private(set) var loadMilliseconds: Double = 0
    /// Where Core ML places each stage's ops (MLComputePlan), collected at load; empty before iOS 17.4.
    public private(set) var computeUnitReport: [String: [String: JSONValue]] = [:]

    /// `folder` is an export folder with manifest.json and the .mlpackage (or compiled .mlmodelc)
    /// files. Models from a coremltools version this app does not support are refused with the fix.
    public init(folder: URL, computeUnits: ComputeUnits) async throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        manifest = try Manifest.load(folder: folder)
        try manifest.requireProducer("coremltools", supported: Manifest.supportedCoreMLTools,
                                     install: Manifest.recommendedCoreMLTools, runtime: "this iOS app")
        self.computeUnits = computeUnits
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits.mlComputeUnits
        for name in Manifest.stageNames {
            let s0 = DispatchTime.now().uptimeNanoseconds
            let spec = try manifest.stage(name)
            let rel = try manifest.artifact(name, target: "coreml")
            let url = try await CoreMLStageRunner.compiledModel(folder.appendingPathComponent(rel), stage: name)
            compiledURLs[name] = url
            stages[name] = try CoreMLStage(spec: spec, compiledURL: url, configuration: config)
            stageLoadMs[name] = Double(DispatchTime.now().uptimeNanoseconds - s0) / 1e6
        }
        loadMilliseconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        computeUnitReport = await CoreMLStageRunner.computePlanReport(compiledURLs, units: computeUnits)
    }

    /// An .mlmodelc next to the package (Xcode compiles resources) or a cached on-device compile.
    static func compiledModel(_ package: URL, stage: String) async throws -> URL {
        let fm = FileManager.default
        let precompiled = package.deletingPathExtension().appendingPathExtension("mlmodelc")
        if fm.fileExists(atPath: precompiled.path) { return precompiled }
        guard fm.fileExists(atPath: package.path) else {
            throw EtamError.manifest("\(package.lastPathComponent) is missing from the export folder; copy the whole folder again")
        }
        let attrs = try? fm.attributesOfItem(atPath: package.appendingPathComponent("Manifest.json").path)
        let stamp = Int((attrs?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)
        let cacheDir = try fm.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
            .appendingPathComponent("EtamCompiled", isDirectory: true)
        try fm.createDirectory(at: cacheDir, withIntermediateDirectories: true)
        let cached = cacheDir.appendingPathComponent("\(stage)-\(stamp).mlmodelc")
        if fm.fileExists(atPath: cached.path) { return cached }
        let compiled: URL
        do {
            compiled = try await MLModel.compileModel(at: package)
        } catch {
            throw EtamError.model("\(package.lastPathComponent) failed to compile on this device (\(error.localizedDescription)); re-export with a newer coremltools deployment target or check the OS version")
        }
        try? fm.removeItem(at: cached)
        try fm.moveItem(at: compiled, to: cached)
        return cached
    }

    private func stage(_ name: String) -> CoreMLStage { stages[name]! }

    public func imageEncoder(_ image: [Float]) throws -> [Float] {
        let s = stage("image_encoder")
        s.setFloat("image", image)
        return try s.run()["feats"]!
    }

    public func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] {
        let s = stage("memory_attention")
        s.setFloat("feats", feats)
        s.setFloat("mem_feats", memFeats)
        s.setInt("mem_tpos", memTpos)
        s.setFloat("mem_valid", memValid)
        s.setFloat("obj_ptrs", objPtrs)
        s.setFloat("ptr_valid", ptrValid)
        return try s.run()["cond_feats"]!
    }

    public func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
        let s = stage("mask_decoder")
        s.setFloat("cond_feats", condFeats)
        s.setFloat("points", points)
        s.setInt("labels", labels)
        s.setFloat("mask_input", maskInput)
        s.setFloat("has_mask_input", [hasMaskInput])
        let out = try s.run()
        return DecoderOutput(masks: out["masks"]!, iou: out["iou"]!, objPtr: out["obj_ptr"]!, objScore: out["obj_score"]![0])
    }

    public func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
        let s = stage("memory_encoder")
        s.setFloat("feats", feats)
        s.setFloat("mask", mask)
        s.setFloat("binarize", [binarize])
        return try s.run()["mem_feats"]!
    }

    /// Per stage: how many operations Core ML prefers to run on CPU / GPU / Neural Engine, and the
    /// share of estimated cost on each. Empty where the OS has no MLComputePlan (before iOS 17.4).
    /// Needs the iOS 17.4 / macOS 14.4 SDK (Xcode 15.3 or newer) to compile.
    static func computePlanReport(_ compiledURLs: [String: URL], units: ComputeUnits) async -> [String: [String: JSONValue]] {
        guard #available(iOS 17.4, macOS 14.4, *) else { return [:] }
        let config = MLModelConfiguration()
        config.computeUnits = units.mlComputeUnits
        var out: [String: [String: JSONValue]] = [:]
        for (name, url) in compiledURLs {
            do {
                let plan = try await MLComputePlan.load(contentsOf: url, configuration: config)
                var counts: [String: Int] = ["cpu": 0, "gpu": 0, "neural_engine": 0, "unknown": 0]
                var cost: [String: Double] = ["cpu": 0, "gpu": 0, "neural_engine": 0, "unknown": 0]
                if case let .program(program) = plan.modelStructure, let main = program.functions["main"] {
                    for op in main.block.operations {
                        let device: String
                        switch plan.deviceUsage(for: op)?.preferred {
                        case .some(.cpu): device = "cpu"
                        case .some(.gpu): device = "gpu"
                        case .some(.neuralEngine): device = "neural_engine"
                        default: device = "unknown"
                        }
                        counts[device, default: 0] += 1
                        cost[device, default: 0] += plan.estimatedCost(of: op)?.weight ?? 0
                    }
                }
                out[name] = ["source": .string("MLComputePlan"), "compute_units": .string(units.rawValue),
                             "ops": .object(counts.mapValues { .number(Double($0)) }),
                             "cost_share": .object(cost.mapValues { .number($0) })]
            } catch {
                out[name] = ["source": .string("MLComputePlan"), "error": .string(error.localizedDescription)]
            }
        }
        return out
    }
}
#endif
