import Foundation

/// Typed, path-aware access to a parsed JSON object: errors say which key was wrong.
public struct JSONObject {
    public let dict: [String: Any]
    public let path: String

    public init(dict: [String: Any], path: String) {
        self.dict = dict
        self.path = path
    }

    /// Parse a document whose top level must be an object.
    public static func parse(_ data: Data, what: String) throws -> JSONObject {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw EtamError.json("\(what) is not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = value as? [String: Any] else {
            throw EtamError.json("\(what): top level must be a JSON object")
        }
        return JSONObject(dict: dict, path: what)
    }

    public func has(_ key: String) -> Bool {
        guard let v = dict[key] else { return false }
        return !(v is NSNull)
    }

    private func need(_ key: String) throws -> Any {
        guard has(key), let v = dict[key] else { throw EtamError.json("\(path) lacks '\(key)'") }
        return v
    }

    public func obj(_ key: String) throws -> JSONObject {
        guard let d = try need(key) as? [String: Any] else { throw EtamError.json("\(path).\(key) must be an object") }
        return JSONObject(dict: d, path: "\(path).\(key)")
    }

    public func list(_ key: String) throws -> [Any] {
        guard let l = try need(key) as? [Any] else { throw EtamError.json("\(path).\(key) must be an array") }
        return l
    }

    public func objects(_ key: String) throws -> [JSONObject] {
        return try list(key).enumerated().map { i, v in
            guard let d = v as? [String: Any] else { throw EtamError.json("\(path).\(key)[\(i)] must be an object") }
            return JSONObject(dict: d, path: "\(path).\(key)[\(i)]")
        }
    }

    public func string(_ key: String) throws -> String {
        guard let s = try need(key) as? String else { throw EtamError.json("\(path).\(key) must be a string") }
        return s
    }

    public func bool(_ key: String) throws -> Bool {
        guard let b = try need(key) as? Bool else { throw EtamError.json("\(path).\(key) must be true or false") }
        return b
    }

    public func double(_ key: String) throws -> Double {
        guard let n = try need(key) as? NSNumber else { throw EtamError.json("\(path).\(key) must be a number") }
        return n.doubleValue
    }

    public func int(_ key: String) throws -> Int {
        return try JSONObject.toInt(try need(key), "\(path).\(key)")
    }

    public func intList(_ key: String) throws -> [Int] {
        return try list(key).enumerated().map { i, v in try JSONObject.toInt(v, "\(path).\(key)[\(i)]") }
    }

    public func doubleList(_ key: String) throws -> [Double] {
        return try list(key).enumerated().map { i, v in
            guard let n = v as? NSNumber else { throw EtamError.json("\(path).\(key)[\(i)] must be a number") }
            return n.doubleValue
        }
    }

    public func floatList(_ key: String) throws -> [Float] {
        return try doubleList(key).map { Float($0) }
    }

    public static func toInt(_ v: Any, _ where_: String) throws -> Int {
        guard let n = v as? NSNumber else { throw EtamError.json("\(where_) must be an integer") }
        let d = n.doubleValue
        guard d == d.rounded(), abs(d) < 9.0e15 else { throw EtamError.json("\(where_) must be an integer, got \(d)") }
        return Int(d)
    }
}
