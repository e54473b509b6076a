import Foundation

/// Wraps a StageRunner and records wall time per stage call (for the app's benchmark mode).
public final class TimedStageRunner: StageRunner {
    public let inner: StageRunner
    public private(set) var times: [String: [Double]] = [:]

    public init(_ inner: StageRunner) { self.inner = inner }

    private func time<T>(_ stage: String, _ block: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = try block()
        times[stage, default: []].append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        return r
    }

    public func imageEncoder(_ image: [Float]) throws -> [Float] {
        try time("image_encoder") { try inner.imageEncoder(image) }
    }

    public func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] {
        try time("memory_attention") {
            try inner.memoryAttention(feats: feats, memFeats: memFeats, memTpos: memTpos, memValid: memValid, objPtrs: objPtrs, ptrValid: ptrValid)
        }
    }

    public func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
        try time("mask_decoder") {
            try inner.maskDecoder(condFeats: condFeats, points: points, labels: labels, maskInput: maskInput, hasMaskInput: hasMaskInput)
        }
    }

    public func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
        try time("memory_encoder") { try inner.memoryEncoder(feats: feats, mask: mask, binarize: binarize) }
    }

    /// Forget the warm-up calls.
    public func clear() { times = [:] }
}

/// Summary statistics of timings, as ExecuTorch's benchmark apps report them.
public enum BenchmarkStats {
    /// numpy.percentile's default (linear interpolation between closest ranks); nil when empty.
    public static func percentile(_ values: [Double], _ q: Double) -> Double? {
        guard !values.isEmpty else { return nil }
        let s = values.sorted()
        let pos = Double(s.count - 1) * q / 100.0
        let lo = Int(pos.rounded(.down))
        let hi = min(lo + 1, s.count - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
    }

    public static func median(_ values: [Double]) -> Double? { percentile(values, 50) }

    /// Mean after dropping the `trim` fraction of samples at each end (scipy.stats.trim_mean:
    /// floor(trim * n) values cut from each side), robust to the odd stall or thermal spike.
    public static func trimmedMean(_ values: [Double], trim: Double = 0.1) -> Double? {
        guard !values.isEmpty else { return nil }
        precondition(trim >= 0 && trim < 0.5, "trim must be in [0, 0.5)")
        let s = values.sorted()
        let cut = Int((trim * Double(s.count)).rounded(.down))
        let kept = s[cut..<(s.count - cut)]
        return kept.reduce(0, +) / Double(kept.count)
    }

    static func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
}

public struct DeviceInfo: Codable, Equatable, Sendable {
    public let model: String
    public let os: String
    public let osVersion: String
    public let chip: String

    public init(model: String, os: String, osVersion: String, chip: String) {
        self.model = model
        self.os = os
        self.osVersion = osVersion
        self.chip = chip
    }

    enum CodingKeys: String, CodingKey {
        case model, os, chip
        case osVersion = "os_version"
    }
}

/// One stage's timings per call (milliseconds, warm-up excluded).
public struct StageTiming: Codable, Equatable, Sendable {
    public let medianMs: Double
    public let p90Ms: Double
    public let trimmedMeanMs: Double
    public let calls: Int
    /// How the runtime placed the stage (MLComputePlan op counts, the ExecuTorch delegate, ...).
    public let computeUnitReport: [String: JSONValue]?
    public let loadMs: Double?

    enum CodingKeys: String, CodingKey {
        case calls
        case medianMs = "median_ms", p90Ms = "p90_ms", trimmedMeanMs = "trimmed_mean_ms"
        case computeUnitReport = "compute_unit_report", loadMs = "load_ms"
    }
}

/// Per-frame timings (milliseconds, warm-up excluded).
public struct FrameTiming: Codable, Equatable, Sendable {
    public let median: Double
    public let p90: Double
    public let trimmedMean: Double

    enum CodingKeys: String, CodingKey {
        case median, p90
        case trimmedMean = "trimmed_mean"
    }
}

/// The device-results JSON (`etam-device-bench` version 1, benchmarks/device_results.schema.json)
/// that benchmarks/merge_device_results.py reads.
public struct DeviceBenchmarkResult: Codable, Equatable, Sendable {
    public var schema = "etam-device-bench"
    public var version = 1
    public let device: DeviceInfo
    public let backend: String
    public let computeUnits: String
    public let config: String
    public let precision: String
    public let frames: Int
    public let warmupFrames: Int
    public let objects: Int
    public let stages: [String: StageTiming]
    public let frameMs: FrameTiming
    public let modelLoadMs: Double
    public let peakMemoryMb: Double?
    public let thermalState: String?
    public let cpuGovernor: String?
    public let appVersion: String
    public let exportManifestSha256: String
    public let timestamp: String?
    public let notes: String?

    enum CodingKeys: String, CodingKey {
        case schema, version, device, backend, config, precision, frames, objects, stages, timestamp, notes
        case computeUnits = "compute_units", warmupFrames = "warmup_frames", frameMs = "frame_ms"
        case modelLoadMs = "model_load_ms", peakMemoryMb = "peak_memory_mb", thermalState = "thermal_state"
        case cpuGovernor = "cpu_governor", appVersion = "app_version", exportManifestSha256 = "export_manifest_sha256"
    }

    /// Pretty, key-sorted JSON (the same bytes on Apple and Linux Foundation).
    public func jsonData() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try enc.encode(self)
    }
}

/// Everything a benchmark run measured, before it becomes a DeviceBenchmarkResult.
public struct BenchmarkMeasurements: Sendable {
    /// Per stage, wall time of every timed call (warm-up already excluded).
    public var stageTimes: [String: [Double]]
    /// Wall time of every timed frame (all objects, all stages).
    public var frameTimes: [Double]
    public var warmupFrames: Int
    public var objects: Int
    /// Time to load (and compile, on first launch) every stage, milliseconds.
    public var modelLoadMs: Double
    public var stageLoadMs: [String: Double]
    public var peakMemoryMB: Double?
    public var thermalState: String?
    public var cpuGovernor: String?

    public init(stageTimes: [String: [Double]], frameTimes: [Double], warmupFrames: Int, objects: Int, modelLoadMs: Double,
                stageLoadMs: [String: Double] = [:], peakMemoryMB: Double? = nil, thermalState: String? = nil, cpuGovernor: String? = nil) {
        self.stageTimes = stageTimes
        self.frameTimes = frameTimes
        self.warmupFrames = warmupFrames
        self.objects = objects
        self.modelLoadMs = modelLoadMs
        self.stageLoadMs = stageLoadMs
        self.peakMemoryMB = peakMemoryMB
        self.thermalState = thermalState
        self.cpuGovernor = cpuGovernor
    }
}

public enum BenchmarkReport {
    /// Median / p90 / trimmed mean per stage and per frame, rounded to microseconds.
    /// Throws when nothing was timed (a result the merge script would reject).
    public static func build(device: DeviceInfo, backend: String, computeUnits: String, manifest: Manifest,
                             measured m: BenchmarkMeasurements, appVersion: String, manifestSHA256: String,
                             computeUnitReports: [String: [String: JSONValue]] = [:], timestamp: String? = nil,
                             notes: String? = nil) throws -> DeviceBenchmarkResult {
        let r = BenchmarkStats.round3
        var stages: [String: StageTiming] = [:]
        for name in Manifest.stageNames {
            guard let t = m.stageTimes[name], let med = BenchmarkStats.median(t), let p90 = BenchmarkStats.percentile(t, 90),
                  let tm = BenchmarkStats.trimmedMean(t) else { continue }
            stages[name] = StageTiming(medianMs: r(med), p90Ms: r(p90), trimmedMeanMs: r(tm), calls: t.count,
                                       computeUnitReport: computeUnitReports[name], loadMs: m.stageLoadMs[name].map(r))
        }
        guard !stages.isEmpty, let fmed = BenchmarkStats.median(m.frameTimes), let fp90 = BenchmarkStats.percentile(m.frameTimes, 90),
              let ftm = BenchmarkStats.trimmedMean(m.frameTimes) else {
            throw EtamError.prompt("the benchmark timed no frame; use a longer video or fewer warm-up frames")
        }
        return DeviceBenchmarkResult(device: device, backend: backend, computeUnits: computeUnits, config: manifest.config,
                                     precision: manifest.precision, frames: m.frameTimes.count, warmupFrames: m.warmupFrames,
                                     objects: m.objects, stages: stages, frameMs: FrameTiming(median: r(fmed), p90: r(fp90), trimmedMean: r(ftm)),
                                     modelLoadMs: r(m.modelLoadMs), peakMemoryMb: m.peakMemoryMB.map(r), thermalState: m.thermalState,
                                     cpuGovernor: m.cpuGovernor, appVersion: appVersion, exportManifestSha256: manifestSHA256,
                                     timestamp: timestamp, notes: notes)
    }

    /// File name the apps write: device_results_<model>_<config>_<units>.json.
    public static func fileName(device: DeviceInfo, config: String, computeUnits: String) -> String {
        let safe = { (s: String) in String(s.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" }) }
        return "device_results_\(safe(device.model))_\(safe(config))_\(safe(computeUnits)).json"
    }
}
