import EtamCoreML
import EtamKit
import Foundation
import SwiftUI

/// One compute-unit setting's loaded models: the engine actor that owns the Core ML runner.
/// The video and the photo screen both call it, so model work never overlaps and the models
/// are in memory once.
final class LoadedModels: Sendable {
    let engine: TrackingEngine
    let manifest: Manifest
    let folder: URL
    let computeUnits: ComputeUnits
    let computeUnitReport: [String: [String: JSONValue]]
    let loadMs: Double

    private init(engine: TrackingEngine, manifest: Manifest, folder: URL, computeUnits: ComputeUnits,
                 computeUnitReport: [String: [String: JSONValue]], loadMs: Double) {
        self.engine = engine
        self.manifest = manifest
        self.folder = folder
        self.computeUnits = computeUnits
        self.computeUnitReport = computeUnitReport
        self.loadMs = loadMs
    }

    static func load(folder: URL, units: ComputeUnits) async throws -> LoadedModels {
        let runner = try await CoreMLStageRunner(folder: folder, computeUnits: units)
        let manifest = runner.manifest, report = runner.computeUnitReport
        let ms = runner.loadMilliseconds, stageMs = runner.stageLoadMs
        let engine = TrackingEngine(manifest: manifest, runner: runner, modelLoadMs: ms, stageLoadMs: stageMs)
        return LoadedModels(engine: engine, manifest: manifest, folder: folder, computeUnits: units,
                            computeUnitReport: report, loadMs: ms)
    }
}

/// The app's model store (one per app, shared by both tabs): loads through EtamKit's
/// ModelHolder, so the models are compiled and loaded once, and a second screen asking while a
/// load runs waits for it instead of loading again.
@MainActor
final class ModelStore: ObservableObject {
    static let exportFolderName = "EtamModels"

    @Published private(set) var models: LoadedModels?

    private let holder = ModelHolder<ComputeUnits, LoadedModels> { units in
        guard let folder = ModelStore.exportFolder() else { throw EtamError.manifest("no Documents folder") }
        return try await LoadedModels.load(folder: folder, units: units)
    }

    /// The export folder: bundled as a folder reference named EtamModels, or copied into the
    /// app's Documents/EtamModels with the Files app (UIFileSharingEnabled).
    nonisolated static func exportFolder() -> URL? {
        if let bundled = Bundle.main.url(forResource: exportFolderName, withExtension: nil) { return bundled }
        let docs = FileManager.default.urls(for: .documentDirectory, in: .userDomainMask).first
        return docs?.appendingPathComponent(exportFolderName)
    }

    /// The models for `units` (loaded on first use; other units replace them).
    func load(_ units: ComputeUnits) async throws -> LoadedModels {
        models = nil
        let m = try await holder.model(for: units)
        models = m
        return m
    }

    /// The loaded models, or a message saying why there are none.
    func require(_ status: String) throws -> LoadedModels {
        guard let m = models else { throw EtamError.manifest("models are not loaded: \(status)") }
        return m
    }
}
