#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CPcap

/// Writes frames to a classic pcap file (microsecond timestamps) through libpcap's dumper, so
/// that tcpdump, tshark and Wireshark read the result as one of their own.
///
/// A writer has one owner: it is not `Sendable`. Writes are buffered by stdio; `flush()` makes
/// them visible to another reader, and `close()` (or releasing the writer) finishes the file.
public final class PcapFileWriter {
    /// The path being written (`-` writes standard output, as in tcpdump).
    public let path: String
    /// The link type recorded in the file's header.
    public let linkType: LinkType
    /// The largest number of bytes kept per frame; longer frames are cut to it.
    public let snapshotLength: Int
    /// How many frames have been written.
    public private(set) var framesWritten = 0

    private var handle: OpaquePointer?
    private var dumper: OpaquePointer?

    /// Creates (or truncates) the file at `path` and writes the pcap file header.
    ///
    /// The file is opened by `CaptureFile.create`: mode 0600, and a symbolic link at `path` is
    /// refused (`.symbolicLink`), not followed. `snapshotLength` must be positive; 262144 is
    /// what tcpdump uses and keeps any frame whole. Throws `.write` with the reason if the file
    /// cannot be created (a missing directory, no permission).
    public init(path: String, linkType: LinkType = .ethernet, snapshotLength: Int = 262_144) throws(CaptureError) {
        precondition(snapshotLength > 0, "a pcap snapshot length must be positive")
        // A "dead" handle is libpcap's way to describe a capture that no interface produces.
        guard let handle = pcap_open_dead_with_tstamp_precision(
            linkType.rawValue, Int32(clamping: snapshotLength), UInt32(PCAP_TSTAMP_PRECISION_MICRO))
        else {
            throw .write(path: path, reason: "libpcap could not allocate a handle")
        }
        let opened: OpaquePointer?
        if path == "-" {
            opened = pcap_dump_open(handle, path)
        } else {
            let fd: Int32
            do { fd = try CaptureFile.create(path: path) } catch {
                pcap_close(handle)
                throw error
            }
            guard let file = fdopen(fd, "w") else {
                let reason = systemErrorText()
                Glibc.close(fd)
                pcap_close(handle)
                throw .write(path: path, reason: reason)
            }
            opened = pcap_dump_fopen(handle, file)
            if opened == nil { fclose(file) }
        }
        guard let dumper = opened else {
            let reason = pcapError(handle)
            pcap_close(handle)
            throw .write(path: path, reason: reason)
        }
        self.path = path
        self.linkType = linkType
        self.snapshotLength = snapshotLength
        self.handle = handle
        self.dumper = dumper
    }

    deinit {
        try? close()
    }

    /// Appends one frame. Bytes beyond `snapshotLength` are not kept; `originalLength` (the
    /// frame's length on the wire) defaults to, and is never taken below, `bytes.count`.
    ///
    /// Does not allocate. Does nothing after `close()`. A write error (a full disk) is not seen
    /// here, since stdio buffers the data: `flush()` and `close()` report it.
    public func write(_ bytes: UnsafeRawBufferPointer, timestamp: PacketTimestamp, originalLength: Int? = nil) {
        guard let dumper else { return }
        let captured = min(bytes.count, snapshotLength)
        var header = pcap_pkthdr()
        header.ts = timestamp.timeValue
        header.caplen = bpf_u_int32(captured)
        header.len = bpf_u_int32(clamping: max(originalLength ?? bytes.count, bytes.count))
        // pcap_dump takes its dumper as the opaque "user" argument of a pcap_handler callback.
        let user = UnsafeMutablePointer<UInt8>(dumper)
        if let base = bytes.baseAddress, captured > 0 {
            pcap_dump(user, &header, base.assumingMemoryBound(to: UInt8.self))
        } else {
            // A zero-length record is legal; libpcap still wants a pointer to write nothing from.
            var none: UInt8 = 0
            pcap_dump(user, &header, &none)
        }
        framesWritten += 1
    }

    /// Appends one frame from an array; see the buffer form.
    public func write(_ bytes: [UInt8], timestamp: PacketTimestamp, originalLength: Int? = nil) {
        bytes.withUnsafeBytes { write($0, timestamp: timestamp, originalLength: originalLength) }
    }

    /// Appends a frame as read from another capture, keeping its timestamp and original length.
    public func write(_ frame: CapturedFrame) {
        write(frame.bytes, timestamp: frame.timestamp, originalLength: frame.originalLength)
    }

    /// Appends an owned frame, keeping its timestamp and original length.
    public func write(_ frame: OwnedFrame) {
        write(frame.bytes, timestamp: frame.timestamp, originalLength: frame.originalLength)
    }

    /// Pushes buffered frames to the file, so that a reader sees everything written so far.
    /// Throws `.write` if the system could not take them (a full disk). Nothing to do after close.
    public func flush() throws(CaptureError) {
        guard let dumper else { return }
        if pcap_dump_flush(dumper) != 0 {
            throw .write(path: path, reason: systemErrorText())
        }
    }

    /// Flushes and closes the file. Idempotent; releasing the writer closes it too, but only an
    /// explicit call reports a failure of the last flush.
    public func close() throws(CaptureError) {
        guard let dumper, let handle else { return }
        let flushed = pcap_dump_flush(dumper) == 0
        let reason = flushed ? "" : systemErrorText()
        pcap_dump_close(dumper)
        pcap_close(handle)
        self.dumper = nil
        self.handle = nil
        if !flushed {
            throw .write(path: path, reason: reason)
        }
    }
}
