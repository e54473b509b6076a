import CoreGraphics
import EtamKit
import Foundation
import ImageIO

/// CGImage <-> packed RGB bytes, and object-id maps -> a coloured overlay image.
enum ImageUtils {
    static func rgbBytes(_ image: CGImage) -> [UInt8]? {
        let w = image.width, h = image.height
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let ok: Bool = rgba.withUnsafeMutableBytes { buf in
            guard let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                      space: CGColorSpaceCreateDeviceRGB(),
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard ok else { return nil }
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        for i in 0..<(w * h) {
            rgb[3 * i] = rgba[4 * i]
            rgb[3 * i + 1] = rgba[4 * i + 1]
            rgb[3 * i + 2] = rgba[4 * i + 2]
        }
        return rgb
    }

    /// A PNG file's pixels as RGBA bytes (alpha 255) at its own size, for EtamKit's MaskFile;
    /// drawn in the image's own RGB space so palette colours come out as written. nil when
    /// ImageIO cannot decode the file.
    static func rgbaPixels(_ data: Data) -> [UInt8]? {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil),
              let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else { return nil }
        let w = image.width, h = image.height
        let space = image.colorSpace.flatMap { $0.model == .indexed ? $0.baseColorSpace : ($0.model == .rgb ? $0 : nil) }
            ?? CGColorSpaceCreateDeviceRGB()
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let ok: Bool = rgba.withUnsafeMutableBytes { buf in
            guard let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                      space: space, bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard ok else { return nil }
        for i in 0..<(w * h) { rgba[4 * i + 3] = 255 }
        return rgba
    }

    /// Packed RGB -> CGImage for display.
    static func cgImage(_ f: RGBFrame) -> CGImage? {
        var rgba = [UInt8](repeating: 255, count: f.width * f.height * 4)
        for i in 0..<(f.width * f.height) {
            rgba[4 * i] = f.rgb[3 * i]
            rgba[4 * i + 1] = f.rgb[3 * i + 1]
            rgba[4 * i + 2] = f.rgb[3 * i + 2]
        }
        guard let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: f.width, height: f.height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: f.width * 4,
                       space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: true, intent: .defaultIntent)
    }

    static let palette: [(UInt8, UInt8, UInt8)] = [(230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49),
                                                   (145, 30, 180), (66, 212, 244), (240, 50, 230), (191, 239, 69)]

    static func colour(_ objId: Int) -> (UInt8, UInt8, UInt8) { palette[(objId - 1 + palette.count) % palette.count] }

    /// Object-id map (0 = background) -> premultiplied RGBA overlay.
    static func overlay(labels: [Int], width: Int, height: Int, alpha: UInt8 = 140) -> CGImage? {
        var px = [UInt8](repeating: 0, count: width * height * 4)
        let a = Float(alpha) / 255
        for i in 0..<(width * height) where labels[i] != 0 {
            let c = colour(labels[i])
            px[4 * i] = UInt8(Float(c.0) * a)
            px[4 * i + 1] = UInt8(Float(c.1) * a)
            px[4 * i + 2] = UInt8(Float(c.2) * a)
            px[4 * i + 3] = alpha
        }
        guard let provider = CGDataProvider(data: Data(px) as CFData) else { return nil }
        return CGImage(width: width, height: height, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: width * 4,
                       space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: true, intent: .defaultIntent)
    }
}
