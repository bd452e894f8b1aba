#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes classic pcap (microsecond timestamps, Ethernet) over a descriptor with its own
/// buffer, for a writer that must know what became of each record: every record is counted as
/// written or lost, none silently.
///
/// Records are gathered in a buffer allocated once and written whole by `flush()` (or when the
/// next record does not fit). A write that fails (a full disk, a reader gone) loses the records
/// of that buffer, and leaves a regular file as it was before the write: a partial write is cut
/// back, so that the file always ends on a whole record and tools read it to the end. A pipe,
/// FIFO or socket is written without blocking: while its reader takes nothing, `flush()` waits
/// in steps of `waitStep` milliseconds, asking its `keepWaiting` each time whether to go on.
///
/// One owner: not `Sendable`. `append` does not allocate.
public final class PcapStreamWriter {
    /// The pcap file header's length, and each record header's.
    public static let fileHeaderLength = 24
    public static let recordHeaderLength = 16

    public let path: String
    public let snapshotLength: Int
    /// Records handed to the system, and records lost to a failing write.
    public private(set) var recordsWritten = 0
    public private(set) var recordsLost = 0
    /// The error of the last write that failed, nil once one succeeds again.
    public private(set) var lastError: Int32?
    /// `lastError` in words.
    public var failureReason: String? {
        lastError.map { $0 == EAGAIN ? "the reader took nothing" : String(cString: strerror($0)) }
    }

    let fd: Int32
    let ownsDescriptor: Bool
    let isStream: Bool
    /// The descriptor's flags before this writer made it non-blocking (restored on close).
    let savedFlags: Int32?
    let buffer: UnsafeMutableRawBufferPointer
    var used = 0
    var pendingRecords = 0
    /// Bytes of a regular file known to be whole records: where a failed write is cut back to.
    var committed: Int64 = 0
    var closed = false
    public static let waitStep: Int32 = 100

    /// Takes `fd` (`CaptureFile.create`'s) and writes the file header at once; throws `.write`
    /// if it cannot be. `ownsDescriptor`: whether `close()` closes it (not standard output).
    /// `bufferBytes` is raised to hold at least one record of `snapshotLength` bytes.
    public init(descriptor fd: Int32, path: String, ownsDescriptor: Bool, snapshotLength: Int = 262_144,
                bufferBytes: Int = 1 << 20) throws(CaptureError) {
        precondition(snapshotLength > 0)
        self.fd = fd
        self.path = path
        self.ownsDescriptor = ownsDescriptor
        self.snapshotLength = snapshotLength
        isStream = CaptureFile.isStream(fd)
        if isStream {
            let flags = fcntl(fd, F_GETFL)
            savedFlags = flags >= 0 && flags & O_NONBLOCK == 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 ? flags : nil
        } else {
            savedFlags = nil
        }
        buffer = .allocate(byteCount: max(bufferBytes, 2 * (Self.recordHeaderLength + snapshotLength)), alignment: 16)
        // Standard output may be a file opened for appending, or written to already: cut back
        // to where this writer began, never before.
        var info = stat()
        let flags = fcntl(fd, F_GETFL)
        if !isStream, flags >= 0, flags & O_APPEND != 0, fstat(fd, &info) == 0 {
            committed = Int64(info.st_size)
        } else if !isStream {
            committed = max(0, Int64(lseek(fd, 0, SEEK_CUR)))
        }
        var header = [UInt8](repeating: 0, count: Self.fileHeaderLength)
        Self.store(UInt32(0xA1B2_C3D4), &header, 0)  // microsecond timestamps, this host's byte order
        Self.store(UInt16(2), &header, 4)
        Self.store(UInt16(4), &header, 6)
        Self.store(UInt32(snapshotLength), &header, 16)
        Self.store(UInt32(1), &header, 20)  // LINKTYPE_ETHERNET
        buffer.copyBytes(from: header)
        used = header.count
        // A reader that takes nothing at all is given a second before the capture is refused.
        var waits = 0
        if !flush(keepWaiting: { waits += 1; return waits < 10 }) {
            let reason = failureReason ?? "the reader takes nothing"
            close()
            throw .write(path: path, reason: reason)
        }
    }

    deinit {
        close()
        buffer.deallocate()
    }

    static func store<T: FixedWidthInteger>(_ value: T, _ bytes: inout [UInt8], _ offset: Int) {
        withUnsafeBytes(of: value) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
    }

    /// Appends one record: `bytes` cut to the snapshot length, `originalLength` its length on
    /// the wire (at least the bytes given). Flushes first if the buffer is full, with
    /// `keepWaiting` as `flush` takes it. Does nothing after `close()`.
    public func append(_ bytes: UnsafeRawBufferPointer, seconds: Int64, nanoseconds: Int, originalLength: Int,
                       keepWaiting: () -> Bool) {
        guard !closed else { return }
        let captured = min(bytes.count, snapshotLength)
        let need = Self.recordHeaderLength + captured
        if used + need > buffer.count { _ = flush(keepWaiting: keepWaiting) }
        let out = buffer.baseAddress! + used
        out.storeBytes(of: UInt32(truncatingIfNeeded: seconds), as: UInt32.self)
        (out + 4).storeBytes(of: UInt32(nanoseconds / 1000), as: UInt32.self)
        (out + 8).storeBytes(of: UInt32(captured), as: UInt32.self)
        (out + 12).storeBytes(of: UInt32(clamping: max(originalLength, bytes.count)), as: UInt32.self)
        if captured > 0 { (out + Self.recordHeaderLength).copyMemory(from: bytes.baseAddress!, byteCount: captured) }
        used += need
        pendingRecords += 1
    }

    /// Whether records are waiting in the buffer.
    public var hasPending: Bool { used > 0 }

    /// Writes the buffer out. True if it all went; false if the write failed (the buffer's
    /// records are then counted lost, and `lastError` says why) or a stream's reader took
    /// nothing until `keepWaiting` said to stop (what was not written is lost).
    @discardableResult
    public func flush(keepWaiting: () -> Bool) -> Bool {
        guard used > 0, !closed else { return true }
        var done = 0
        var failure: Int32?
        while done < used {
            let n = write(fd, buffer.baseAddress! + done, used - done)
            if n > 0 {
                done += n
                continue
            }
            let error = n < 0 ? errno : EIO
            if error == EINTR { continue }
            if error == EAGAIN || error == EWOULDBLOCK {
                if keepWaiting() {
                    var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&poller, 1, Self.waitStep)
                    continue
                }
                failure = EAGAIN
            } else {
                failure = error
            }
            break
        }
        if let failure {
            // A regular file is cut back to its last whole record; a stream cannot be.
            if !isStream, done > 0 { _ = ftruncate(fd, off_t(committed)); _ = lseek(fd, off_t(committed), SEEK_SET) }
            lastError = failure
            recordsLost += pendingRecords
        } else {
            lastError = nil
            recordsWritten += pendingRecords
            committed += Int64(used)
        }
        used = 0
        pendingRecords = 0
        return failure == nil
    }

    /// Writes what is buffered (giving a stalled reader until `keepWaiting` says no more) and
    /// releases the descriptor if it is this writer's. Idempotent.
    public func close(keepWaiting: () -> Bool = { false }) {
        guard !closed else { return }
        flush(keepWaiting: keepWaiting)
        closed = true
        if let savedFlags { _ = fcntl(fd, F_SETFL, savedFlags) }
        if ownsDescriptor { _ = Glibc.close(fd) }
    }
}
