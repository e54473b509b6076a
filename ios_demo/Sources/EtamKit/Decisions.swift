import Foundation

public struct MaskChoice: Equatable, Sendable {
    public let maskIndex: Int
    public let ptrIndex: Int
    public let multimask: Bool
    public let stability: Double

    public init(maskIndex: Int, ptrIndex: Int, multimask: Bool, stability: Double) {
        self.maskIndex = maskIndex
        self.ptrIndex = ptrIndex
        self.multimask = multimask
        self.stability = stability
    }
}

/// Which decoder output is used, exactly as upstream (etam_mobile/runtime/decisions.py).
public enum Decisions {
    public static func useMultimask(_ numPoints: Int, cfg: TrackerConfig) -> Bool {
        return numPoints >= cfg.multimaskMinPt && numPoints <= cfg.multimaskMaxPt
    }

    /// Area above +delta over area above -delta (1.0 when both are empty); compared in Float.
    public static func stabilityScore(_ masks: [Float], offset: Int, count: Int, delta: Double) -> Double {
        let d = Float(delta), nd = -Float(delta)
        var inter = 0, union = 0
        for i in offset..<(offset + count) {
            let v = masks[i]
            if v > d { inter += 1 }
            if v > nd { union += 1 }
        }
        return union > 0 ? Double(inter) / Double(union) : 1.0
    }

    /// First index of the best IoU among tokens 1..3.
    public static func bestMultimask(_ iou: [Float]) -> Int {
        var best = 1
        for k in 2...3 where iou[k] > iou[best] { best = k }
        return best
    }

    /// The decision from the numbers alone (what a conformance trace records).
    public static func choose(iou: [Float], stability: Double, numPoints: Int, cfg: TrackerConfig) -> MaskChoice {
        let best = bestMultimask(iou)
        if useMultimask(numPoints, cfg: cfg) { return MaskChoice(maskIndex: best, ptrIndex: best, multimask: true, stability: 1.0) }
        let idx = stability >= cfg.stabilityThresh ? 0 : best
        return MaskChoice(maskIndex: idx, ptrIndex: 0, multimask: false, stability: stability)
    }

    /// masks: (4, lr, lr) flattened.
    public static func chooseMask(_ masks: [Float], iou: [Float], numPoints: Int, cfg: TrackerConfig) -> MaskChoice {
        if useMultimask(numPoints, cfg: cfg) { return choose(iou: iou, stability: 1.0, numPoints: numPoints, cfg: cfg) }
        let s = stabilityScore(masks, offset: 0, count: masks.count / 4, delta: cfg.stabilityDelta)
        return choose(iou: iou, stability: s, numPoints: numPoints, cfg: cfg)
    }

    /// Upstream writes the no-object score everywhere when the object is predicted absent.
    public static func applyObjectScore(_ mask: [Float], objScore: Float, cfg: TrackerConfig) -> [Float] {
        return objScore > 0 ? mask : [Float](repeating: cfg.noObjScore, count: mask.count)
    }
}
