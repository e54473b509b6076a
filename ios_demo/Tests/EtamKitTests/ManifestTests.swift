import XCTest
@testable import EtamKit

final class ManifestTests: XCTestCase {
    private func expectError(_ text: String, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Manifest.parse(Data(text.utf8)), file: file, line: line) { error in
            let msg = (error as? EtamError)?.message ?? "\(error)"
            for p in parts { XCTAssertTrue(msg.contains(p), "'\(msg)' lacks '\(p)'", file: file, line: line) }
        }
    }

    func testReadsTheSampleManifest() throws {
        let m = try Manifest.parse(try Fixtures.data("manifest.json"))
        let t = m.tracker
        XCTAssertEqual(m.config, "test_tiny")
        XCTAssertEqual(m.imageSize, 128)
        XCTAssertEqual(t.points, 8)
        XCTAssertEqual(t.condFrames, 2)
        XCTAssertEqual(t.memorySlots, 8)
        XCTAssertEqual(t.ptrSlots, 17)
        XCTAssertEqual(t.featSize, 8)
        XCTAssertEqual(t.lowResSize, 32)
        XCTAssertEqual(t.numMaskmem, 7)
        XCTAssertEqual(t.maxObjPtrs, 16)
        XCTAssertEqual(t.stabilityThresh, 0.98)
        XCTAssertEqual(t.noObjScore, -1024)
        XCTAssertEqual(m.mean[0], 0.485)
        XCTAssertEqual(m.completeTargets, ["coreml", "executorch"])
        XCTAssertEqual(try m.artifact("mask_decoder", target: "coreml"), "mask_decoder.mlpackage")
        XCTAssertEqual(try m.stage("memory_attention").input("mem_feats").shape, [8, 64, 8, 8])
        XCTAssertTrue(m.weightsDescription.contains("SYNTHETIC"))
    }

    func testWrongFormatVersionIsAClearError() throws {
        let sample = try Fixtures.text("manifest.json")
        expectError(sample.replacingOccurrences(of: "\"format_version\": 2", with: "\"format_version\": 3"), ["format_version 3", "reads 1 and 2", "re-export"])
    }

    func testBrokenFilesAreClearErrors() throws {
        let sample = try Fixtures.text("manifest.json")
        expectError(String(sample.prefix(sample.count / 2)), ["not valid JSON"])
        expectError(sample.replacingOccurrences(of: "\"memory_encoder\": {", with: "\"memory_encoder_old\": {"), ["no stage 'memory_encoder'"])
        expectError(sample.replacingOccurrences(of: "\"cond_frames\": 2", with: "\"cond_frames\": 3"), ["memory_slots"])
        expectError(sample.replacingOccurrences(of: "\"name\": \"mem_tpos\"", with: "\"name\": \"tpos\""), ["memory_attention", "expects"])
    }

    func testMissingArtifactOrFolder() throws {
        let m = try Manifest.parse(try Fixtures.data("manifest.json"))
        XCTAssertThrowsError(try m.artifact("image_encoder", target: "onnx")) { e in
            XCTAssertTrue((e as? EtamError)?.message.contains("--targets onnx") ?? false)
        }
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("etam-no-such-folder-\(UUID().uuidString)")
        XCTAssertThrowsError(try Manifest.load(folder: missing)) { e in
            XCTAssertTrue((e as? EtamError)?.message.contains("does not exist") ?? false)
        }
    }
}

/// Artifacts from an unsupported exporter version are refused with the fix; JSON numbers and
/// booleans are kept apart on every platform.
final class ProducerAndJSONTests: XCTestCase {
    private func message(_ block: () throws -> Void) -> String {
        do {
            try block()
            return ""
        } catch {
            return (error as? EtamError)?.message ?? "\(error)"
        }
    }

    func testUnsupportedCoreMLToolsIsRefusedWithTheFix() throws {
        let sample = try Fixtures.text("manifest.json")
        let check = { (m: Manifest) in
            try m.requireProducer("coremltools", supported: Manifest.supportedCoreMLTools, install: "9.0", runtime: "this iOS app")
        }
        XCTAssertEqual(message { try check(try Manifest.parse(Data(sample.utf8))) }, "")
        let old = sample.replacingOccurrences(of: "\"coremltools\": \"9.0\"", with: "\"coremltools\": \"7.2\"")
        let msg = message { try check(try Manifest.parse(Data(old.utf8))) }
        XCTAssertTrue(msg.contains("coremltools 7.2") && msg.contains("pip install coremltools==9.0"), msg)
        // 90.0 is not 9.x.
        let far = sample.replacingOccurrences(of: "\"coremltools\": \"9.0\"", with: "\"coremltools\": \"90.0\"")
        XCTAssertTrue(message { try check(try Manifest.parse(Data(far.utf8))) }.contains("90.0"))
        let none = sample.replacingOccurrences(of: "\"coremltools\": \"9.0\"", with: "\"onnx\": \"1.0\"")
        let msg2 = message { try check(try Manifest.parse(Data(none.utf8))) }
        XCTAssertTrue(msg2.contains("does not record") && msg2.contains("re-export"), msg2)
    }

    func testBooleansAndNumbersAreDistinct() throws {
        let o = try JSONObject.parse(Data(#"{"t": true, "one": 1, "half": 0.5, "n": null, "s": "x"}"#.utf8), what: "doc")
        XCTAssertEqual(try o.bool("t"), true)
        XCTAssertThrowsError(try o.bool("one"))
        XCTAssertThrowsError(try o.int("t"))
        XCTAssertThrowsError(try o.int("half"))
        XCTAssertEqual(try o.int("one"), 1)
        XCTAssertFalse(o.has("n"))
        XCTAssertThrowsError(try o.double("s"))
        XCTAssertThrowsError(try JSONObject.parse(Data("[1]".utf8), what: "doc"))
        let sample = try Fixtures.text("manifest.json")
        let boolVersion = sample.replacingOccurrences(of: "\"format_version\": 2", with: "\"format_version\": true")
        XCTAssertThrowsError(try Manifest.parse(Data(boolVersion.utf8))) { e in
            XCTAssertTrue((e as? EtamError)?.message.contains("format_version true") ?? false, "\(e)")
        }
    }
}
