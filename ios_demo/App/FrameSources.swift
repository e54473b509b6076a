import AVFoundation
import CoreGraphics
import CoreImage
import EtamKit
import Foundation

/// Frames of a video file, decoded on demand at exact frame times.
final class VideoFrameSource {
    let numFrames: Int
    let width: Int
    let height: Int
    private let generator: AVAssetImageGenerator
    private let frameDuration: CMTime

    init(url: URL) async throws {
        let asset = AVURLAsset(url: url)
        guard let track = try await asset.loadTracks(withMediaType: .video).first else {
            throw EtamError.prompt("\(url.lastPathComponent) has no video track; choose another file")
        }
        let (fps, duration, size, transform) = try await track.load(.nominalFrameRate, .timeRange, .naturalSize, .preferredTransform)
        let rate = fps > 0 ? Double(fps) : 30
        numFrames = max(1, Int((duration.duration.seconds * rate).rounded(.down)))
        let oriented = size.applying(transform)
        width = Int(abs(oriented.width))
        height = Int(abs(oriented.height))
        frameDuration = CMTime(seconds: 1 / rate, preferredTimescale: 600_000)
        generator = AVAssetImageGenerator(asset: asset)
        generator.appliesPreferredTrackTransform = true
        generator.requestedTimeToleranceBefore = .zero
        generator.requestedTimeToleranceAfter = .zero
    }

    func frame(_ i: Int) throws -> CGImage {
        let t = CMTimeMultiply(frameDuration, multiplier: Int32(i))
        do {
            return try generator.copyCGImage(at: t, actualTime: nil)
        } catch {
            throw EtamError.prompt("frame \(i) cannot be decoded (\(error.localizedDescription))")
        }
    }
}

/// The back camera as a stream of CGImages (latest frame only).
final class CameraFrameSource: NSObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    let session = AVCaptureSession()
    private let queue = DispatchQueue(label: "etam.camera")
    private let context = CIContext()
    var onFrame: ((CGImage) -> Void)?

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
        guard let pb = CMSampleBufferGetImageBuffer(sampleBuffer) else { return }
        let ci = CIImage(cvPixelBuffer: pb)
        if let cg = context.createCGImage(ci, from: ci.extent) { onFrame?(cg) }
    }
}
