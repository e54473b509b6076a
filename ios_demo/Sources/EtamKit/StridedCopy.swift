import Foundation

/// Copies an N-d array laid out with arbitrary element strides (Core ML's MLMultiArray may pad
/// rows, e.g. to 64-byte multiples on the Neural Engine) into a dense row-major array.
public enum StridedCopy {
    /// `read(offset)` returns the element at `offset` elements from the start of the storage.
    public static func dense(shape: [Int], strides: [Int], _ read: (Int) -> Float) -> [Float] {
        precondition(shape.count == strides.count, "shape and strides differ in rank")
        let count = shape.reduce(1, *)
        var out = [Float](repeating: 0, count: count)
        guard count > 0 else { return out }
        if strides == denseStrides(shape) {
            for i in 0..<count { out[i] = read(i) }
            return out
        }
        var index = [Int](repeating: 0, count: shape.count)
        var offset = 0
        for i in 0..<count {
            out[i] = read(offset)
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                offset += strides[d]
                if index[d] < shape[d] { break }
                offset -= strides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// Row-major strides of a dense array of `shape`.
    public static func denseStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) {
            s[d] = acc
            acc *= shape[d]
        }
        return s
    }

    /// Elements the storage must hold for `shape` with `strides`.
    public static func storageCount(shape: [Int], strides: [Int]) -> Int {
        guard !shape.contains(0) else { return 0 }
        return zip(shape, strides).reduce(1) { $0 + ($1.0 - 1) * $1.1 }
    }
}
