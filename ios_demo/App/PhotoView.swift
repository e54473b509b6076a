import EtamKit
import PhotosUI
import SwiftUI

/// Photo mode: pick a photo, tap or drag, see the candidates with their scores, choose one.
struct PhotoView: View {
    @EnvironmentObject var tracking: TrackingSession
    @StateObject private var photo = PhotoSession()
    @State private var item: PhotosPickerItem?
    @State private var dragStart: CGPoint?
    @State private var dragNow: CGPoint?

    var body: some View {
        VStack(spacing: 8) {
            GeometryReader { geo in
                ZStack {
                    Color.black
                    if let image = photo.photo {
                        let rect = fitted(CGSize(width: image.width, height: image.height), in: geo.size)
                        Image(decorative: image, scale: 1).resizable().frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                        if photo.chosen < photo.candidates.count {
                            Image(decorative: photo.candidates[photo.chosen], scale: 1).resizable()
                                .frame(width: rect.width, height: rect.height).position(x: rect.midX, y: rect.midY)
                        }
                        ForEach(Array(photo.marks.enumerated()), id: \.offset) { _, m in
                            Circle().fill(m.1 == 1 ? Color.green : Color.red).frame(width: 14, height: 14)
                                .position(x: rect.minX + m.0.x / CGFloat(image.width) * rect.width, y: rect.minY + m.0.y / CGFloat(image.height) * rect.height)
                        }
                        if let a = dragStart, let b = dragNow, photo.mode == .box {
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
                        guard let image = photo.photo else { return }
                        let rect = fitted(CGSize(width: image.width, height: image.height), in: geo.size)
                        let toPhoto = { (p: CGPoint) -> CGPoint in
                            CGPoint(x: (p.x - rect.minX) / rect.width * CGFloat(image.width), y: (p.y - rect.minY) / rect.height * CGFloat(image.height))
                        }
                        if photo.mode == .box {
                            photo.drag(from: toPhoto(g.startLocation), to: toPhoto(g.location))
                        } else {
                            photo.tap(toPhoto(g.location))
                        }
                    })
            }
            Text(photo.status)
                .font(.footnote)
                .foregroundColor(photo.isError ? .red : .secondary)
                .frame(maxWidth: .infinity, alignment: .leading)
                .padding(.horizontal)
            HStack {
                ForEach(Array(photo.scores.enumerated()), id: \.offset) { k, score in
                    Button(action: { photo.choose(k) }) {
                        VStack {
                            if k < photo.candidates.count, let image = photo.photo {
                                ZStack {
                                    Image(decorative: image, scale: 1).resizable().scaledToFit()
                                    Image(decorative: photo.candidates[k], scale: 1).resizable().scaledToFit()
                                }
                                .frame(height: 64)
                            }
                            Text(String(format: "%.2f", score)).font(.caption)
                        }
                        .padding(4)
                        .overlay(RoundedRectangle(cornerRadius: 6).stroke(k == photo.chosen ? Color.accentColor : Color.clear, lineWidth: 2))
                    }
                }
            }
            .padding(.horizontal)
            Picker("Prompt", selection: $photo.mode) {
                ForEach(TrackingSession.Mode.allCases) { Text($0.rawValue).tag($0) }
            }
            .pickerStyle(.segmented)
            .padding(.horizontal)
            HStack {
                PhotosPicker("Photo", selection: $item, matching: .images)
                Button("Clear") { photo.clear() }
            }
            .disabled(photo.busy || tracking.busy)
            .padding(.bottom, 8)
        }
        .onChange(of: item) {
            guard let item else { return }
            Task {
                guard let data = try? await item.loadTransferable(type: Data.self),
                      let source = CGImageSourceCreateWithData(data as CFData, nil),
                      let image = CGImageSourceCreateImageAtIndex(source, 0, nil) else {
                    photo.status = "this photo cannot be read; pick a JPEG, PNG or HEIC photo"
                    photo.isError = true
                    return
                }
                photo.open(image, runner: tracking.runner)
            }
        }
    }

    private func fitted(_ size: CGSize, in box: CGSize) -> CGRect {
        let s = min(box.width / size.width, box.height / size.height)
        let w = size.width * s, h = size.height * s
        return CGRect(x: (box.width - w) / 2, y: (box.height - h) / 2, width: w, height: h)
    }
}
