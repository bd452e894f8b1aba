import FerryCapture
import FerryWire
import Synchronization

/// Which side of the encapsulation a capture records.
public enum CapturePoint: String, Sendable, CaseIterable {
    /// Inner frames as they leave and enter the bridge.
    case inner
    /// Outer packets as they leave and arrive on the underlay.
    case outer
    case both
}

/// A pcap file fed from inside the data plane. Every worker thread writes to it, so writes are
/// serialised; the engine only reaches here when a capture was asked for.
public final class CaptureTap: Sendable {
    public let point: CapturePoint
    let filter: PacketFilter?
    /// The open file, and the second it was last flushed in.
    let sink: Mutex<(writer: PcapFileWriter?, lastFlush: Int64)>

    public init(path: String, point: CapturePoint, filter: String?) throws(CaptureError) {
        self.point = point
        self.filter = try filter.map { e throws(CaptureError) in try PacketFilter(expression: e) }
        sink = Mutex((try PcapFileWriter(path: path), 0))
    }

    public var inner: Bool { point != .outer }
    public var outer: Bool { point != .inner }

    /// Writes `frame` if it passes the filter.
    public func record(_ frame: UnsafeRawBufferPointer) {
        if let filter, !filter.matches(frame) { return }
        let now = PacketTimestamp.now()
        sink.withLock { sink in
            sink.writer?.write(frame, timestamp: now)
            // Flushed every second, so that a reader sees the file grow and a crash loses little.
            if now.seconds != sink.lastFlush {
                sink.lastFlush = now.seconds
                try? sink.writer?.flush()
            }
        }
    }

    public func close() {
        sink.withLock { sink in
            try? sink.writer?.close()
            sink.writer = nil
        }
    }
}
