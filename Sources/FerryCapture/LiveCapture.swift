#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPcap

/// Captures frames from a network interface through libpcap (AF_PACKET on Linux), non-blocking,
/// so that a loop can poll it next to its other file descriptors.
///
/// A capture has one owner: it is not `Sendable`, and the frame returned by `next()` borrows
/// libpcap's ring buffer. Capturing needs root or CAP_NET_RAW and CAP_NET_ADMIN.
public final class LiveCapture {
    /// Which frames to capture relative to the interface.
    public enum Direction: Sendable {
        /// Frames the interface receives and frames it sends.
        case inOut
        /// Only frames the interface receives.
        case `in`
        /// Only frames the interface sends.
        case out

        var pcapValue: pcap_direction_t {
            switch self {
            case .inOut: PCAP_D_INOUT
            case .in: PCAP_D_IN
            case .out: PCAP_D_OUT
            }
        }
    }

    /// libpcap's counters for a capture since it started; see pcap_stats(3PCAP) for how each
    /// platform counts.
    public struct Statistics: Sendable, Equatable {
        /// Frames the capture received (on Linux: that passed the filter).
        public var received: UInt32
        /// Frames dropped because the capture's buffer was full: the reader was too slow.
        public var dropped: UInt32
        /// Frames the interface or its driver dropped, as far as libpcap can tell.
        public var interfaceDropped: UInt32

        public init(received: UInt32, dropped: UInt32, interfaceDropped: UInt32) {
            self.received = received
            self.dropped = dropped
            self.interfaceDropped = interfaceDropped
        }
    }

    /// The interface name given.
    public let interface: String
    /// The link type of the interface's frames: `.ethernet` for Ethernet, veth, TAP, bridges and
    /// `lo`; something else for `any`, TUN or Wi-Fi in monitor mode. Check it before parsing.
    public let linkType: LinkType
    /// libpcap's warning from activating the capture (promiscuous mode unsupported, say), if any.
    public let activationWarning: String?

    private var handle: OpaquePointer?

    /// Opens and starts a capture on `interface`.
    ///
    /// - `snapshotLength`: bytes kept per frame; the default keeps whole 64 KiB offload frames.
    /// - `immediate`: deliver each frame as it arrives rather than in batches filled by the
    ///   kernel; what an interactive tool or a test wants. Without it frames can wait up to 100 ms.
    /// - `bufferSize`: the kernel ring's size in bytes; libpcap's default (2 MiB) if nil.
    /// - `filter`: a tcpdump-syntax expression applied in the kernel, so that only matching
    ///   frames are copied up.
    ///
    /// Throws `.noSuchInterface`, `.permissionDenied`, `.badFilter`, or `.interface` with
    /// libpcap's reason for anything else.
    public init(
        interface: String,
        snapshotLength: Int = 262_144,
        promiscuous: Bool = false,
        immediate: Bool = true,
        bufferSize: Int? = nil,
        filter: String? = nil,
        direction: Direction = .inOut
    ) throws(CaptureError) {
        let (created, message) = withPcapErrorBuffer { errorBuffer in pcap_create(interface, errorBuffer) }
        guard let handle = created else {
            throw .interface(name: interface, reason: message.isEmpty ? "libpcap could not create a capture" : message)
        }
        var configured = false
        defer { if !configured { pcap_close(handle) } }

        // These only record settings on an inactive handle; they cannot fail on one.
        pcap_set_snaplen(handle, Int32(clamping: snapshotLength))
        pcap_set_promisc(handle, promiscuous ? 1 : 0)
        pcap_set_immediate_mode(handle, immediate ? 1 : 0)
        // Without immediate mode the kernel hands over a block only when it fills or times out;
        // a timeout of 0 would mean "when it fills", which can hold frames back indefinitely.
        pcap_set_timeout(handle, 100)
        if let bufferSize {
            pcap_set_buffer_size(handle, Int32(clamping: bufferSize))
        }

        let status = pcap_activate(handle)
        switch status {
        case 0:
            activationWarning = nil
        case 1...:
            activationWarning = pcapStatus(status, handle)
        case PCAP_ERROR_NO_SUCH_DEVICE:
            throw .noSuchInterface(name: interface)
        case PCAP_ERROR_PERM_DENIED, PCAP_ERROR_PROMISC_PERM_DENIED:
            throw .permissionDenied(interface: interface)
        default:
            throw .interface(name: interface, reason: pcapStatus(status, handle))
        }

        if let filter {
            var program = bpf_program()
            try FilterCompiler.compile(filter, for: handle, into: &program)
            // libpcap copies the program into the kernel (and keeps its own copy for the
            // userspace fallback), so ours can go at once.
            let applied = pcap_setfilter(handle, &program)
            pcap_freecode(&program)
            if applied != 0 {
                throw .badFilter(expression: filter, reason: pcapError(handle))
            }
        }
        if direction != .inOut, pcap_setdirection(handle, direction.pcapValue) != 0 {
            throw .interface(name: interface, reason: "cannot select direction: \(pcapError(handle))")
        }
        let (nonblocking, nonblockMessage) = withPcapErrorBuffer { errorBuffer in
            pcap_setnonblock(handle, 1, errorBuffer)
        }
        if nonblocking != 0 {
            throw .interface(name: interface, reason: "cannot make the capture non-blocking: \(nonblockMessage)")
        }

        self.interface = interface
        self.linkType = LinkType(rawValue: pcap_datalink(handle))
        self.handle = handle
        configured = true
    }

    deinit {
        close()
    }

    /// A file descriptor that polls readable when frames may be waiting (it can also wake with
    /// none: call `next()` until it returns nil). -1 after `close()`.
    public var selectableFileDescriptor: Int32 {
        guard let handle else { return -1 }
        return pcap_get_selectable_fd(handle)
    }

    /// The next captured frame, or nil if none is waiting right now (or after `close()`).
    ///
    /// Never blocks. The frame's `bytes` are valid only until the next call to `next()` or
    /// `close()`. Throws `.read` if the capture fails (the interface went away, say).
    public func next() throws(CaptureError) -> CapturedFrame? {
        guard let handle else { return nil }
        var header: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<UInt8>?
        switch pcap_next_ex(handle, &header, &data) {
        case 1:
            guard let header else { return nil }
            return CapturedFrame(header: header, data: data, timestamp: PacketTimestamp(header.pointee.ts))
        case 0, PCAP_ERROR_BREAK:
            return nil
        default:
            throw .read(source: interface, reason: pcapError(handle))
        }
    }

    /// The next captured frame, waiting for one up to `timeoutMilliseconds` (0: do not wait);
    /// nil if none came in that time. Same lifetime rule for the frame as `next()`.
    public func next(timeoutMilliseconds: Int) throws(CaptureError) -> CapturedFrame? {
        let deadline = monotonicMilliseconds() + Int64(max(timeoutMilliseconds, 0))
        while true {
            if let frame = try next() {
                return frame
            }
            let remaining = deadline - monotonicMilliseconds()
            guard remaining > 0, handle != nil else { return nil }
            try waitForReadable(upTo: Int32(clamping: remaining))
        }
    }

    /// libpcap's counters since the capture started; all zero if they cannot be read (after
    /// `close()`, say).
    public func statistics() -> Statistics {
        var stats = pcap_stat()
        guard let handle, pcap_stats(handle, &stats) == 0 else {
            return Statistics(received: 0, dropped: 0, interfaceDropped: 0)
        }
        return Statistics(received: stats.ps_recv, dropped: stats.ps_drop, interfaceDropped: stats.ps_ifdrop)
    }

    /// Stops the capture and releases its buffer. Idempotent; `deinit` calls it too.
    public func close() {
        if let handle {
            pcap_close(handle)
            self.handle = nil
        }
    }

    private func waitForReadable(upTo milliseconds: Int32) throws(CaptureError) {
        let descriptor = selectableFileDescriptor
        guard descriptor >= 0 else {
            // No pollable descriptor on this platform: sleep in short steps instead.
            usleep(UInt32(min(milliseconds, 10)) * 1_000)
            return
        }
        var request = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        // A signal interrupting the wait is not an error; the caller's loop re-checks the deadline.
        if poll(&request, 1, milliseconds) < 0, errno != EINTR {
            throw .read(source: interface, reason: "poll: \(systemErrorText())")
        }
    }

    private func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000 + Int64(now.tv_nsec) / 1_000_000
    }
}
