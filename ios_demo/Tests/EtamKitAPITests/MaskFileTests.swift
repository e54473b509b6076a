import EtamKit
import Foundation
import XCTest

/// PNG bytes with the chunks MaskFile reads (IHDR, PLTE); the pixels come decoded, as from ImageIO.
func pngBytes(width: Int, height: Int, colorType: Int, bitDepth: Int = 8, palette: [UInt32] = []) -> [UInt8] {
    func be(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 255), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
    func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] { be(body.count) + Array(type.utf8) + body + [0, 0, 0, 0] }
    var out: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
    out += chunk("IHDR", be(width) + be(height) + [UInt8(bitDepth), UInt8(colorType), 0, 0, 0])
    if !palette.isEmpty { out += chunk("PLTE", palette.flatMap { [UInt8($0 >> 16 & 255), UInt8($0 >> 8 & 255), UInt8($0 & 255)] }) }
    out += chunk("IDAT", [0]) + chunk("IEND", [])
    return out
}

/// RGBA pixels, one colour per pixel (alpha 255).
func rgbaPixels(_ colours: [UInt32]) -> [UInt8] {
    colours.flatMap { [UInt8($0 >> 16 & 255), UInt8($0 >> 8 & 255), UInt8($0 & 255), 255] }
}

final class MaskFileTests: XCTestCase {
    let subject = MaskFile.subject(objId: 2, frame: 0)
    // A DAVIS-like palette: 0 black, 1 dark red, 2 dark green, 3 olive, then padding that repeats black.
    let davis: [UInt32] = [0x000000, 0x800000, 0x008000, 0x808000, 0x000000]

    private func message(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return "no error"
        } catch let e as EtamError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    func testPaletteMaskPicksTheValueByIndex() throws {
        // 4x2: object 1 on the left column, object 2 on the right two columns.
        let idx = [1, 0, 2, 2, 1, 0, 2, 2]
        let png = pngBytes(width: 4, height: 2, colorType: 3, palette: davis)
        let mask = try MaskFile.decode(png: png, rgba: rgbaPixels(idx.map { davis[$0] }), name: "00000.png",
                                       frameWidth: 4, frameHeight: 2, maskValue: 2, subject: subject)
        XCTAssertEqual(mask, idx.map { $0 == 2 })
        XCTAssertEqual(try MaskFile.header(png, name: "00000.png", subject: subject).mode, "P")
    }

    func testTheCLIMessages() {
        let idx = [1, 0, 2, 2, 1, 0, 2, 2]
        let png = pngBytes(width: 4, height: 2, colorType: 3, palette: davis)
        let pixels = rgbaPixels(idx.map { davis[$0] })
        let w = "mask prompt for object 2 on frame 0"
        XCTAssertEqual(message { try MaskFile.decode(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, maskValue: 3, subject: self.subject) },
                       "\(w): value 3 does not occur in a.png (it has [1, 2]); set mask_value to one of those")
        // index 4 repeats black (index 0): background, so it does not occur either
        XCTAssertEqual(message { try MaskFile.decode(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, maskValue: 4, subject: self.subject) },
                       "\(w): value 4 does not occur in a.png (it has [1, 2]); set mask_value to one of those")
        XCTAssertEqual(message { try MaskFile.decode(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, maskValue: nil, subject: self.subject) },
                       "\(w): a.png is a palette PNG with several objects [1, 2]; add \"mask_value\" to pick one")
        XCTAssertEqual(message { try MaskFile.decode(png: png, rgba: pixels, name: "a.png", frameWidth: 8, frameHeight: 2, maskValue: 1, subject: self.subject) },
                       "\(w): a.png is 4x2 but the frames are 8x2; give a mask of the frame's size")
        let grey = pngBytes(width: 4, height: 2, colorType: 0)
        let black = rgbaPixels([UInt32](repeating: 0, count: 8))
        XCTAssertEqual(message { try MaskFile.decode(png: grey, rgba: black, name: "g.png", frameWidth: 4, frameHeight: 2, maskValue: 1, subject: self.subject) },
                       "\(w): 'mask_value' needs a palette PNG, g.png is mode L; drop mask_value for a binary mask")
        XCTAssertEqual(message { try MaskFile.decode(png: grey, rgba: black, name: "g.png", frameWidth: 4, frameHeight: 2, maskValue: nil, subject: self.subject) },
                       "\(w): g.png is empty (no pixel > 0); draw the object or use clicks/a box")
        XCTAssertEqual(message { try MaskFile.decode(png: Array("GIF89a".utf8), rgba: [], name: "x.gif", frameWidth: 4, frameHeight: 2, maskValue: nil, subject: self.subject) },
                       "\(w): x.gif is not a readable image (not a PNG); give a PNG mask")
        // the app's own fix for a missing value (the palette index is the object number there)
        XCTAssertEqual(message { try MaskFile.decode(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, maskValue: 3, subject: self.subject,
                                                     valueFix: "prompt object 1 or 2 instead") },
                       "\(w): value 3 does not occur in a.png (it has [1, 2]); prompt object 1 or 2 instead")
    }

    func testBinaryGreyAndRGBMasksAreAnyChannelAboveZero() throws {
        let colours: [UInt32] = [0x000000, 0x010101, 0xFFFFFF, 0x000000, 0x000100, 0x000000]
        for (ct, mode) in [(0, "L"), (2, "RGB"), (6, "RGBA"), (4, "LA")] {
            let png = pngBytes(width: 3, height: 2, colorType: ct)
            XCTAssertEqual(try MaskFile.header(png, name: "m.png", subject: subject).mode, mode)
            let mask = try MaskFile.decode(png: png, rgba: rgbaPixels(colours), name: "m.png", frameWidth: 3, frameHeight: 2,
                                           maskValue: nil, subject: subject)
            XCTAssertEqual(mask, [false, true, true, false, true, false])
        }
        XCTAssertEqual(try MaskFile.header(pngBytes(width: 1, height: 1, colorType: 0, bitDepth: 1), name: "b.png", subject: subject).mode, "1")
    }

    func testTheAppsRuleTakesTheObjectNumberAsPaletteIndex() throws {
        let idx = [1, 0, 2, 2, 1, 0, 2, 2]
        let png = pngBytes(width: 4, height: 2, colorType: 3, palette: davis)
        let pixels = rgbaPixels(idx.map { davis[$0] })
        let two = try MaskFile.decodeForObject(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, objId: 2, frame: 5)
        XCTAssertEqual(two, idx.map { $0 == 2 })
        XCTAssertEqual(message { try MaskFile.decodeForObject(png: png, rgba: pixels, name: "a.png", frameWidth: 4, frameHeight: 2, objId: 3, frame: 5) },
                       "mask prompt for object 3 on frame 5: value 3 does not occur in a.png (it has [1, 2]); prompt one of those objects (this app takes palette index N as object N)")
        // one object in the palette: it is the mask whatever object is prompted
        let single = rgbaPixels([1, 0, 1, 1, 0, 0, 0, 0].map { davis[$0] })
        let one = try MaskFile.decodeForObject(png: png, rgba: single, name: "b.png", frameWidth: 4, frameHeight: 2, objId: 3, frame: 0)
        XCTAssertEqual(one, [true, false, true, true, false, false, false, false])
        XCTAssertEqual(message { try MaskFile.decodeForObject(png: png, rgba: pixels, name: "a.png", frameWidth: 2, frameHeight: 2, objId: 2, frame: 0) },
                       "mask prompt for object 2 on frame 0: a.png is 4x2 but the frames are 2x2; give a mask of the frame's size")
    }

    func testAPaletteWithOneObjectNeedsNoValue() throws {
        let png = pngBytes(width: 2, height: 2, colorType: 3, palette: [0x102030, 0x800000])  // index 0 need not be black
        let mask = try MaskFile.decode(png: png, rgba: rgbaPixels([0x102030, 0x800000, 0x800000, 0x102030]), name: "one.png",
                                       frameWidth: 2, frameHeight: 2, maskValue: nil, subject: subject)
        XCTAssertEqual(mask, [false, true, true, false])
    }

    /// The mask of a file feeds the engine's mask prompt; an export without mask_prompt says to re-export.
    func testEngineTracksFromADecodedMask() async throws {
        let plain = try APIFixtures.manifest()
        XCTAssertNil(plain.maskPrompt)
        var root = try JSONSerialization.jsonObject(with: try APIFixtures.data("manifest.json")) as! [String: Any]
        let trace = try JSONSerialization.jsonObject(with: try APIFixtures.data("trace_mask_prompt.json")) as! [String: Any]
        root["mask_prompt"] = (trace["manifest"] as! [String: Any])["mask_prompt"]
        let m = try Manifest.parse(try JSONSerialization.data(withJSONObject: root))
        XCTAssertEqual(m.maskPrompt?.stride, 4)

        let (w, h) = (128, 96)
        var colours = [UInt32](repeating: 0, count: w * h)
        for y in 20..<70 { for x in 30..<90 { colours[y * w + x] = 0x808000 } }
        let png = pngBytes(width: w, height: h, colorType: 3, palette: davis)
        let mask = try MaskFile.decode(png: png, rgba: rgbaPixels(colours), name: "00000.png", frameWidth: w, frameHeight: h,
                                       maskValue: 3, subject: MaskFile.subject(objId: 1, frame: 0))
        XCTAssertEqual(mask.filter { $0 }.count, 50 * 60)

        let old = TrackingEngine(manifest: plain, runner: MixRunner(cfg: plain.tracker))
        try await old.open(SyntheticFrameSource(numFrames: 3, width: w, height: h))
        do {
            _ = try await old.addMask(frame: 0, objId: 1, mask: mask)
            XCTFail("an export without mask_prompt should be refused")
        } catch let e as EtamError {
            XCTAssertTrue(e.message.hasPrefix("this export has no mask_prompt constants"), e.message)
        }

        let engine = TrackingEngine(manifest: m, runner: MixRunner(cfg: m.tracker))
        try await engine.open(SyntheticFrameSource(numFrames: 3, width: w, height: h))
        let shown = try await engine.addMask(frame: 0, objId: 1, mask: mask)
        XCTAssertEqual(shown.objIds, [1])
        let lr = shown.lowResSize
        // inside the mask the logits are positive, at the corners negative (the mask is the output)
        XCTAssertGreaterThan(shown.lowRes[(lr * 45 / 96) * lr + lr * 60 / 128], 0)
        XCTAssertLessThan(shown.lowRes[0], 0)
        let summary = try await engine.propagate { _ in }
        XCTAssertEqual(summary.start, 0)
        XCTAssertEqual(summary.framesTracked, 3)
    }
}
