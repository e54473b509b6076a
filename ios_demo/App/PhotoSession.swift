import CoreGraphics
import EtamKit
import Foundation
import SwiftUI

/// Photo mode's state: one photo encoded once (ImageSession), the current clicks / box, and the
/// candidates of the last prompt with their predicted IoU. A single click gives three candidates
/// (upstream's advice for ambiguous prompts); a box or several clicks give one, refined from the
/// chosen candidate. Every failure becomes `status` in red, never a crash.
@MainActor
final class PhotoSession: ObservableObject {
    @Published var status = "pick a photo"
    @Published var isError = false
    @Published var busy = false
    @Published var photo: CGImage?
    @Published var candidates: [CGImage] = []
    @Published var scores: [Float] = []
    @Published var chosen = 0
    @Published var mode: TrackingSession.Mode = .positive
    @Published var marks: [(CGPoint, Int)] = []

    /// The app's model store: the photo follows a compute-unit reload of the video tab.
    private var store: ModelStore?
    /// The engine the current photo was encoded on (after a compute-unit reload: encode again).
    private var encodedOn: ObjectIdentifier?
    private var result: ImageResult?
    private var clicks: [SIMD2<Float>] = []
    private var labels: [Int] = []
    private var box: [Float]?
    private var inputBuffer: [Float] = []
    private var size = (width: 0, height: 0)

    private func info(_ s: String) {
        status = s
        isError = false
    }

    private func fail(_ error: Error) {
        status = (error as? EtamError)?.message ?? error.localizedDescription
        isError = true
    }

    /// Encode the photo once with the app's loaded models (the video tab's engine, so the two
    /// tabs never run the models at the same time).
    func open(_ image: CGImage, store: ModelStore) async {
        busy = true
        defer { busy = false }
        do {
            guard let m = store.models else { throw EtamError.manifest("models are not loaded yet; wait for the video tab's status line to say ready") }
            guard let rgb = ImageUtils.rgbBytes(image) else { throw EtamError.prompt("this photo cannot be read; pick a JPEG, PNG or HEIC photo") }
            // upstream's image-predictor preprocessing (antialiased bilinear), not the video path's
            inputBuffer = ImageMode.modelInput(rgb, width: image.width, height: image.height, manifest: m.manifest)
            size = (image.width, image.height)
            let t0 = Date()
            try await m.engine.setPhoto(modelInput: inputBuffer, width: image.width, height: image.height)
            self.store = store
            encodedOn = ObjectIdentifier(m.engine)
            photo = image
            clear()
            info("\(image.width)x\(image.height) photo encoded in \(Int(Date().timeIntervalSince(t0) * 1000)) ms: tap the object or drag a box")
        } catch {
            fail(error)
        }
    }

    func tap(_ p: CGPoint) {
        guard !busy else { return }
        clicks.append(SIMD2<Float>(Float(p.x), Float(p.y)))
        labels.append(mode == .negative ? 0 : 1)
        marks = zip(clicks, labels).map { (CGPoint(x: CGFloat($0.0.x), y: CGFloat($0.0.y)), $0.1) }
        Task { await predict() }
    }

    func drag(from a: CGPoint, to b: CGPoint) {
        guard !busy else { return }
        box = [Float(min(a.x, b.x)), Float(min(a.y, b.y)), Float(max(a.x, b.x)), Float(max(a.y, b.y))]
        Task { await predict() }
    }

    private func predict() async {
        guard let s = store, photo != nil else { return fail(EtamError.prompt("pick a photo first")) }
        guard let m = s.models else { return fail(EtamError.manifest("models are loading; try again when the video tab says ready")) }
        guard !busy else { return }
        busy = true
        defer { busy = false }
        let multimask = box == nil && clicks.count == 1
        var maskInput: [Float]?
        if !multimask, let prev = result {
            let lr2 = m.manifest.tracker.lowResSize * m.manifest.tracker.lowResSize
            maskInput = Array(prev.lowRes[(chosen * lr2)..<((chosen + 1) * lr2)])
        }
        do {
            if encodedOn != ObjectIdentifier(m.engine) {
                try await m.engine.setPhoto(modelInput: inputBuffer, width: size.width, height: size.height)
                encodedOn = ObjectIdentifier(m.engine)
            }
            let t0 = Date()
            let r = try await m.engine.predictPhoto(Prompt(points: clicks, labels: labels, box: box), multimask: multimask, maskInput: maskInput)
            result = r
            scores = r.scores
            chosen = r.best
            candidates = (0..<r.count).compactMap { k in
                ImageUtils.overlay(labels: r.mask(k).map { $0 ? 1 : 0 }, width: r.width, height: r.height)
            }
            info("\(r.count) candidate(s) in \(Int(Date().timeIntervalSince(t0) * 1000)) ms; choose one")
        } catch {
            // keep the message, drop the click that caused it
            if !clicks.isEmpty && box == nil { clicks.removeLast(); labels.removeLast(); marks = Array(marks.dropLast()) }
            fail(error)
        }
    }

    func choose(_ k: Int) {
        if k < candidates.count { chosen = k }
    }

    func clear() {
        clicks = []
        labels = []
        box = nil
        marks = []
        result = nil
        candidates = []
        scores = []
        chosen = 0
    }
}
