import EtamKit
import PhotosUI
import SwiftUI

/// Photo mode: pick a photo, tap or drag, see the candidates with their scores, choose one.
struct PhotoView: View {
    @EnvironmentObject var tracking: TrackingSession
    @EnvironmentObject var store: ModelStore
    @StateObject private var photo = PhotoSession()
    @State private var item: PhotosPickerItem?

    var body: some View {
        VStack(spacing: 8) {
            PromptCanvas(image: photo.photo, overlay: photo.chosen < photo.candidates.count ? photo.candidates[photo.chosen] : nil,
                         marks: photo.marks, boxMode: photo.mode == .box,
                         onTap: { photo.tap($0) }, onBox: { photo.drag(from: $0, to: $1) })
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
                await photo.open(image, store: store)
            }
        }
    }
}
