import Foundation

/// What a propagation did: the frames it tracked and whether it stopped early.
public struct PropagationSummary: Equatable, Sendable {
    public let start: Int
    public let framesTracked: Int
    public let cancelled: Bool
    public let milliseconds: Double
}

/// The tracker, its stage runner and its frame source, owned by one actor so model calls never
/// run on the main actor. The app awaits these methods and publishes results to the main actor
/// through the `@Sendable` callbacks (each callback hops there itself). Methods run without
/// suspending, so calls never interleave; a propagation checks `Task.isCancelled` per frame.
public actor TrackingEngine {
    public let manifest: Manifest
    /// Milliseconds the app spent loading (and compiling) the stages; reported by benchmarks.
    public let modelLoadMs: Double
    public let stageLoadMs: [String: Double]
    private let runner: any StageRunner
    private var source: (any FrameSource)?
    private var live: LiveFrameSource?
    private var tracker: Tracker?
    private let input: InputBuffer
    private var maxObjects = 4
    private var liveTracking = false
    private var photo: ImageSession?

    /// Reused model-input buffer (one frame at a time).
    private final class InputBuffer {
        var values: [Float]
        init(count: Int) { values = [Float](repeating: 0, count: count) }
    }

    public init(manifest: Manifest, runner: sending any StageRunner, modelLoadMs: Double = 0, stageLoadMs: [String: Double] = [:]) {
        self.manifest = manifest
        self.runner = runner
        self.modelLoadMs = modelLoadMs
        self.stageLoadMs = stageLoadMs
        input = InputBuffer(count: 3 * manifest.imageSize * manifest.imageSize)
    }

    private static func makeTracker(runner: any StageRunner, manifest: Manifest, source: any FrameSource, input: InputBuffer,
                                    maxObjects: Int) throws -> Tracker {
        return try Tracker(runner: runner, cfg: manifest.tracker, numFrames: source.numFrames, videoWidth: source.width,
                           videoHeight: source.height, maxObjects: maxObjects) { i in
            let f = try source.frame(i)
            Preprocess.modelInput(f.rgb, width: f.width, height: f.height, manifest: manifest, into: &input.values)
            return input.values
        }
    }

    /// Use `source` (a video) from now on; prompts and results start over.
    public func open(_ source: sending any FrameSource, maxObjects: Int = 4) throws {
        self.maxObjects = maxObjects
        tracker = try TrackingEngine.makeTracker(runner: runner, manifest: manifest, source: source, input: input, maxObjects: maxObjects)
        self.source = source
        live = nil
        liveTracking = false
    }

    /// Forget every prompt and result, keep the source.
    public func clear() throws {
        if let l = live {
            tracker = try TrackingEngine.makeTracker(runner: runner, manifest: manifest, source: l, input: input, maxObjects: maxObjects)
            liveTracking = false
        } else if let s = source {
            tracker = try TrackingEngine.makeTracker(runner: runner, manifest: manifest, source: s, input: input, maxObjects: maxObjects)
        }
    }

    private func requireTracker() throws -> Tracker {
        guard let t = tracker else { throw EtamError.prompt("open a video or the camera first") }
        return t
    }

    public var objectIds: [Int] { tracker?.objIds ?? [] }

    /// The frame as decoded (for display).
    public func frame(_ index: Int) throws -> RGBFrame {
        guard let s = live ?? source else { throw EtamError.prompt("open a video or the camera first") }
        return try s.frame(index)
    }

    /// A click or box for one object on `frame`; returns every object's mask on that frame
    /// (objects without a prompt there show as absent).
    public func addPrompt(frame: Int, objId: Int, prompt: Prompt) throws -> FrameResult {
        let t = try requireTracker()
        let low = try t.addPrompt(frame: frame, objId: objId, prompt: prompt)
        if live != nil { liveTracking = true }
        return shown(t, frame: frame, objId: objId, low: low)
    }

    /// A mask prompt (upstream's add_new_mask) for one object on `frame` of the open video: the
    /// mask (video size, from `MaskFile.decode`) becomes that frame's output and a conditioning
    /// frame. Exports made before mask prompts have no `mask_prompt` constants: the message says so.
    public func addMask(frame: Int, objId: Int, mask: [Bool]) throws -> FrameResult {
        let t = try requireTracker()
        guard live == nil else { throw EtamError.prompt("mask prompts need a video frame; open a video (the camera's frames change under the mask)") }
        guard let c = manifest.maskPrompt else {
            throw EtamError.manifest("this export has no mask_prompt constants (made before mask prompts); re-export the folder to use mask prompts")
        }
        let low = try t.addMask(frame: frame, objId: objId, mask: mask, constants: c)
        return shown(t, frame: frame, objId: objId, low: low)
    }

    /// Every object's low-res mask on `frame` with `objId`'s new one (others show as absent).
    private func shown(_ t: Tracker, frame: Int, objId: Int, low: [Float]) -> FrameResult {
        let ids = t.objIds
        var all = [Float](repeating: t.cfg.noObjScore, count: ids.count * low.count)
        if let k = ids.firstIndex(of: objId) { all.replaceSubrange(k * low.count..<(k + 1) * low.count, with: low) }
        return FrameResult(frame: frame, objIds: ids, lowRes: all, lowResSize: t.cfg.lowResSize)
    }

    /// Track from where the latest prompts take effect (`Tracker.resumeStart()`: just after a
    /// correction, keeping it) to the end or to `end`. `onFrame` gets each result (call it to
    /// publish to the main actor); stops early when the calling task is cancelled.
    public func propagate(end: Int? = nil, onFrame: @Sendable (FrameResult) -> Void) throws -> PropagationSummary {
        let t = try requireTracker()
        guard let s = source, live == nil else { throw EtamError.prompt("open a video first (in camera mode tracking is live)") }
        guard let start = t.resumeStart() else { throw EtamError.prompt("no new prompts since the last Track; tap an object first") }
        let t0 = DispatchTime.now().uptimeNanoseconds
        try t.beginPropagation(start: start, keepCorrections: true)
        let last = min(end ?? s.numFrames, s.numFrames)
        var n = 0
        var cancelled = false
        var i = start
        while i < last {
            if Task.isCancelled {
                cancelled = true
                break
            }
            onFrame(try t.trackFrame(i))
            n += 1
            i += 1
        }
        return PropagationSummary(start: start, framesTracked: n, cancelled: cancelled,
                                  milliseconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
    }

    /// One live camera frame: it becomes the current frame (index returned in the result), and
    /// once an object was tapped every object is tracked on it. Call only through a StepGate so
    /// frames that arrive during a step are dropped, never queued.
    public func cameraStep(_ f: RGBFrame) throws -> (index: Int, result: FrameResult?) {
        if live == nil || live?.width != f.width || live?.height != f.height || tracker == nil {
            let l = LiveFrameSource(width: f.width, height: f.height)
            tracker = try TrackingEngine.makeTracker(runner: runner, manifest: manifest, source: l, input: input, maxObjects: maxObjects)
            live = l
            source = nil
            liveTracking = false
        }
        guard let l = live, let t = tracker else { return (-1, nil) }
        let index = l.push(f)
        guard liveTracking, !t.objects.isEmpty else { return (index, nil) }
        if t.resumeStart() != nil { try t.beginPropagation(start: index, keepCorrections: true) }
        return (index, try t.trackFrame(index))
    }

    // ---- image mode (the photo screen), on the same models and the same actor ----
    /// Encode a photo (`modelInput` from `ImageMode.modelInput`) once for many prompts.
    public func setPhoto(modelInput: [Float], width: Int, height: Int) throws {
        if photo == nil { photo = ImageSession(runner: runner, cfg: manifest.tracker) }
        try photo!.setImage(modelInput: modelInput, width: width, height: height)
    }

    /// Candidates for clicks and/or a box on the encoded photo (`ImageSession.predict`).
    public func predictPhoto(_ prompt: Prompt, multimask: Bool, maskInput: [Float]? = nil) throws -> ImageResult {
        guard let p = photo, p.hasImage else { throw EtamError.prompt("pick a photo first") }
        return try p.predict(prompt, multimask: multimask, maskInput: maskInput)
    }

    /// Leave camera mode (the next cameraStep starts a fresh live session).
    public func stopCamera() {
        if live != nil {
            live = nil
            tracker = nil
            liveTracking = false
        }
    }

    /// Benchmark mode: object 1 clicked at the centre of the first frame of the open video (or
    /// of synthetic frames), then `warmup` untimed and `frames` timed tracked frames. Stage and
    /// frame wall times; `sampleMemoryMB` is called after every frame (peak kept).
    public func benchmark(frames: Int, warmup: Int, sampleMemoryMB: @Sendable () -> Double? = { nil },
                          progress: @Sendable (Int, Int) -> Void = { _, _ in }) throws -> BenchmarkMeasurements {
        guard frames >= 1, warmup >= 0 else { throw EtamError.prompt("the benchmark needs at least 1 timed frame") }
        let src: any FrameSource = source ?? SyntheticFrameSource(numFrames: frames + warmup + 1)
        let total = min(warmup + frames + 1, src.numFrames)
        guard total > warmup + 1 else {
            throw EtamError.prompt("the video is too short for the benchmark (needs more than \(warmup + 1) frames); open a longer one or close it to use synthetic frames")
        }
        let timed = TimedStageRunner(runner)
        let t = try TrackingEngine.makeTracker(runner: timed, manifest: manifest, source: src, input: input, maxObjects: 1)
        try t.addPrompt(frame: 0, objId: 1, prompt: Prompt(points: [SIMD2<Float>(Float(src.width) / 2, Float(src.height) / 2)], labels: [1]))
        let start = try t.beginPropagation()
        var frameTimes: [Double] = []
        var peak = sampleMemoryMB()
        for i in (start + 1)..<total {
            if i == start + 1 + warmup { timed.clear() }
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try t.trackFrame(i)
            let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
            if i >= start + 1 + warmup { frameTimes.append(ms) }
            if let m = sampleMemoryMB() { peak = max(peak ?? m, m) }
            progress(i - start, total - 1 - start)
        }
        return BenchmarkMeasurements(stageTimes: timed.times, frameTimes: frameTimes, warmupFrames: warmup, objects: 1,
                                     modelLoadMs: modelLoadMs, stageLoadMs: stageLoadMs, peakMemoryMB: peak)
    }
}
