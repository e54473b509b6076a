import CoreGraphics
import EtamKit
import Foundation
import SwiftUI

/// The app's state: models (loaded once), the open video or camera, the tracker, per-frame
/// results, and the status line. Every failure becomes `message` (shown in red), never a crash.
@MainActor
final class TrackingSession: ObservableObject {
    static let maxObjects = 4
    static let exportFolderName = "EtamModels"

    enum Mode: String, CaseIterable, Identifiable {
        case positive = "+ click", negative = "− click", box = "Box"
        var id: String { rawValue }
    }

    @Published var status = "loading models ..."
    @Published var isError = false
    @Published var frame: CGImage?
    @Published var overlay: CGImage?
    @Published var frameIndex = 0
    @Published var numFrames = 0
    @Published var currentObject = 1
    @Published var mode: Mode = .positive
    @Published var computeUnits: ComputeUnits = .all
    @Published var busy = false
    @Published var marks: [(CGPoint, Int)] = []

    private var folder: URL?
    private(set) var runner: CoreMLStageRunner?  // shared with the photo screen
    private var video: VideoFrameSource?
    private var camera: CameraFrameSource?
    private var cameraFrame: CGImage?
    private var cameraIndex = 0
    private var cameraTracking = false
    private var needsBegin = true
    private var tracker: Tracker?
    private var inputBuffer: [Float] = []
    private var clicks: [SIMD2<Float>] = []
    private var labels: [Int] = []
    private var box: [Float]?
    /// Per frame: object ids and low-res logits quantized to Int8 (enough to redraw any frame).
    private var results: [Int: ([Int], [Int8])] = [:]

    private func info(_ s: String) {
        status = s
        isError = false
    }

    private func fail(_ error: Error) {
        status = (error as? EtamError)?.message ?? error.localizedDescription
        isError = true
    }

    /// The export folder: bundled as a folder reference named EtamModels, or copied into the
    /// app's Documents/EtamModels with the Files app (UIFileSharingEnabled).
    static func exportFolder() -> URL? {
        if let bundled = Bundle.main.url(forResource: exportFolderName, withExtension: nil) { return bundled }
        let docs = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask).first
        return docs?.appendingPathComponent(exportFolderName)
    }

    func loadModels() async {
        guard let folder = TrackingSession.exportFolder() else { return fail(EtamError.manifest("no Documents folder")) }
        self.folder = folder
        busy = true
        defer { busy = false }
        do {
            info("compiling models for \(computeUnits.rawValue) (first launch takes a while) ...")
            let r = try await CoreMLStageRunner(folder: folder, computeUnits: computeUnits)
            runner = r
            inputBuffer = [Float](repeating: 0, count: 3 * r.manifest.imageSize * r.manifest.imageSize)
            info("\(r.manifest.config) (\(r.manifest.precision), \(r.manifest.weightsDescription)) ready; open a video or the camera")
        } catch {
            runner = nil
            fail(error)
        }
    }

    private func requireRunner() throws -> CoreMLStageRunner {
        guard let r = runner else { throw EtamError.manifest("models are not loaded: \(status)") }
        return r
    }

    private func makeTracker(numFrames: Int, width: Int, height: Int) throws {
        let r = try requireRunner()
        let manifest = r.manifest
        tracker = try Tracker(runner: r, cfg: manifest.tracker, numFrames: numFrames, videoWidth: width, videoHeight: height,
                              maxObjects: TrackingSession.maxObjects) { [unowned self] i in
            let image: CGImage
            if let v = self.video {
                image = try v.frame(i)
            } else if let c = self.cameraFrame {
                image = c
            } else {
                throw EtamError.prompt("no frame available")
            }
            guard let rgb = ImageUtils.rgbBytes(image) else { throw EtamError.prompt("frame \(i) cannot be read") }
            Preprocess.modelInput(rgb, width: image.width, height: image.height, manifest: manifest, into: &self.inputBuffer)
            return self.inputBuffer
        }
        results = [:]
        currentObject = 1
        needsBegin = true
        resetPrompt()
    }

    private func resetPrompt() {
        clicks = []
        labels = []
        box = nil
        marks = []
    }

    // ---- sources ------------------------------------------------------------------
    func openVideo(_ url: URL) async {
        stopCamera()
        do {
            _ = try requireRunner()
            let access = url.startAccessingSecurityScopedResource()
            defer { if access { url.stopAccessingSecurityScopedResource() } }
            let v = try await VideoFrameSource(url: url)
            video = v
            numFrames = v.numFrames
            try makeTracker(numFrames: v.numFrames, width: v.width, height: v.height)
            try show(0)
            info("\(v.numFrames) frames \(v.width)x\(v.height): tap object 1, then Track")
        } catch {
            fail(error)
        }
    }

    func startCamera() {
        do {
            _ = try requireRunner()
            video = nil
            let cam = CameraFrameSource()
            cam.onFrame = { [weak self] image in
                Task { @MainActor in self?.cameraFrame(image) }
            }
            try cam.start()
            camera = cam
            cameraIndex = 0
            cameraTracking = false
            tracker = nil
            info("camera: tap the object to track")
        } catch {
            fail(error)
        }
    }

    func stopCamera() {
        camera?.stop()
        camera = nil
        cameraTracking = false
    }

    private func cameraFrame(_ image: CGImage) {
        guard !busy else { return } // keep only the latest frame while a step runs
        do {
            if tracker == nil || tracker?.videoWidth != image.width || tracker?.videoHeight != image.height {
                try makeTracker(numFrames: Int.max, width: image.width, height: image.height)
            }
            cameraIndex += 1
            cameraFrame = image
            frameIndex = cameraIndex
            frame = image
            guard cameraTracking, let t = tracker, !t.objects.isEmpty else { return }
            if needsBegin {
                try t.beginPropagation(start: cameraIndex)
                needsBegin = false
            }
            render(try t.trackFrame(cameraIndex), width: image.width, height: image.height)
        } catch {
            cameraTracking = false
            fail(error)
        }
    }

    // ---- prompts -------------------------------------------------------------------
    /// `point` in frame pixels (outside the picture: the tracker's check turns it into a message).
    func tap(_ point: CGPoint) {
        clicks.append(SIMD2<Float>(Float(point.x), Float(point.y)))
        labels.append(mode == .negative ? 0 : 1)
        send()
    }

    func drag(from a: CGPoint, to b: CGPoint) {
        box = [Float(min(a.x, b.x)), Float(min(a.y, b.y)), Float(max(a.x, b.x)), Float(max(a.y, b.y))]
        send()
    }

    private func send() {
        do {
            guard let t = tracker else { throw EtamError.prompt("open a video or the camera first") }
            let prompt = Prompt(points: clicks, labels: labels, box: box)
            do {
                try Prompts.validate(frame: frameIndex, prompt: prompt, numFrames: t.numFrames, width: t.videoWidth, height: t.videoHeight)
            } catch {
                if !clicks.isEmpty { clicks.removeLast(); labels.removeLast() }
                box = nil
                throw error
            }
            let low = try t.addPrompt(frame: frameIndex, objId: currentObject, prompt: prompt)
            needsBegin = true
            if camera != nil { cameraTracking = true }
            let ids = t.objIds
            var all = [Float](repeating: -1024, count: ids.count * low.count)
            if let k = ids.firstIndex(of: currentObject) { all.replaceSubrange(k * low.count..<(k + 1) * low.count, with: low) }
            render(FrameResult(frame: frameIndex, objIds: ids, lowRes: all, lowResSize: t.cfg.lowResSize), width: t.videoWidth, height: t.videoHeight)
            marks = zip(clicks, labels).map { (CGPoint(x: CGFloat($0.0.x), y: CGFloat($0.0.y)), $0.1) }
            info("object \(currentObject) on frame \(frameIndex): \(clicks.count) click(s)\(box != nil ? " + box" : "")")
        } catch {
            fail(error)
        }
    }

    func newObject() {
        if let t = tracker, t.objects.count >= TrackingSession.maxObjects {
            return fail(EtamError.prompt("this app tracks at most \(TrackingSession.maxObjects) objects; press Clear to start over"))
        }
        if let t = tracker, t.objects[currentObject] != nil { currentObject += 1 }
        resetPrompt()
        info("now prompting object \(currentObject)")
    }

    func clear() {
        guard let t = tracker else { return }
        do {
            try makeTracker(numFrames: t.numFrames, width: t.videoWidth, height: t.videoHeight)
            cameraTracking = false
            overlay = nil
            info("cleared")
        } catch {
            fail(error)
        }
    }

    // ---- tracking and display -----------------------------------------------------------
    func track() async {
        guard let t = tracker, let v = video else { return fail(EtamError.prompt("open a video first (in camera mode tracking is live)")) }
        busy = true
        defer { busy = false }
        let start = DispatchTime.now().uptimeNanoseconds
        var n = 0
        do {
            try t.propagate { r in
                self.store(r)
                n += 1
                self.frameIndex = r.frame
                self.status = "tracking frame \(r.frame + 1) / \(v.numFrames)"
                return true
            }
            needsBegin = false
            resetPrompt()
            try show(frameIndex)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(max(n, 1))
            info(String(format: "tracked %d frames (%.0f ms/frame); scrub to review, tap to correct", n, ms))
        } catch {
            fail(error)
        }
    }

    private func store(_ r: FrameResult) {
        results[r.frame] = (r.objIds, r.lowRes.map { Int8(max(-127, min(127, $0 * 4))) })
    }

    func show(_ i: Int) throws {
        guard let v = video else { return }
        frameIndex = i
        resetPrompt()
        frame = try v.frame(i)
        if let (ids, q) = results[i], let t = tracker {
            render(FrameResult(frame: i, objIds: ids, lowRes: q.map { Float($0) / 4 }, lowResSize: t.cfg.lowResSize), width: v.width, height: v.height)
        } else {
            overlay = nil
        }
    }

    /// Upsample every object's logits (display size at most 640 px wide), pick the winner per pixel.
    private func render(_ r: FrameResult, width: Int, height: Int) {
        let s = min(1.0, 640.0 / Double(width))
        let dw = max(1, Int(Double(width) * s)), dh = max(1, Int(Double(height) * s))
        let lr = r.lowResSize
        let up = PostProcess.upsampleBilinear(r.lowRes, planes: r.objIds.count, inH: lr, inW: lr, outH: dh, outW: dw)
        overlay = ImageUtils.overlay(labels: PostProcess.labelMap(up, objIds: r.objIds, height: dh, width: dw), width: dw, height: dh)
    }

    func reloadModels() async {
        stopCamera()
        tracker = nil
        await loadModels()
    }

    func benchmark() async {
        guard let r = runner, let folder = folder else { return fail(EtamError.manifest("models are not loaded: \(status)")) }
        stopCamera()
        busy = true
        defer { busy = false }
        do {
            let out = try await BenchmarkRunner.run(folder: folder, runner: r, video: video, frames: 50, warmup: 5) { s in
                Task { @MainActor in self.status = s }
            }
            info("benchmark written to Documents/\(out.lastPathComponent); share it from the Files app")
        } catch {
            fail(error)
        }
    }
}
