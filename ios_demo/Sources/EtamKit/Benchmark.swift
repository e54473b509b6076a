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

    public func clear() { times = [:] }
}

public struct DeviceInfo {
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
}

/// The device-results JSON (`etam-device-bench` version 1) the apps write and benchmarks/ reads.
public enum BenchmarkReport {
    /// numpy.percentile's default (linear interpolation between closest ranks).
    public static func percentile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        let pos = Double(s.count - 1) * q / 100.0
        let lo = Int(pos.rounded(.down))
        let hi = min(lo + 1, s.count - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
    }

    private static func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }

    public static func build(device: DeviceInfo, backend: String, computeUnits: String, manifest: Manifest,
                             stageTimes: [String: [Double]], frameTimes: [Double], appVersion: String, manifestSHA256: String,
                             computeUnitReports: [String: [String: Any]] = [:]) -> [String: Any] {
        var stages: [String: Any] = [:]
        for name in Manifest.stageNames {
            guard let t = stageTimes[name] else { continue }
            var entry: [String: Any] = ["median_ms": round3(percentile(t, 50)), "p90_ms": round3(percentile(t, 90)), "calls": t.count]
            if let r = computeUnitReports[name] { entry["compute_unit_report"] = r }
            stages[name] = entry
        }
        return [
            "schema": "etam-device-bench", "version": 1,
            "device": ["model": device.model, "os": device.os, "os_version": device.osVersion, "chip": device.chip],
            "backend": backend, "compute_units": computeUnits, "config": manifest.config, "precision": manifest.precision,
            "frames": frameTimes.count, "stages": stages,
            "frame_ms": ["median": round3(percentile(frameTimes, 50)), "p90": round3(percentile(frameTimes, 90))],
            "app_version": appVersion, "export_manifest_sha256": manifestSHA256,
        ]
    }

    public static func jsonData(_ doc: [String: Any]) throws -> Data {
        return try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
    }
}
