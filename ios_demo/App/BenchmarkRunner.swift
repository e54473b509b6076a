import CoreGraphics
import EtamKit
import Foundation
import UIKit

/// Benchmark mode: one object clicked at the centre of frame 0, then `frames` tracked frames
/// after `warmup` untimed ones; per-stage and per-frame timings, the MLComputePlan report where
/// the OS offers one, written as the device-results JSON (benchmarks/ reads it).
enum BenchmarkRunner {
    static func deviceModel() -> String {
        var info = utsname()
        uname(&info)
        let machine = withUnsafeBytes(of: &info.machine) { buf in
            String(decoding: buf.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        return machine
    }

    static func run(folder: URL, runner: CoreMLStageRunner, video: VideoFrameSource?, frames: Int, warmup: Int,
                    progress: @escaping (String) -> Void) async throws -> URL {
        let manifest = runner.manifest
        let w = video?.width ?? 640, h = video?.height ?? 480
        let total = min(warmup + frames + 1, video?.numFrames ?? Int.max)
        guard total > warmup + 1 else { throw EtamError.prompt("the video is too short for the benchmark (needs more than \(warmup + 1) frames)") }
        let timed = TimedStageRunner(runner)
        var input = [Float](repeating: 0, count: 3 * manifest.imageSize * manifest.imageSize)
        let tracker = try Tracker(runner: timed, cfg: manifest.tracker, numFrames: total, videoWidth: w, videoHeight: h, maxObjects: 1) { i in
            let rgb: [UInt8]
            if let v = video, let bytes = ImageUtils.rgbBytes(try v.frame(i)) {
                rgb = bytes
            } else {
                rgb = syntheticFrame(i, w, h)
            }
            Preprocess.modelInput(rgb, width: w, height: h, manifest: manifest, into: &input)
            return input
        }
        try tracker.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(Float(w) / 2, Float(h) / 2)], labels: [1]))
        let start = try tracker.beginPropagation()
        var frameTimes: [Double] = []
        for i in (start + 1)..<total {
            if i == start + 1 + warmup { timed.clear() }
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try tracker.trackFrame(i)
            if i >= start + 1 + warmup { frameTimes.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6) }
            progress("benchmark: frame \(i) / \(total - 1)")
        }
        let report = await runner.computeUnitReport()
        let device = DeviceInfo(model: deviceModel(), os: "iOS", osVersion: UIDevice.current.systemVersion, chip: deviceModel())
        let manifestData = try Data(contentsOf: folder.appendingPathComponent(Manifest.fileName))
        let doc = BenchmarkReport.build(device: device, backend: "coreml", computeUnits: runner.computeUnits.rawValue, manifest: manifest,
                                        stageTimes: timed.times, frameTimes: frameTimes, appVersion: appVersion(),
                                        manifestSHA256: sha256Hex(manifestData), computeUnitReports: report)
        let docs = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let out = docs.appendingPathComponent("device_results_\(deviceModel())_\(manifest.config)_\(runner.computeUnits.rawValue).json")
        try BenchmarkReport.jsonData(doc).write(to: out)
        return out
    }

    static func appVersion() -> String {
        Bundle.main.object(forInfoDictionaryKey: "CFBundleShortVersionString") as? String ?? "unknown"
    }

    static func syntheticFrame(_ i: Int, _ w: Int, _ h: Int) -> [UInt8] {
        var rgb = [UInt8](repeating: 60, count: w * h * 3)
        let x0 = (40 + 6 * i) % max(1, w - 80), y0 = max(0, h / 2 - 40)
        for y in y0..<min(h, y0 + 80) {
            for x in x0..<min(w, x0 + 80) {
                rgb[(y * w + x) * 3] = 230
            }
        }
        return rgb
    }
}
