import Foundation

/// Clicks (frame pixels; label 1 positive, 0 negative) and/or a box [x0, y0, x1, y1] for one object.
public struct Prompt: Equatable, Sendable {
    public var points: [SIMD2<Float>]
    public var labels: [Int]
    public var box: [Float]?

    public init(points: [SIMD2<Float>] = [], labels: [Int] = [], box: [Float]? = nil) {
        self.points = points
        self.labels = labels
        self.box = box
    }

    public var isEmpty: Bool { points.isEmpty && box == nil }
}

/// Padded decoder inputs: points (capacity x 2, model pixels), labels (capacity), real point count.
public struct PromptTensors: Equatable, Sendable {
    public let points: [Float]
    public let labels: [Int32]
    public let numPoints: Int

    public init(points: [Float], labels: [Int32], numPoints: Int) {
        self.points = points
        self.labels = labels
        self.numPoints = numPoints
    }
}

public enum Prompts {
    public static let notAPoint: Int32 = -1
    public static let empty: Int32 = -2

    /// Upstream's token order: box corners (labels 2, 3), clicks, then not-a-point token(s)
    /// (one after a prompt, two when tracking), then EMPTY slots. Coordinates (x / W) * S in Float.
    public static func build(_ prompt: Prompt?, videoWidth: Int, videoHeight: Int, imageSize: Int, capacity: Int) throws -> PromptTensors {
        var xs: [Float] = [], ys: [Float] = [], labs: [Int32] = []
        if let p = prompt {
            if let b = p.box {
                xs += [b[0], b[2]]
                ys += [b[1], b[3]]
                labs += [2, 3]
            }
            for (i, pt) in p.points.enumerated() {
                xs.append(pt.x)
                ys.append(pt.y)
                labs.append(Int32(p.labels[i]))
            }
        }
        let num = labs.count
        let tokens = num + (num > 0 ? 1 : 2)
        if tokens > capacity {
            throw EtamError.prompt("this prompt has \(num) points (a box counts 2) but the exported model takes at most \(capacity - 1); remove points or re-export with a larger point capacity")
        }
        var pts = [Float](repeating: 0, count: capacity * 2)
        var out = [Int32](repeating: empty, count: capacity)
        let w = Float(videoWidth), h = Float(videoHeight), s = Float(imageSize)
        for i in 0..<num {
            pts[2 * i] = (xs[i] / w) * s
            pts[2 * i + 1] = (ys[i] / h) * s
            out[i] = labs[i]
        }
        for i in num..<tokens { out[i] = notAPoint }
        return PromptTensors(points: pts, labels: out, numPoints: num)
    }

    /// The same checks as the Python tracker, with messages meant for the app's UI.
    public static func validate(frame: Int, prompt: Prompt, numFrames: Int, width: Int, height: Int) throws {
        if frame < 0 || frame >= numFrames { throw EtamError.prompt("frame \(frame) is outside the video (frames 0..\(numFrames - 1))") }
        if prompt.isEmpty { throw EtamError.prompt("tap a point or drag a box first") }
        if prompt.points.count != prompt.labels.count { throw EtamError.prompt("points and labels must have the same length") }
        let W = Float(width), H = Float(height)
        for (i, p) in prompt.points.enumerated() {
            let lab = prompt.labels[i]
            if lab != 0 && lab != 1 { throw EtamError.prompt("label \(lab) must be 1 (positive) or 0 (negative)") }
            if !(p.x >= 0 && p.x <= W && p.y >= 0 && p.y <= H) {
                throw EtamError.prompt("the point (\(Int(p.x)), \(Int(p.y))) is outside the \(width)x\(height) frame; tap inside the picture")
            }
        }
        if let b = prompt.box {
            if b.count != 4 { throw EtamError.prompt("a box needs 4 numbers") }
            if b[2] < b[0] || b[3] < b[1] { throw EtamError.prompt("a box needs x0 <= x1 and y0 <= y1") }
            if !(b[0] >= 0 && b[2] <= W && b[1] >= 0 && b[3] <= H) {
                throw EtamError.prompt("the box is outside the \(width)x\(height) frame; drag inside the picture")
            }
        }
    }
}
