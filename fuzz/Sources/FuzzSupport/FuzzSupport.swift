@_exported import CFuzzerDriver

/// One fuzz input as a target sees it.
public typealias FuzzBody = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Hands `body` to libFuzzer's driver with the process's command line; returns its exit status.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                      _ body: FuzzBody) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, body)
}

/// The input as a buffer (empty when libFuzzer passes no bytes).
@inline(__always)
public func input(_ data: UnsafePointer<UInt8>?, _ size: Int) -> UnsafeRawBufferPointer {
    guard let data, size > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: data, count: size)
}

/// A property that must hold: when it does not, the input is a finding (libFuzzer records it).
@inline(__always)
public func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                    file: StaticString = #fileID, line: UInt = #line) {
    if !condition() {
        fatalError("fuzz property failed: \(message())", file: file, line: line)
    }
}

/// Reads the input front to back: the first bytes choose, the rest is data.
public struct FuzzReader {
    public let bytes: UnsafeRawBufferPointer
    public var at = 0
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    public var remaining: Int { bytes.count - at }
    public mutating func byte() -> UInt8 {
        guard at < bytes.count else { return 0 }
        defer { at += 1 }
        return bytes[at]
    }
    public mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }
    public mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }
    /// Up to `count` bytes (fewer at the end).
    public mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let n = max(0, min(count, remaining))
        defer { at += n }
        return UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)])
    }
    public mutating func rest() -> UnsafeRawBufferPointer { take(remaining) }
}
