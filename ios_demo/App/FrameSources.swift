import AVFoundation
import CoreGraphics
import CoreImage
import EtamKit
import Foundation

/// Frames of a video file, decoded on demand at exact frame times. Holds security-scoped
/// access to a picked file for as long as it lives (frames are read long after opening).
final class VideoFrameSource: FrameSource {
    let numFrames: Int
    let width: Int
    let height: Int
    private let url: URL
    private let scoped: Bool
    private let generator: AVAssetImageGenerator
    private let frameDuration: CMTime

    init(url: URL) async throws {
        self.url = url
        scoped = url.startAccessingSecurityScopedResource()
        do {
            let asset = AVURLAsset(url: url)
            guard let track = try await asset.loadTracks(withMediaType: .video).first else {
                throw EtamError.prompt("\(url.lastPathComponent) has no video track; choose another file")
            }
            let (fps, duration, size, transform) = try await track.load(.nominalFrameRate, .timeRange, .naturalSize, .preferredTransform)
            let rate = fps > 0 ? Double(fps) : 30
            numFrames = max(1, Int((duration.duration.seconds * rate).rounded(.down)))
            let oriented = size.applying(transform)
            width = Int(abs(oriented.width).rounded())
            height = Int(abs(oriented.height).rounded())
            frameDuration = CMTime(seconds: 1 / rate, preferredTimescale: 600_000)
            generator = AVAssetImageGenerator(asset: asset)
            generator.appliesPreferredTrackTransform = true
            generator.requestedTimeToleranceBefore = .zero
            generator.requestedTimeToleranceAfter = .zero
        } catch {
            if scoped { url.stopAccessingSecurityScopedResource() }
            throw error
        }
    }

    deinit {
        if scoped { url.stopAccessingSecurityScopedResource() }
    }

    func image(_ i: Int) throws -> CGImage {
        let t = CMTimeMultiply(frameDuration, multiplier: Int32(i))
        do {
            return try generator.copyCGImage(at: t, actualTime: nil)
        } catch {
            throw EtamError.prompt("frame \(i) cannot be decoded (\(error.localizedDescription))")
        }
    }

    /// The frame at the size it decoded to (preprocessing uses that size, not the nominal one).
    func frame(_ i: Int) throws -> RGBFrame {
        let img = try image(i)
        guard let rgb = ImageUtils.rgbBytes(img) else { throw EtamError.prompt("frame \(i) cannot be read") }
        return try RGBFrame(rgb: rgb, width: img.width, height: img.height)
    }
}

/// The back camera. Each delivered frame is offered to `gate`; while a tracking step runs the
/// frame is dropped at once (no image is converted or queued), so memory stays bounded.
final class CameraFrameSource: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate, @unchecked Sendable {
    // @unchecked: `session` is configured before start and then only touched on `queue`;
    // `onFrame` is set once before start.
    let session = AVCaptureSession()
    private let queue = DispatchQueue(label: "etam.camera")
    private let context = CIContext()
    private let gate: StepGate
    /// Called on the camera queue with a frame the gate admitted; must call `gate.leave()` when done.
    private let onFrame: @Sendable (RGBFrame) -> Void

    init(gate: StepGate, onFrame: @escaping @Sendable (RGBFrame) -> Void) {
        self.gate = gate
        self.onFrame = onFrame
    }

    func start() throws {
        guard let device = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back) else {
            throw EtamError.prompt("no back camera on this device")
        }
        let input = try AVCaptureDeviceInput(device: device)
        let output = AVCaptureVideoDataOutput()
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.alwaysDiscardsLateVideoFrames = true
        output.setSampleBufferDelegate(self, queue: queue)
        session.beginConfiguration()
        session.sessionPreset = .hd1280x720
        if session.canAddInput(input) { session.addInput(input) }
        if session.canAddOutput(output) { session.addOutput(output) }
        if let conn = output.connection(with: .video), conn.isVideoRotationAngleSupported(90) { conn.videoRotationAngle = 90 }
        session.commitConfiguration()
        queue.async { self.session.startRunning() }
    }

    func stop() {
        queue.async { self.session.stopRunning() }
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer, from connection: AVCaptureConnection) {
        guard gate.tryEnter() else { return }
        guard let pb = CMSampleBufferGetImageBuffer(sampleBuffer) else { return gate.leave() }
        let ci = CIImage(cvPixelBuffer: pb)
        guard let cg = context.createCGImage(ci, from: ci.extent), let rgb = ImageUtils.rgbBytes(cg),
              let frame = try? RGBFrame(rgb: rgb, width: cg.width, height: cg.height) else { return gate.leave() }
        onFrame(frame)
    }
}
