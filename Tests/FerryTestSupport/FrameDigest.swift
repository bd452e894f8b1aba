import FerryCapture

/// A short, comparable account of a frame (lengths, timestamp, an FNV-1a hash of the bytes), so
/// that a failed comparison prints a line per frame rather than kilobytes of bytes.
public func digest(_ frame: OwnedFrame) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in frame.bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return "\(frame.capturedLength)/\(frame.originalLength) @\(frame.timestamp) #\(String(hash, radix: 16))"
}
