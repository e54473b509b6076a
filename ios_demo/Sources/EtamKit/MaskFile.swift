import Foundation

/// What a mask PNG's header says: size, PIL-style mode and (palette PNGs) the palette colours.
public struct PNGHeader: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let colorType: Int
    public let bitDepth: Int
    /// PLTE entries as 0xRRGGBB (palette PNGs only).
    public let palette: [UInt32]

    /// The mode Pillow reports for this PNG (the Python CLI's messages name it).
    public var mode: String {
        switch colorType {
        case 0: return bitDepth == 1 ? "1" : bitDepth == 16 ? "I;16" : "L"
        case 2: return "RGB"
        case 3: return "P"
        case 4: return "LA"
        default: return "RGBA"
        }
    }
}

/// Mask prompts from PNG files, checked before any model work, with the Python CLI's messages
/// (etam_mobile/runtime/mask_files.py). The platform decodes the pixels (ImageIO, BitmapFactory);
/// this reads the PNG header and palette itself, because decoders hand out colours, not palette
/// indices, and a palette mask (a DAVIS annotation) is chosen by index.
public enum MaskFile {
    /// "mask prompt for object N on frame F", the start of every message.
    public static func subject(objId: Int, frame: Int) -> String { "mask prompt for object \(objId) on frame \(frame)" }

    /// IHDR and PLTE of a PNG file; an error naming the fix when the bytes are not a PNG.
    public static func header(_ data: [UInt8], name: String, subject: String) throws -> PNGHeader {
        let bad = EtamError.prompt("\(subject): \(name) is not a readable image (not a PNG); give a PNG mask")
        let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
        guard data.count >= 33, Array(data[0..<8]) == signature else { throw bad }
        func u32(_ i: Int) -> Int { Int(data[i]) << 24 | Int(data[i + 1]) << 16 | Int(data[i + 2]) << 8 | Int(data[i + 3]) }
        var pos = 8
        var ihdr: (Int, Int, Int, Int)?
        var palette: [UInt32] = []
        while pos + 8 <= data.count {
            let length = u32(pos)
            let type = String(decoding: data[(pos + 4)..<(pos + 8)], as: UTF8.self)
            let body = pos + 8
            guard length >= 0, body + length <= data.count else { throw bad }
            if type == "IHDR" {
                guard length >= 13 else { throw bad }
                ihdr = (u32(body), u32(body + 4), Int(data[body + 9]), Int(data[body + 8]))
            } else if type == "PLTE" {
                palette = stride(from: body, to: body + length - 2, by: 3).map {
                    UInt32(data[$0]) << 16 | UInt32(data[$0 + 1]) << 8 | UInt32(data[$0 + 2])
                }
            } else if type == "IDAT" || type == "IEND" {
                break
            }
            pos = body + length + 4  // + CRC
        }
        guard let (w, h, colorType, bitDepth) = ihdr, w > 0, h > 0, [0, 2, 3, 4, 6].contains(colorType) else { throw bad }
        if colorType == 3 && palette.isEmpty { throw bad }
        return PNGHeader(width: w, height: h, colorType: colorType, bitDepth: bitDepth, palette: palette)
    }

    /// The (height x width) mask of a PNG whose pixels the platform decoded to `rgba` (4 bytes per
    /// pixel, not premultiplied, row-major). `maskValue` picks a palette index; `valueFix` is what
    /// a missing value's message tells the user to do (the CLI: set mask_value).
    public static func decode(png: [UInt8], rgba: [UInt8], name: String, frameWidth: Int, frameHeight: Int,
                              maskValue: Int?, subject: String,
                              valueFix: String = "set mask_value to one of those") throws -> [Bool] {
        let h = try header(png, name: name, subject: subject)
        let n = h.width * h.height
        guard rgba.count == 4 * n else {
            throw EtamError.prompt("\(subject): \(name) is not a readable image (decoded to \(rgba.count / 4) pixels for \(h.width)x\(h.height)); give a PNG mask")
        }
        guard h.width == frameWidth, h.height == frameHeight else {
            throw EtamError.prompt("\(subject): \(name) is \(h.width)x\(h.height) but the frames are \(frameWidth)x\(frameHeight); give a mask of the frame's size")
        }
        if maskValue != nil, h.colorType != 3 {
            throw EtamError.prompt("\(subject): 'mask_value' needs a palette PNG, \(name) is mode \(h.mode); drop mask_value for a binary mask")
        }
        if h.colorType == 3 {
            let index = try paletteIndices(h, rgba: rgba, name: name, subject: subject)
            let present = Set(index).filter { $0 != 0 }.sorted()
            if let v = maskValue {
                let mask = index.map { $0 == v }
                // A colour listed twice decodes to its first index; one shared with index 0 is background.
                if !mask.contains(true), v > 0, v < h.palette.count, let first = h.palette.firstIndex(of: h.palette[v]),
                   first != v, first != 0, present.contains(first) {
                    throw EtamError.prompt("\(subject): palette index \(v) of \(name) has the same colour as index \(first), so the decoded pixels cannot tell them apart; give a binary mask of the object")
                }
                guard mask.contains(true) else {
                    let have = present.isEmpty ? "only 0" : "[" + present.map(String.init).joined(separator: ", ") + "]"
                    throw EtamError.prompt("\(subject): value \(v) does not occur in \(name) (it has \(have)); \(valueFix)")
                }
                return mask
            }
            if present.count > 1 {
                let list = "[" + present.map(String.init).joined(separator: ", ") + "]"
                throw EtamError.prompt("\(subject): \(name) is a palette PNG with several objects \(list); add \"mask_value\" to pick one")
            }
            return try nonEmpty(index.map { $0 > 0 }, name: name, subject: subject)
        }
        // Grey, grey+alpha, RGB, RGBA: any colour channel > 0 (the CLI: max over R, G, B; grey is R=G=B).
        let mask = (0..<n).map { i in rgba[4 * i] > 0 || rgba[4 * i + 1] > 0 || rgba[4 * i + 2] > 0 }
        return try nonEmpty(mask, name: name, subject: subject)
    }

    /// What the apps say when the prompted object's number is not in a palette mask.
    public static let appValueFix = "prompt one of those objects (this app takes palette index N as object N)"

    /// The apps' rule (no mask_value field there): a palette PNG with several objects gives the
    /// prompted object's number as its index (DAVIS annotations number objects so); any other PNG
    /// is read as the CLI reads a mask without mask_value.
    public static func decodeForObject(png: [UInt8], rgba: [UInt8], name: String, frameWidth: Int, frameHeight: Int,
                                       objId: Int, frame: Int) throws -> [Bool] {
        let who = subject(objId: objId, frame: frame)
        let h = try header(png, name: name, subject: who)
        var value: Int?
        if h.colorType == 3, rgba.count == 4 * h.width * h.height, h.width == frameWidth, h.height == frameHeight {
            let present = Set(try paletteIndices(h, rgba: rgba, name: name, subject: who)).subtracting([0])
            if present.count > 1 { value = objId }
        }
        return try decode(png: png, rgba: rgba, name: name, frameWidth: frameWidth, frameHeight: frameHeight,
                          maskValue: value, subject: who, valueFix: appValueFix)
    }

    private static func nonEmpty(_ mask: [Bool], name: String, subject: String) throws -> [Bool] {
        guard mask.contains(true) else {
            throw EtamError.prompt("\(subject): \(name) is empty (no pixel > 0); draw the object or use clicks/a box")
        }
        return mask
    }

    /// Each pixel's palette index, from its decoded colour (the first index with that colour).
    private static func paletteIndices(_ h: PNGHeader, rgba: [UInt8], name: String, subject: String) throws -> [Int] {
        var lookup: [UInt32: Int] = [:]
        for (k, c) in h.palette.enumerated() where lookup[c] == nil { lookup[c] = k }
        var out = [Int](repeating: 0, count: h.width * h.height)
        for i in out.indices {
            let c = UInt32(rgba[4 * i]) << 16 | UInt32(rgba[4 * i + 1]) << 8 | UInt32(rgba[4 * i + 2])
            guard let k = lookup[c] else {
                throw EtamError.prompt("\(subject): \(name) has pixels whose colour is not in its palette (transparent palette entries?); save the mask without transparency")
            }
            out[i] = k
        }
        return out
    }
}
