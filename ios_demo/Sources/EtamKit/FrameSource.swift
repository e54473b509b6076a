import Foundation

/// One decoded frame as packed RGB bytes, with the size it was actually decoded at.
public struct RGBFrame: Equatable, Sendable {
    public let rgb: [UInt8]
    public let width: Int
    public let height: Int

    /// Throws when the byte count does not match the size (a decoder or conversion bug).
    public init(rgb: [UInt8], width: Int, height: Int) throws {
        guard width > 0, height > 0, rgb.count == width * height * 3 else {
            throw EtamError.prompt("a decoded frame has \(rgb.count) bytes for \(width)x\(height) pixels; choose another video")
        }
        self.rgb = rgb
        self.width = width
        self.height = height
    }
}

/// Frames for the tracker. `width`/`height` are the size prompts are given in; each decoded
/// frame carries its own size, and preprocessing uses that one (a rotated or odd-sized track
/// may decode a pixel off the nominal size).
public protocol FrameSource: AnyObject {
    var numFrames: Int { get }
    var width: Int { get }
    var height: Int { get }
    func frame(_ index: Int) throws -> RGBFrame
}

/// A moving red square on grey: the benchmark's input when no video is open, and test input.
public final class SyntheticFrameSource: FrameSource {
    public let numFrames: Int
    public let width: Int
    public let height: Int

    public init(numFrames: Int, width: Int = 640, height: Int = 480) {
        self.numFrames = numFrames
        self.width = width
        self.height = height
    }

    public func frame(_ index: Int) throws -> RGBFrame {
        var rgb = [UInt8](repeating: 60, count: width * height * 3)
        let side = max(1, min(width, height) / 6)
        let x0 = (side / 2 + 6 * index) % max(1, width - side), y0 = max(0, height / 2 - side / 2)
        for y in y0..<min(height, y0 + side) {
            for x in x0..<min(width, x0 + side) { rgb[(y * width + x) * 3] = 230 }
        }
        return try RGBFrame(rgb: rgb, width: width, height: height)
    }
}

/// The latest camera frame, replaced by each step (a live source has no random access).
public final class LiveFrameSource: FrameSource {
    public let numFrames = Int.max
    public private(set) var width: Int
    public private(set) var height: Int
    public private(set) var index = -1
    private var latest: RGBFrame?

    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }

    /// Make `f` the current frame; returns its index.
    @discardableResult
    public func push(_ f: RGBFrame) -> Int {
        latest = f
        width = f.width
        height = f.height
        index += 1
        return index
    }

    public func frame(_ index: Int) throws -> RGBFrame {
        guard index == self.index, let f = latest else {
            throw EtamError.prompt("camera frame \(index) is gone (the live view only keeps the latest frame); tap again")
        }
        return f
    }
}

/// Admits one step at a time and drops what arrives meanwhile: the camera callback calls
/// `tryEnter()` and skips the frame when a step is still running, so frames never queue up.
/// Called from any thread.
public final class StepGate: @unchecked Sendable {
    private let lock = NSLock()
    private var running = false
    private var droppedCount = 0
    private var admittedCount = 0

    public init() {}

    /// true: the caller owns the step and must call `leave()`; false: the frame is dropped.
    public func tryEnter() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if running {
            droppedCount += 1
            return false
        }
        running = true
        admittedCount += 1
        return true
    }

    public func leave() {
        lock.lock()
        running = false
        lock.unlock()
    }

    /// (admitted, dropped) so far.
    public var counts: (admitted: Int, dropped: Int) {
        lock.lock()
        defer { lock.unlock() }
        return (admittedCount, droppedCount)
    }
}
