import SwiftUI

/// The picture both tabs prompt on: the image letterboxed, an overlay, the clicks, the box being
/// dragged; taps and drags come back in image pixels (a tap outside the picture too: the core's
/// prompt check turns it into a message).
struct PromptCanvas: View {
    let image: CGImage?
    let overlay: CGImage?
    let marks: [(CGPoint, Int)]
    let boxMode: Bool
    let onTap: (CGPoint) -> Void
    let onBox: (CGPoint, CGPoint) -> Void
    @State private var dragStart: CGPoint?
    @State private var dragNow: CGPoint?

    var body: some View {
        GeometryReader { geo in
            ZStack {
                Color.black
                if let image {
                    let rect = PromptCanvas.fitted(CGSize(width: image.width, height: image.height), in: geo.size)
                    Image(decorative: image, scale: 1).resizable().frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                    if let overlay {
                        Image(decorative: overlay, scale: 1).resizable().frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                    }
                    ForEach(Array(marks.enumerated()), id: \.offset) { _, m in
                        Circle().fill(m.1 == 1 ? Color.green : Color.red).frame(width: 14, height: 14)
                            .position(x: rect.minX + m.0.x / CGFloat(image.width) * rect.width, y: rect.minY + m.0.y / CGFloat(image.height) * rect.height)
                    }
                    if let a = dragStart, let b = dragNow, boxMode {
                        Rectangle().stroke(Color.yellow, lineWidth: 2)
                            .frame(width: abs(b.x - a.x), height: abs(b.y - a.y))
                            .position(x: (a.x + b.x) / 2, y: (a.y + b.y) / 2)
                    }
                }
            }
            .contentShape(Rectangle())
            .gesture(DragGesture(minimumDistance: 0)
                .onChanged { g in
                    if dragStart == nil { dragStart = g.startLocation }
                    dragNow = g.location
                }
                .onEnded { g in
                    defer { dragStart = nil; dragNow = nil }
                    guard let image else { return }
                    let rect = PromptCanvas.fitted(CGSize(width: image.width, height: image.height), in: geo.size)
                    let toImage = { (p: CGPoint) -> CGPoint in
                        CGPoint(x: (p.x - rect.minX) / rect.width * CGFloat(image.width), y: (p.y - rect.minY) / rect.height * CGFloat(image.height))
                    }
                    if boxMode {
                        onBox(toImage(g.startLocation), toImage(g.location))
                    } else {
                        onTap(toImage(g.location))
                    }
                })
        }
    }

    static func fitted(_ size: CGSize, in box: CGSize) -> CGRect {
        let s = min(box.width / size.width, box.height / size.height)
        let w = size.width * s, h = size.height * s
        return CGRect(x: (box.width - w) / 2, y: (box.height - h) / 2, width: w, height: h)
    }
}
