/// A frame that owns a copy of its bytes: for tools and tests, not for a per-packet loop.
public struct OwnedFrame: Sendable, Hashable {
    /// The captured bytes, starting with the link-layer header.
    public var bytes: [UInt8]
    /// When the frame was captured.
    public var timestamp: PacketTimestamp
    /// How long the frame was on the wire; never less than `capturedLength`.
    public var originalLength: Int

    /// How many bytes were captured.
    public var capturedLength: Int { bytes.count }

    /// `originalLength` defaults to (and is raised to at least) the number of bytes given.
    public init(bytes: [UInt8], timestamp: PacketTimestamp, originalLength: Int? = nil) {
        self.bytes = bytes
        self.timestamp = timestamp
        self.originalLength = max(originalLength ?? bytes.count, bytes.count)
    }
}
