import Foundation

/// Everything the app shows to the user instead of crashing: each message names the fix.
public enum EtamError: Error, LocalizedError, Equatable {
    /// A malformed JSON text or a value of the wrong kind (the message names the path).
    case json(String)
    /// An export folder the app cannot use (missing, wrong format version, wrong contract).
    case manifest(String)
    /// A prompt that cannot be applied (outside the frame, too many points or objects).
    case prompt(String)
    /// A model that fails to load, compile or run on this device.
    case model(String)

    public var errorDescription: String? {
        switch self {
        case .json(let m), .manifest(let m), .prompt(let m), .model(let m):
            return m
        }
    }

    public var message: String { errorDescription ?? "" }
}
