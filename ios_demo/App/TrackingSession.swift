import CoreGraphics
import EtamCoreML
import EtamKit
import Foundation
import SwiftUI

/// The app's state on the main actor: status, the displayed frame and overlay, per-frame
/// results. Models, tracker and frame sources live in a TrackingEngine actor, so no model call
/// runs on the main actor; results come back through @Sendable callbacks that hop here.
@MainActor
final class TrackingSession: ObservableObject {
    static let maxObjects = 4

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

    /// The app's one model store (the photo tab uses the same models and engine).
    let store: ModelStore
    private var engine: TrackingEngine? { store.models?.engine }
    private var lowResSize = 0
    private var video: (width: Int, height: Int)?
    private var camera: CameraFrameSource?
    private let gate = StepGate()
    private var work: Task<Void, Never>?
    private var objectsWithPrompts = Set<Int>()
    private var clicks: [SIMD2<Float>] = []
    private var labels: [Int] = []
    private var box: [Float]?
    /// Per frame: object ids and low-res logits quantized to Int8 (enough to redraw any frame).
    private var results: [Int: ([Int], [Int8])] = [:]

    init(store: ModelStore) {
        self.store = store
    }

    private func info(_ s: String) {
        status = s
        isError = false
    }

    func fail(_ error: Error) {
        status = (error as? EtamError)?.message ?? error.localizedDescription
        isError = true
    }

    func loadModels() async {
        busy = true
        defer { busy = false }
        do {
            info("compiling models for \(computeUnits.rawValue) (first launch takes a while) ...")
            let m = try await store.load(computeUnits)
            lowResSize = m.manifest.tracker.lowResSize
            info(String(format: "%@ (%@, %@) loaded in %.0f ms; open a video or the camera", m.manifest.config, m.manifest.precision,
                        m.manifest.weightsDescription, m.loadMs))
        } catch {
            fail(error)
        }
    }

    private func requireEngine() throws -> TrackingEngine {
        try store.require(status).engine
    }

    private func resetPrompt() {
        clicks = []
        labels = []
        box = nil
        marks = []
    }

    private func resetResults() {
        results = [:]
        objectsWithPrompts = []
        currentObject = 1
        overlay = nil
        resetPrompt()
    }

    // ---- sources ------------------------------------------------------------------
    func openVideo(_ url: URL) async {
        stopCamera()
        do {
            let e = try requireEngine()
            let v = try await VideoFrameSource(url: url)  // keeps the security-scoped access while it lives
            let (n, w, h) = (v.numFrames, v.width, v.height)
            try await e.open(v, maxObjects: TrackingSession.maxObjects)
            video = (w, h)
            numFrames = n
            resetResults()
            try await show(0)
            info("\(n) frames \(w)x\(h): tap object 1, then Track")
        } catch {
            fail(error)
        }
    }

    func startCamera() {
        do {
            let e = try requireEngine()
            video = nil
            numFrames = 0
            resetResults()
            let gate = self.gate
            let cam = CameraFrameSource(gate: gate) { [weak self] f in
                Task {
                    defer { gate.leave() }
                    do {
                        let step = try await e.cameraStep(f)
                        await self?.showCamera(f, index: step.index, result: step.result)
                    } catch {
                        await self?.fail(error)
                    }
                }
            }
            try cam.start()
            camera = cam
            info("camera: tap the object to track")
        } catch {
            fail(error)
        }
    }

    func stopCamera() {
        guard let cam = camera else { return }
        cam.stop()
        camera = nil
        if let e = engine { Task { await e.stopCamera() } }
    }

    private func showCamera(_ f: RGBFrame, index: Int, result: FrameResult?) {
        guard camera != nil else { return }
        frameIndex = index
        frame = ImageUtils.cgImage(f)
        if let r = result { render(r, width: f.width, height: f.height) } else if objectsWithPrompts.isEmpty { overlay = nil }
    }

    // ---- prompts -------------------------------------------------------------------
    /// `point` in frame pixels (outside the picture: the tracker's check turns it into a message).
    func tap(_ point: CGPoint) {
        clicks.append(SIMD2<Float>(Float(point.x), Float(point.y)))
        labels.append(mode == .negative ? 0 : 1)
        Task { await send() }
    }

    func drag(from a: CGPoint, to b: CGPoint) {
        box = [Float(min(a.x, b.x)), Float(min(a.y, b.y)), Float(max(a.x, b.x)), Float(max(a.y, b.y))]
        Task { await send() }
    }

    /// Prompt state (clicks, labels, box) is only touched here, on the main actor.
    private func send() async {
        guard !busy else { return }
        let prompt = Prompt(points: clicks, labels: labels, box: box)
        let (frame, obj) = (frameIndex, currentObject)
        busy = true
        defer { busy = false }
        do {
            let e = try requireEngine()
            let shown = try await e.addPrompt(frame: frame, objId: obj, prompt: prompt)
            objectsWithPrompts.insert(obj)
            let size = video ?? (self.frame.map { ($0.width, $0.height) } ?? (1, 1))
            render(shown, width: size.0, height: size.1)
            marks = zip(clicks, labels).map { (CGPoint(x: CGFloat($0.0.x), y: CGFloat($0.0.y)), $0.1) }
            info("object \(obj) on frame \(frame): \(clicks.count) click(s)\(box != nil ? " + box" : "")")
        } catch {
            if !clicks.isEmpty { clicks.removeLast(); labels.removeLast() }
            box = nil
            fail(error)
        }
    }

    /// A mask PNG as the current object's prompt on the shown video frame (upstream's
    /// add_new_mask): binary / grey / RGB (any pixel > 0), or a palette PNG (a DAVIS annotation),
    /// where the palette index is the object number when it holds several objects. Checked by
    /// EtamKit's MaskFile with the CLI's messages; the frame becomes a conditioning frame.
    func importMask(_ url: URL) async {
        guard !busy else { return }
        guard let v = video else { return fail(EtamError.prompt("open a video first: a mask prompt is for one frame of a video")) }
        let (frame, obj) = (frameIndex, currentObject)
        let name = url.lastPathComponent
        busy = true
        defer { busy = false }
        do {
            let e = try requireEngine()
            let access = url.startAccessingSecurityScopedResource()
            defer { if access { url.stopAccessingSecurityScopedResource() } }
            guard let data = try? Data(contentsOf: url) else {
                throw EtamError.prompt("\(MaskFile.subject(objId: obj, frame: frame)): mask file \(name) cannot be read; pick it again from Files")
            }
            let rgba = ImageUtils.rgbaPixels(data) ?? []  // MaskFile names an undecodable file
            let mask = try MaskFile.decodeForObject(png: [UInt8](data), rgba: rgba, name: name, frameWidth: v.width, frameHeight: v.height,
                                                    objId: obj, frame: frame)
            let shown = try await e.addMask(frame: frame, objId: obj, mask: mask)
            objectsWithPrompts.insert(obj)
            resetPrompt()
            render(shown, width: v.width, height: v.height)
            info("object \(obj) on frame \(frame): mask from \(name) (\(mask.filter { $0 }.count) pixels); Track, or Object \(obj)+ for the next")
        } catch {
            fail(error)
        }
    }

    func newObject() {
        if objectsWithPrompts.count >= TrackingSession.maxObjects {
            return fail(EtamError.prompt("this app tracks at most \(TrackingSession.maxObjects) objects; press Clear to start over"))
        }
        if objectsWithPrompts.contains(currentObject) { currentObject += 1 }
        resetPrompt()
        info("now prompting object \(currentObject)")
    }

    func clear() {
        guard let e = engine else { return }
        Task {
            do {
                try await e.clear()
                resetResults()
                info("cleared")
            } catch {
                fail(error)
            }
        }
    }

    // ---- tracking and display -----------------------------------------------------------
    /// Tracks on the engine actor from where the new prompts take effect: after a correction,
    /// from the corrected frame onward (the correction is kept). Progress and masks are published
    /// here frame by frame; Stop cancels.
    func track() {
        guard let e = engine, let v = video else { return fail(EtamError.prompt("open a video first (in camera mode tracking is live)")) }
        busy = true
        let total = numFrames
        work = Task {
            defer {
                busy = false
                work = nil
            }
            do {
                let summary = try await e.propagate { [weak self] r in
                    let q = r.lowRes.map { Int8(max(-127, min(127, $0 * 4))) }
                    Task { @MainActor in self?.trackedFrame(r.frame, r.objIds, q, total: total) }
                }
                resetPrompt()
                try await show(frameIndex)
                let ms = summary.milliseconds / Double(max(summary.framesTracked, 1))
                let what = summary.cancelled ? "stopped after" : "tracked"
                info(String(format: "%@ %d frames from frame %d (%.0f ms/frame); scrub to review, tap to correct", what,
                            summary.framesTracked, summary.start, ms))
                _ = v
            } catch {
                fail(error)
            }
        }
    }

    func stop() { work?.cancel() }

    private func trackedFrame(_ frame: Int, _ ids: [Int], _ q: [Int8], total: Int) {
        results[frame] = (ids, q)
        frameIndex = frame
        status = "tracking frame \(frame + 1) / \(total)"
    }

    func show(_ i: Int) async throws {
        guard let e = engine, let v = video else { return }
        frameIndex = i
        resetPrompt()
        let f = try await e.frame(i)
        frame = ImageUtils.cgImage(f)
        if let (ids, q) = results[i], lowResSize > 0 {
            render(FrameResult(frame: i, objIds: ids, lowRes: q.map { Float($0) / 4 }, lowResSize: lowResSize), width: v.width, height: v.height)
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
        video = nil
        numFrames = 0
        resetResults()
        await loadModels()
    }

    func benchmark() async {
        guard let m = store.models else { return fail(EtamError.manifest("models are not loaded: \(status)")) }
        let e = m.engine
        stopCamera()
        busy = true
        defer { busy = false }
        do {
            let out = try await BenchmarkRunner.run(engine: e, folder: m.folder, computeUnits: m.computeUnits, computeUnitReport: m.computeUnitReport,
                                                    frames: 50, warmup: 5) { [weak self] i, n in
                Task { @MainActor in self?.status = "benchmark: frame \(i) / \(n)" }
            }
            info("benchmark written to Documents/\(out.lastPathComponent); share it from the Files app")
        } catch {
            fail(error)
        }
    }
}
