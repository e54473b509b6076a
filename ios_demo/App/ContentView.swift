import EtamCoreML
import EtamKit
import SwiftUI
import UniformTypeIdentifiers

struct ContentView: View {
    @EnvironmentObject var session: TrackingSession
    @State private var pickingVideo = false
    @State private var dragStart: CGPoint?
    @State private var dragNow: CGPoint?

    var body: some View {
        VStack(spacing: 8) {
            GeometryReader { geo in
                ZStack {
                    Color.black
                    if let frame = session.frame {
                        let rect = fitted(CGSize(width: frame.width, height: frame.height), in: geo.size)
                        Image(decorative: frame, scale: 1).resizable().frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                        if let ov = session.overlay {
                            Image(decorative: ov, scale: 1).resizable().frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                        }
                        ForEach(Array(session.marks.enumerated()), id: \.offset) { _, m in
                            Circle().fill(m.1 == 1 ? Color.green : Color.red).frame(width: 14, height: 14)
                                .position(x: rect.minX + m.0.x / CGFloat(frame.width) * rect.width, y: rect.minY + m.0.y / CGFloat(frame.height) * rect.height)
                        }
                        if let a = dragStart, let b = dragNow, session.mode == .box {
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
                        guard let frame = session.frame else { return }
                        let rect = fitted(CGSize(width: frame.width, height: frame.height), in: geo.size)
                        let toFrame = { (p: CGPoint) -> CGPoint in
                            CGPoint(x: (p.x - rect.minX) / rect.width * CGFloat(frame.width), y: (p.y - rect.minY) / rect.height * CGFloat(frame.height))
                        }
                        if session.mode == .box {
                            session.drag(from: toFrame(g.startLocation), to: toFrame(g.location))
                        } else {
                            session.tap(toFrame(g.location))
                        }
                    })
            }
            Text(session.status)
                .font(.footnote)
                .foregroundColor(session.isError ? .red : .secondary)
                .frame(maxWidth: .infinity, alignment: .leading)
                .padding(.horizontal)
            if session.numFrames > 1 {
                Slider(value: Binding(get: { Double(session.frameIndex) }, set: { v in Task { try? await session.show(Int(v)) } }),
                       in: 0...Double(session.numFrames - 1), step: 1)
                    .padding(.horizontal)
                    .disabled(session.busy)
            }
            Picker("Prompt", selection: $session.mode) {
                ForEach(TrackingSession.Mode.allCases) { Text($0.rawValue).tag($0) }
            }
            .pickerStyle(.segmented)
            .padding(.horizontal)
            HStack {
                Button("Video") { pickingVideo = true }
                Button("Camera") { session.startCamera() }
                Button("Object \(session.currentObject)+") { session.newObject() }
                Button("Track") { session.track() }
                Button("Clear") { session.clear() }
            }
            .disabled(session.busy)
            if session.busy {
                Button("Stop") { session.stop() }
            }
            HStack {
                Picker("Compute", selection: $session.computeUnits) {
                    ForEach(ComputeUnits.allCases) { Text($0.rawValue).tag($0) }
                }
                .onChange(of: session.computeUnits) { Task { await session.reloadModels() } }
                Button("Benchmark") { Task { await session.benchmark() } }
            }
            .disabled(session.busy)
            .padding(.bottom, 8)
        }
        .fileImporter(isPresented: $pickingVideo, allowedContentTypes: [.movie, .mpeg4Movie, .quickTimeMovie]) { result in
            switch result {
            case .success(let url):
                Task { await session.openVideo(url) }
            case .failure(let error):
                session.status = error.localizedDescription
                session.isError = true
            }
        }
    }

    private func fitted(_ size: CGSize, in box: CGSize) -> CGRect {
        let s = min(box.width / size.width, box.height / size.height)
        let w = size.width * s, h = size.height * s
        return CGRect(x: (box.width - w) / 2, y: (box.height - h) / 2, width: w, height: h)
    }
}
