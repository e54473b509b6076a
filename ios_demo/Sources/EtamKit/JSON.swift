import Foundation

/// A parsed JSON value. Decoded with `JSONDecoder` (Codable), so booleans and numbers are told
/// apart the same way on Apple and Linux Foundation: `true` is never the number 1 and 1 is
/// never `true` (JSONSerialization's NSNumber bridging differs between the two).
public enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var numberValue: Double? { if case .number(let d) = self { return d } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }

    /// The value as an exact integer (JSON has one number type; 3.0 counts, 3.5 does not).
    public var intValue: Int? {
        guard let d = numberValue, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }

    /// Parse any JSON text; the error names `what`.
    public static func parse(_ data: Data, what: String) throws -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw EtamError.json("\(what) is not valid JSON (\(JSONValue.describe(error)))")
        }
    }

    /// A short, platform-independent description of a decoding error.
    static func describe(_ error: Error) -> String {
        if let e = error as? DecodingError {
            switch e {
            case .dataCorrupted(let ctx): return ctx.debugDescription
            case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .keyNotFound(_, let ctx): return ctx.debugDescription
            @unknown default: return "\(e)"
            }
        }
        return "\(error)"
    }
}

/// Typed, path-aware access to a parsed JSON object: errors say which key was wrong.
public struct JSONObject: Sendable {
    public let dict: [String: JSONValue]
    public let path: String

    public init(dict: [String: JSONValue], path: String) {
        self.dict = dict
        self.path = path
    }

    /// Parse a document whose top level must be an object.
    public static func parse(_ data: Data, what: String) throws -> JSONObject {
        guard let dict = try JSONValue.parse(data, what: what).objectValue else {
            throw EtamError.json("\(what): top level must be a JSON object")
        }
        return JSONObject(dict: dict, path: what)
    }

    public var keys: [String] { dict.keys.sorted() }

    public func has(_ key: String) -> Bool {
        guard let v = dict[key] else { return false }
        return v != .null
    }

    public func value(_ key: String) throws -> JSONValue {
        guard has(key), let v = dict[key] else { throw EtamError.json("\(path) lacks '\(key)'") }
        return v
    }

    public func obj(_ key: String) throws -> JSONObject {
        guard let d = try value(key).objectValue else { throw EtamError.json("\(path).\(key) must be an object") }
        return JSONObject(dict: d, path: "\(path).\(key)")
    }

    public func list(_ key: String) throws -> [JSONValue] {
        guard let l = try value(key).arrayValue else { throw EtamError.json("\(path).\(key) must be an array") }
        return l
    }

    public func objects(_ key: String) throws -> [JSONObject] {
        return try list(key).enumerated().map { i, v in
            guard let d = v.objectValue else { throw EtamError.json("\(path).\(key)[\(i)] must be an object") }
            return JSONObject(dict: d, path: "\(path).\(key)[\(i)]")
        }
    }

    public func string(_ key: String) throws -> String {
        guard let s = try value(key).stringValue else { throw EtamError.json("\(path).\(key) must be a string") }
        return s
    }

    public func bool(_ key: String) throws -> Bool {
        guard let b = try value(key).boolValue else { throw EtamError.json("\(path).\(key) must be true or false") }
        return b
    }

    public func double(_ key: String) throws -> Double {
        guard let n = try value(key).numberValue else { throw EtamError.json("\(path).\(key) must be a number") }
        return n
    }

    public func int(_ key: String) throws -> Int {
        return try JSONObject.toInt(try value(key), "\(path).\(key)")
    }

    public func intList(_ key: String) throws -> [Int] {
        return try list(key).enumerated().map { i, v in try JSONObject.toInt(v, "\(path).\(key)[\(i)]") }
    }

    public func stringList(_ key: String) throws -> [String] {
        return try list(key).enumerated().map { i, v in
            guard let s = v.stringValue else { throw EtamError.json("\(path).\(key)[\(i)] must be a string") }
            return s
        }
    }

    public func doubleList(_ key: String) throws -> [Double] {
        return try list(key).enumerated().map { i, v in
            guard let n = v.numberValue else { throw EtamError.json("\(path).\(key)[\(i)] must be a number") }
            return n
        }
    }

    public func floatList(_ key: String) throws -> [Float] {
        return try doubleList(key).map { Float($0) }
    }

    public static func toInt(_ v: JSONValue, _ where_: String) throws -> Int {
        guard let d = v.numberValue else { throw EtamError.json("\(where_) must be an integer") }
        guard let i = v.intValue else { throw EtamError.json("\(where_) must be an integer, got \(d)") }
        return i
    }
}
