import SwiftUI

@main
struct EtamDemoApp: App {
    /// One model store for the app: both tabs use its models (loaded once).
    @StateObject private var store: ModelStore
    @StateObject private var session: TrackingSession

    init() {
        let store = ModelStore()
        _store = StateObject(wrappedValue: store)
        _session = StateObject(wrappedValue: TrackingSession(store: store))
    }

    var body: some Scene {
        WindowGroup {
            TabView {
                ContentView().tabItem { Label("Video", systemImage: "video") }
                PhotoView().tabItem { Label("Photo", systemImage: "photo") }
            }
            .environmentObject(session)
            .environmentObject(store)
            .task { await session.loadModels() }
        }
    }
}
