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
        expectError(sample.replacingOccurrences(of: "\"format_version\": 1", with: "\"format_version\": 2"), ["format_version 2", "reads 1", "re-export"])
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
