import SwiftUI

@main
struct EtamDemoApp: App {
    @StateObject private var session = TrackingSession()

    var body: some Scene {
        WindowGroup {
            TabView {
                ContentView().tabItem { Label("Video", systemImage: "video") }
                PhotoView().tabItem { Label("Photo", systemImage: "photo") }
            }
            .environmentObject(session)
            .task { await session.loadModels() }
        }
    }
}
