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

    private var session: ImageSession?
    private var result: ImageResult?
    private var clicks: [SIMD2<Float>] = []
    private var labels: [Int] = []
    private var box: [Float]?
    private var inputBuffer: [Float] = []

    private func info(_ s: String) {
        status = s
        isError = false
    }

    private func fail(_ error: Error) {
        status = (error as? EtamError)?.message ?? error.localizedDescription
        isError = true
    }

    /// Encode the photo once with the app's loaded models.
    func open(_ image: CGImage, runner: CoreMLStageRunner?) {
        do {
            guard let r = runner else { throw EtamError.manifest("models are not loaded yet; wait for the status line to say ready") }
            if session == nil { session = ImageSession(runner: r, cfg: r.manifest.tracker) }
            guard let rgb = ImageUtils.rgbBytes(image) else { throw EtamError.prompt("this photo cannot be read; pick a JPEG, PNG or HEIC photo") }
            // upstream's image-predictor preprocessing (antialiased bilinear), not the video path's
            inputBuffer = ImageMode.modelInput(rgb, width: image.width, height: image.height, manifest: r.manifest)
            let t0 = Date()
            try session!.setImage(modelInput: inputBuffer, width: image.width, height: image.height)
            photo = image
            clear()
            info("\(image.width)x\(image.height) photo encoded in \(Int(Date().timeIntervalSince(t0) * 1000)) ms: tap the object or drag a box")
        } catch {
            fail(error)
        }
    }

    func tap(_ p: CGPoint) {
        clicks.append(SIMD2<Float>(Float(p.x), Float(p.y)))
        labels.append(mode == .negative ? 0 : 1)
        marks = zip(clicks, labels).map { (CGPoint(x: CGFloat($0.0.x), y: CGFloat($0.0.y)), $0.1) }
        predict()
    }

    func drag(from a: CGPoint, to b: CGPoint) {
        box = [Float(min(a.x, b.x)), Float(min(a.y, b.y)), Float(max(a.x, b.x)), Float(max(a.y, b.y))]
        predict()
    }

    private func predict() {
        guard let s = session, s.hasImage else { return fail(EtamError.prompt("pick a photo first")) }
        let multimask = box == nil && clicks.count == 1
        var maskInput: [Float]?
        if !multimask, let prev = result {
            let lr2 = s.cfg.lowResSize * s.cfg.lowResSize
            maskInput = Array(prev.lowRes[(chosen * lr2)..<((chosen + 1) * lr2)])
        }
        do {
            let t0 = Date()
            let r = try s.predict(Prompt(points: clicks, labels: labels, box: box), multimask: multimask, maskInput: maskInput)
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
