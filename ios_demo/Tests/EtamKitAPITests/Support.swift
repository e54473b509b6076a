import EtamKit
import Foundation

/// Test support that uses only EtamKit's public API (no @testable), as the app does.
enum APIFixtures {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("EtamKitTests").appendingPathComponent("Fixtures")

    static func data(_ name: String) throws -> Data { try Data(contentsOf: folder.appendingPathComponent(name)) }

    static func manifest() throws -> Manifest { try Manifest.parse(try data("manifest.json")) }
}

/// A stage runner whose outputs are deterministic functions of all their inputs, so any change
/// of memory, pointers or prompts changes every later result (exact equality is meaningful).
final class MixRunner: StageRunner {
    let cfg: TrackerConfig
    private(set) var calls = 0

    init(cfg: TrackerConfig) { self.cfg = cfg }

    private static func checksum(_ a: [Float]) -> Float {
        var s: Float = 0
        for (i, v) in a.enumerated() where v != 0 { s += v * Float(i % 7 + 1) }
        return s
    }

    func imageEncoder(_ image: [Float]) throws -> [Float] {
        calls += 1
        let n = cfg.dModel * cfg.featSize * cfg.featSize
        let step = max(1, image.count / n)
        return (0..<n).map { image[($0 * step) % image.count] * 0.5 + Float($0 % 5) * 0.01 }
    }

    func memoryAttention(feats: [Float], memFeats: [Float], memTpos: [Int32], memValid: [Float], objPtrs: [Float], ptrValid: [Float]) throws -> [Float] {
        calls += 1
        var s = MixRunner.checksum(memFeats) * 1e-4 + MixRunner.checksum(objPtrs) * 1e-3
        for i in memTpos.indices { s += Float(memTpos[i]) * memValid[i] * 0.1 }
        s += MixRunner.checksum(ptrValid)
        return feats.map { $0 + s * 1e-3 }
    }

    func maskDecoder(condFeats: [Float], points: [Float], labels: [Int32], maskInput: [Float], hasMaskInput: Float) throws -> DecoderOutput {
        calls += 1
        let lr2 = cfg.lowResSize * cfg.lowResSize
        let p = MixRunner.checksum(points) * 1e-3 + Float(labels.reduce(0, +)) * 0.01 + MixRunner.checksum(maskInput) * 1e-5 + hasMaskInput
        let masks = (0..<(4 * lr2)).map { i in condFeats[i % condFeats.count] * 10 - 2 + p + Float(i / lr2) * 0.1 }
        let iou = (0..<4).map { k in Float(0.5) + 0.1 * sin(Float(k) + p) }
        let ptr = (0..<(4 * cfg.dModel)).map { condFeats[$0 % condFeats.count] + p }
        return DecoderOutput(masks: masks, iou: iou, objPtr: ptr, objScore: 1)
    }

    func memoryEncoder(feats: [Float], mask: [Float], binarize: Float) throws -> [Float] {
        calls += 1
        let n = cfg.memDim * cfg.featSize * cfg.featSize
        let m = MixRunner.checksum(mask) * 1e-6 + binarize
        return (0..<n).map { feats[$0 % feats.count] + m }
    }
}

/// Collects values from @Sendable callbacks (any thread).
final class Collector<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []

    func add(_ v: T) {
        lock.lock()
        items.append(v)
        lock.unlock()
    }

    var values: [T] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}
