#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPcap

/// Reads the frames of a pcap or pcapng file through libpcap, one at a time and without copying.
///
/// A reader has one owner: it is not `Sendable`, and the frame returned by `next()` borrows the
/// reader's buffer. Timestamps are delivered in microseconds whatever the file's own precision.
public final class PcapFileReader {
    /// The path the reader was opened with (`-` reads standard input, as in tcpdump).
    public let path: String
    /// The link type of every frame in the file.
    public let linkType: LinkType
    /// The snapshot length recorded in the file's header: no frame has more captured bytes.
    public let snapshotLength: Int

    private var handle: OpaquePointer?

    /// Opens `path` for reading.
    ///
    /// Throws `.fileNotFound` if there is no such file, `.cannotOpen` with libpcap's reason if it
    /// is not a capture libpcap can read, and `.notEthernet` if `requireEthernet` is set and the
    /// capture's frames are anything but Ethernet (a `tcpdump -i any` capture, for instance).
    public init(path: String, requireEthernet: Bool = true) throws(CaptureError) {
        // libpcap's message for a missing file is fine, but checking first lets the error say so
        // in a case of its own, which callers and tests can tell apart from a corrupt file.
        if path != "-" {
            var info = stat()
            if stat(path, &info) != 0, errno == ENOENT || errno == ENOTDIR {
                throw .fileNotFound(path: path)
            }
        }
        let (opened, message) = withPcapErrorBuffer { errorBuffer in
            pcap_open_offline_with_tstamp_precision(path, UInt32(PCAP_TSTAMP_PRECISION_MICRO), errorBuffer)
        }
        guard let opened else {
            throw .cannotOpen(path: path, reason: message.isEmpty ? "libpcap could not open it" : message)
        }
        let linkType = LinkType(rawValue: pcap_datalink(opened))
        if requireEthernet, linkType != .ethernet {
            pcap_close(opened)
            throw .notEthernet(path: path, linkType: linkType.name)
        }
        self.path = path
        self.handle = opened
        self.linkType = linkType
        self.snapshotLength = Int(pcap_snapshot(opened))
    }

    deinit {
        close()
    }

    /// The next frame, or nil at the end of the file (and for ever after, and after `close()`).
    ///
    /// The returned frame's `bytes` are valid only until the next call to `next()`, `readAll()`
    /// or `close()`. Throws `.read` if the file is damaged part-way (a truncated last record, as
    /// a capture killed mid-write leaves); the frames returned before stay good.
    public func next() throws(CaptureError) -> CapturedFrame? {
        guard let handle else { return nil }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        switch pcap_next_ex(handle, &header, &data) {
        case 1:
            guard let header else { return nil }
            return CapturedFrame(header: header, data: data, timestamp: Self.fileTimestamp(header.pointee.ts))
        case PCAP_ERROR_BREAK:
            return nil
        default:
            throw .read(source: path, reason: pcapError(handle))
        }
    }

    /// Every remaining frame, each copied into an `OwnedFrame`. For tools and tests: it holds the
    /// whole file in memory.
    public func readAll() throws(CaptureError) -> [OwnedFrame] {
        var frames: [OwnedFrame] = []
        while let frame = try next() {
            frames.append(frame.owned())
        }
        return frames
    }

    /// A pcap record's seconds are an unsigned 32-bit count (good until 2106), but libpcap 1.10
    /// reads them as signed and so puts every time after January 2038 before 1970; tcpdump and
    /// tshark read them unsigned. Undo the sign extension. (pcapng timestamps are 64-bit and come
    /// through unchanged: none of them is negative in a plausible capture.)
    static func fileTimestamp(_ time: timeval) -> PacketTimestamp {
        var seconds = Int64(time.tv_sec)
        if seconds < 0, seconds >= Int64(Int32.min) {
            seconds += 1 << 32
        }
        return PacketTimestamp(seconds: seconds, microseconds: Int32(truncatingIfNeeded: time.tv_usec))
    }

    /// Releases the file. Idempotent; `deinit` calls it too.
    public func close() {
        if let handle {
            pcap_close(handle)
            self.handle = nil
        }
    }
}
