import EtamCoreML
import EtamKit
import SwiftUI
import UniformTypeIdentifiers

struct ContentView: View {
    @EnvironmentObject var session: TrackingSession
    @State private var pickingVideo = false
    @State private var pickingMask = false

    var body: some View {
        VStack(spacing: 8) {
            PromptCanvas(image: session.frame, overlay: session.overlay, marks: session.marks, boxMode: session.mode == .box,
                         onTap: { session.tap($0) }, onBox: { session.drag(from: $0, to: $1) })
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
                Button("Mask") { pickingMask = true }
                    // A mask PNG for the current object on this frame; on its own view, since two
                    // fileImporters on one view conflict.
                    .fileImporter(isPresented: $pickingMask, allowedContentTypes: [.png]) { picked($0) { await session.importMask($0) } }
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
        .fileImporter(isPresented: $pickingVideo, allowedContentTypes: [.movie, .mpeg4Movie, .quickTimeMovie]) { picked($0) { await session.openVideo($0) } }
    }

    /// A file the user picked goes to `open`; a picker failure becomes the red status line.
    private func picked(_ result: Result<URL, Error>, _ open: @escaping @MainActor (URL) async -> Void) {
        switch result {
        case .success(let url):
            Task { await open(url) }
        case .failure(let error):
            session.status = error.localizedDescription
            session.isError = true
        }
    }
}
