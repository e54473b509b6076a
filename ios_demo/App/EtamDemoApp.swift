import SwiftUI

@main
struct EtamDemoApp: App {
    @StateObject private var session = TrackingSession()

    var body: some Scene {
        WindowGroup {
            ContentView()
                .environmentObject(session)
                .task { await session.loadModels() }
        }
    }
}
