import CPcap

/// One frame as libpcap handed it over, without a copy.
///
/// `bytes` points into libpcap's own buffer (the file reader's record buffer). It stays valid
/// only until the next call to `next()` on the reader that returned it, or until that reader is
/// closed or released; copy what must outlive that (`owned()` does).
public struct CapturedFrame {
    /// When the frame was captured.
    public let timestamp: PacketTimestamp
    /// How many bytes were captured: `bytes.count`, at most the capture's snapshot length.
    public var capturedLength: Int { bytes.count }
    /// How long the frame was on the wire; larger than `capturedLength` if the capture cut it.
    public let originalLength: Int
    /// The captured bytes, starting with the link-layer header. Borrowed: see the type's note.
    public let bytes: UnsafeRawBufferPointer

    /// True if the capture kept only a prefix of the frame.
    public var isTruncated: Bool { originalLength > capturedLength }

    /// The timestamp comes separately because a file's `header.ts` needs correcting (see
    /// `PcapFileReader.fileTimestamp`).
    init(header: UnsafePointer<pcap_pkthdr>, data: UnsafePointer<UInt8>?, timestamp: PacketTimestamp) {
        self.timestamp = timestamp
        originalLength = Int(header.pointee.len)
        bytes = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : Int(header.pointee.caplen))
    }

    /// A copy that owns its bytes and may be kept, stored or sent across threads.
    public func owned() -> OwnedFrame {
        OwnedFrame(bytes: Array(bytes), timestamp: timestamp, originalLength: originalLength)
    }
}
