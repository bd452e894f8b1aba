// The capture tap around the rings: what a worker captures reaches the sinks with its point and
// worker, what a full ring or a failing sink loses is counted in the engine's statistics, and
// the pcap file sink writes what libpcap reads back.

import FerryCapture
import FerryEngine
import FerryLinux
import FerryWire
import Foundation
import Synchronization
import Testing

/// A sink that keeps what it is given, or loses it while `failing`. Its tallies belong to the
/// writer thread; a test reads them once the tap is closed. `failing` is the one thing a test
/// changes while the writer runs.
final class CollectingSink: CaptureSink, @unchecked Sendable {
    var records: [(bytes: [UInt8], point: CapturePoint, worker: Int, originalLength: Int)] = []
    let failingNow = Atomic<Bool>(false)
    var failing: Bool {
        get { failingNow.load(ordering: .acquiring) }
        set { failingNow.store(newValue, ordering: .releasing) }
    }
    var pending = 0
    var written = 0
    var lost = 0
    var closed = false
    var name: String { "collecting sink" }
    func append(_ record: CaptureRecord, keepWaiting: () -> Bool) {
        if failing {
            lost += 1
        } else {
            records.append((Array(record.bytes), record.point, record.worker, record.originalLength))
            pending += 1
        }
    }
    func flush(keepWaiting: () -> Bool) { written += pending; pending = 0 }
    var hasPending: Bool { pending > 0 }
    var recordsWritten: Int { written }
    var recordsLost: Int { lost }
    var failure: String? { failing ? "it was told to fail" : nil }
    func close(keepWaiting: () -> Bool) { flush(keepWaiting: keepWaiting); closed = true }
}

@Suite("Capture tap")
struct CaptureTapTests {
    @Test("frames a worker captures on both sides reach the sink in order, with their point and worker")
    func workerRecordsReachTheSink() throws {
        let sink = CollectingSink()
        let tap = CaptureTap(sinks: [sink], point: .both)
        let h = try Harness(capture: tap)
        let out = (0..<5).map { udpFrame(to: remoteMAC, length: 100 + $0, seed: UInt8($0)) }
        try h.egress(out)
        let inner = remoteFrame()
        try h.receive(inner, from: h.variant.peerA)
        tap.close()
        #expect(sink.closed)
        let innerRecords = sink.records.filter { $0.point == .inner }
        #expect(innerRecords.map(\.bytes) == out + [inner])
        #expect(sink.records.allSatisfy { $0.worker == 0 })
        // The received packet's outer form, rebuilt, is there too.
        #expect(sink.records.contains { $0.point == .outer && $0.bytes.count > inner.count })
        #expect(h.counter(.captureDropped) == 0 && h.counter(.captureWriteFailed) == 0)
    }

    @Test("a full ring drops records and the engine's statistics count them; the worker is not held up")
    func fullRingCountsCaptureDropped() throws {
        let sink = CollectingSink()
        // 4 KiB: sixteen 248-byte records (a 200-byte frame and its header) fit.
        let tap = CaptureTap(sinks: [sink], point: .inner, ringBytes: 4096)
        let h = try Harness(capture: tap)
        let frames = (0..<40).map { udpFrame(to: remoteMAC, length: 200, seed: UInt8($0)) }
        try h.egress(frames)
        #expect(h.counter(.tapReceivedFrames) == 40 && h.counter(.floodedFrames) == 40, "every frame was forwarded")
        let ring = tap.ring(forWorker: 0, state: h.worker.state)
        #expect(ring.dropped == 40 - 4096 / 248)
        tap.close()
        #expect(sink.records.map(\.bytes) == Array(frames.prefix(4096 / 248)))
        #expect(h.counter(.captureDropped) == UInt64(ring.dropped))
    }

    @Test("a sink that fails loses records, counted in the statistics; the writer thread goes on")
    func failingSinkCountsWriteFailed() throws {
        let sink = CollectingSink()
        sink.failing = true
        let tap = CaptureTap(sinks: [sink], point: .inner)
        let h = try Harness(capture: tap)
        tap.start()
        try h.egress((0..<7).map { udpFrame(to: remoteMAC, seed: UInt8($0)) })
        let deadline = Date().addingTimeInterval(10)
        while h.counter(.captureWriteFailed) < 7 && Date() < deadline { usleep(2000) }
        #expect(h.counter(.captureWriteFailed) == 7)
        sink.failing = false
        try h.egress([udpFrame(to: remoteMAC, seed: 99)])
        tap.close()
        #expect(sink.records.count == 1 && sink.recordsWritten == 1)
        #expect(h.counter(.captureWriteFailed) == 7 && h.counter(.captureDropped) == 0)
    }

    @Test("the pcap file sink, fed by a running writer, holds what two workers captured")
    func fileSinkWritesWhatLibpcapReads() throws {
        let directory = NSTemporaryDirectory() + "ferry-tap-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/tap.pcap"
        let tap = try CaptureTap(path: path, point: .inner, filter: "udp")
        let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local4, peers: [peer4a], underlayMTU: 1500)
        let state = try ForwardingState(configuration: c, workers: 2)
        let rings = [tap.ring(forWorker: 0, state: state), tap.ring(forWorker: 1, state: state)]
        tap.start()
        let frames = (0..<20).map { udpFrame(to: remoteMAC, length: 60 + $0 * 50, seed: UInt8($0)) }
        for (k, f) in frames.enumerated() {
            f.withUnsafeBytes { _ = rings[k % 2].record($0, at: .inner) }
            // Not UDP: the filter keeps it out of the ring.
            arpRequest(from: localMAC).withUnsafeBytes { _ = rings[k % 2].record($0, at: .inner) }
        }
        tap.close()
        let read = try PcapFileReader(path: path).readAll()
        // Each worker's records in its order; the two interleave as the writer drained them.
        #expect(read.count == frames.count)
        #expect(read.map(\.bytes).filter { Set(frames.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)).contains($0) }
                == frames.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
        #expect(Set(read.map(\.bytes)) == Set(frames))
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(state.statistics().counter(.captureDropped) == 0)
    }
}
