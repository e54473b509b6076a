import Foundation
import XCTest
@testable import EtamKit

/// Loads the fixtures written by scripts/make_traces.py (copied into the test bundle).
enum Fixtures {
    static func data(_ name: String) throws -> Data {
        let base = (name as NSString).deletingPathExtension
        guard let url = Bundle.module.url(forResource: base, withExtension: "json", subdirectory: "Fixtures") else {
            throw EtamError.json("fixture \(name) is missing from the test bundle; run scripts/make_traces.py")
        }
        return try Data(contentsOf: url)
    }

    static func obj(_ name: String) throws -> JSONObject {
        return try JSONObject.parse(try data(name), what: name)
    }

    static func traceNames() throws -> [String] {
        return try obj("index.json").stringList("traces")
    }

    static func text(_ name: String) throws -> String {
        return String(decoding: try data(name), as: UTF8.self)
    }

    static func prompt(_ o: JSONObject) throws -> Prompt {
        let pts: [SIMD2<Float>] = o.has("points") ? try o.list("points").map { p in
            guard let l = p.arrayValue, l.count == 2, let x = l[0].numberValue, let y = l[1].numberValue else {
                throw EtamError.json("\(o.path).points: bad point")
            }
            return SIMD2<Float>(Float(x), Float(y))
        } : []
        return Prompt(points: pts, labels: o.has("labels") ? try o.intList("labels") : [], box: o.has("box") ? try o.floatList("box") : nil)
    }
}
