import EtamKit
import Foundation
import UIKit

/// Benchmark mode: device facts around TrackingEngine.benchmark (which times every stage and
/// frame, warm-up excluded), written as the device-results JSON benchmarks/ reads.
enum BenchmarkRunner {
    static func deviceModel() -> String {
        var info = utsname()
        uname(&info)
        return withUnsafeBytes(of: &info.machine) { buf in
            String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    /// The process's physical footprint (what jetsam counts), in MB.
    static func footprintMB() -> Double? {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<natural_t>.size)
        let kr = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) { task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count) }
        }
        return kr == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576 : nil
    }

    static func thermalState() -> String {
        switch ProcessInfo.processInfo.thermalState {
        case .nominal: return "nominal"
        case .fair: return "fair"
        case .serious: return "serious"
        case .critical: return "critical"
        @unknown default: return "unknown"
        }
    }

    @MainActor
    static func run(engine: TrackingEngine, folder: URL, computeUnits: ComputeUnits, computeUnitReport: [String: [String: JSONValue]],
                    frames: Int, warmup: Int, progress: @escaping @Sendable (Int, Int) -> Void) async throws -> URL {
        let thermalBefore = thermalState()
        var measured = try await engine.benchmark(frames: frames, warmup: warmup, sampleMemoryMB: { footprintMB() }, progress: progress)
        let thermalAfter = thermalState()
        measured.thermalState = thermalBefore == thermalAfter ? thermalAfter : "\(thermalBefore) -> \(thermalAfter)"
        let manifest = engine.manifest
        let model = deviceModel()
        let device = DeviceInfo(model: model, os: "iOS", osVersion: UIDevice.current.systemVersion, chip: model)
        let manifestData = try Data(contentsOf: folder.appendingPathComponent(Manifest.fileName))
        let doc = try BenchmarkReport.build(device: device, backend: "coreml", computeUnits: computeUnits.rawValue, manifest: manifest,
                                            measured: measured, appVersion: appVersion(), manifestSHA256: sha256Hex(manifestData),
                                            computeUnitReports: computeUnitReport, timestamp: ISO8601DateFormatter().string(from: Date()))
        let docs = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let out = docs.appendingPathComponent(BenchmarkReport.fileName(device: device, config: manifest.config, computeUnits: computeUnits.rawValue))
        try doc.jsonData().write(to: out, options: .atomic)
        return out
    }

    static func appVersion() -> String {
        Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString") as? String ?? "unknown"
    }
}
