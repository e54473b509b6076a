import Foundation

/// The app's one loaded model set, shared by every screen (video and photo), so models are
/// loaded (and compiled) once, never once per screen.
///
/// `model(for:)` loads on the first call and hands the same instance to every later caller with
/// the same key (the key is what the models depend on, e.g. the compute units); callers that
/// arrive while a load runs wait for that load instead of starting another. Another key replaces
/// the model. A failed load is not kept: the next call tries again. `release()` drops the
/// holder's reference (memory warnings); screens that still hold the model keep it alive.
public actor ModelHolder<Key: Hashable & Sendable, Model: Sendable> {
    public typealias Loader = @Sendable (Key) async throws -> Model

    private let loader: Loader
    private var current: (key: Key, model: Model)?
    private var pending: (id: Int, key: Key, task: Task<Model, Error>)?
    private var nextId = 0
    /// How many loads were started (tests and the status line use it).
    public private(set) var loads = 0

    public init(loader: @escaping Loader) {
        self.loader = loader
    }

    /// The loaded model, if any (never starts a load).
    public var loaded: Model? { current?.model }

    /// The key of the loaded model, if any.
    public var loadedKey: Key? { current?.key }

    public func model(for key: Key) async throws -> Model {
        if let c = current, c.key == key { return c.model }
        if let p = pending, p.key == key { return try await p.task.value }
        let loader = self.loader
        let task = Task { try await loader(key) }
        nextId += 1
        let id = nextId
        pending = (id, key, task)
        loads += 1
        do {
            let m = try await task.value
            // Publish only if no newer request replaced this one while it loaded.
            if pending?.id == id {
                pending = nil
                current = (key, m)
            }
            return m
        } catch {
            if pending?.id == id { pending = nil }
            throw error
        }
    }

    /// Forget the loaded model (the next `model(for:)` loads again). Returns whether one was held.
    @discardableResult
    public func release() -> Bool {
        let had = current != nil
        current = nil
        return had
    }
}
