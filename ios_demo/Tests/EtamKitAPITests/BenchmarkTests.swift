import EtamKit
import Foundation
import XCTest

/// Benchmark maths and the device-results JSON the apps write.
final class BenchmarkTests: XCTestCase {
    func testMedianPercentileAndTrimmedMean() {
        XCTAssertEqual(BenchmarkStats.median([5, 1, 3, 2, 100]), 3)
        XCTAssertEqual(BenchmarkStats.median([4, 1, 3, 2]), 2.5)
        XCTAssertEqual(BenchmarkStats.percentile(Array(1...10).map(Double.init), 90)!, 9.1, accuracy: 1e-12)
        // scipy.stats.trim_mean(x, 0.1): one value cut from each end of ten.
        XCTAssertEqual(BenchmarkStats.trimmedMean([1, 2, 3, 4, 5, 6, 7, 8, 9, 1000]), 5.5)
        XCTAssertEqual(BenchmarkStats.trimmedMean([2, 4]), 3, "fewer than 10 samples: nothing cut")
        XCTAssertNil(BenchmarkStats.median([]))
        XCTAssertNil(BenchmarkStats.trimmedMean([]))
    }

    func testBenchmarkRunOnTheEngineExcludesWarmUp() async throws {
        let m = try APIFixtures.manifest()
        let engine = TrackingEngine(manifest: m, runner: MixRunner(cfg: m.tracker), modelLoadMs: 42, stageLoadMs: ["image_encoder": 40])
        let measured = try await engine.benchmark(frames: 6, warmup: 2, sampleMemoryMB: { 100 })
        XCTAssertEqual(measured.frameTimes.count, 6)
        XCTAssertEqual(measured.stageTimes["image_encoder"]?.count, 6, "warm-up calls are not counted")
        XCTAssertEqual(measured.stageTimes["memory_attention"]?.count, 6)
        XCTAssertEqual(measured.modelLoadMs, 42)
        XCTAssertEqual(measured.peakMemoryMB, 100)
        do {
            _ = try await engine.benchmark(frames: 0, warmup: 2)
            XCTFail("0 timed frames must be refused")
        } catch is EtamError {}
    }

    func testDeviceResultJSON() throws {
        let m = try APIFixtures.manifest()
        let measured = BenchmarkMeasurements(
            stageTimes: ["image_encoder": [10, 12, 11, 30], "memory_attention": [5, 5, 6, 5], "mask_decoder": [1, 1, 1, 1],
                         "memory_encoder": [2, 2, 2, 3]],
            frameTimes: [20, 21, 22, 60], warmupFrames: 5, objects: 1, modelLoadMs: 1234.5678, stageLoadMs: ["image_encoder": 800],
            peakMemoryMB: 321.5, thermalState: "nominal", cpuGovernor: nil)
        let device = DeviceInfo(model: "iPhone16,2", os: "iOS", osVersion: "18.1", chip: "iPhone16,2")
        let doc = try BenchmarkReport.build(device: device, backend: "coreml", computeUnits: "CPU_AND_NE", manifest: m, measured: measured,
                                            appVersion: "0.1.0", manifestSHA256: String(repeating: "ab", count: 32),
                                            computeUnitReports: ["image_encoder": ["source": .string("MLComputePlan"), "ops": .object(["cpu": .number(3)])]],
                                            timestamp: "2026-01-01T00:00:00Z")
        let data = try doc.jsonData()
        let root = try JSONObject.parse(data, what: "result")
        XCTAssertEqual(try root.string("schema"), "etam-device-bench")
        XCTAssertEqual(try root.int("version"), 1)
        XCTAssertEqual(try root.int("frames"), 4)
        XCTAssertEqual(try root.int("warmup_frames"), 5)
        XCTAssertEqual(try root.double("model_load_ms"), 1234.568)
        XCTAssertEqual(try root.obj("device").string("os_version"), "18.1")
        XCTAssertEqual(try root.obj("frame_ms").double("median"), 21.5)
        XCTAssertEqual(try root.obj("frame_ms").double("trimmed_mean"), 30.75)
        let enc = try root.obj("stages").obj("image_encoder")
        XCTAssertEqual(try enc.double("median_ms"), 11.5)
        XCTAssertEqual(try enc.double("p90_ms"), 24.6)
        XCTAssertEqual(try enc.double("load_ms"), 800)
        XCTAssertEqual(try enc.obj("compute_unit_report").string("source"), "MLComputePlan")
        XCTAssertFalse(root.has("cpu_governor"))
        XCTAssertEqual(BenchmarkReport.fileName(device: device, config: m.config, computeUnits: "CPU_AND_NE"),
                       "device_results_iPhone16_2_test_tiny_CPU_AND_NE.json")
        XCTAssertEqual(try JSONDecoder().decode(DeviceBenchmarkResult.self, from: data), doc)
        // tests/test_native_apps.py validates this file with benchmarks/merge_device_results.py.
        if let out = ProcessInfo.processInfo.environment["ETAM_DEVICE_RESULT_OUT"] {
            try data.write(to: URL(fileURLWithPath: out))
        }
    }
}
