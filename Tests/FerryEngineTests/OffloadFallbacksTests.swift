// Offloads the kernel refuses at run time are set aside for a back-off, not for good: they
// come back once it has passed (on the worker's clock), the back-off doubling while refusals
// keep coming and starting afresh after a quiet period; each withdrawal and each retry counted.

import FerryEngine
import FerryLinux
import FerryTestSupport
import FerryWire
import Synchronization
import Testing

/// What a worker reported, from its thread.
final class Changes: Sendable {
    let list = EngineMutex<[OffloadChange]>([])
}

@Suite("Offloads retried after a back-off")
struct OffloadFallbacksTests {
    /// A worker with UDP senders over a clock the test moves; the changes it reports.
    final class GSOHarness {
        let worker: TestWorker
        let device = FakeDevice()
        let transport = udpTransport()
        let clock = TestClock()
        let changes = Changes()

        init() throws {
            let c = EngineConfiguration(encapsulation: .vxlan(vni: 42), local: .v4(IPv4Address(10, 99, 0, 1)), peers: [peer4a],
                                        underlayMTU: 1500)
            device.virtioHeader = true
            let clock = clock, changes = changes
            worker = try Worker(configuration: c, limits: DataPathLimits(configuration: c, maximumFrame: 65535 + 28), device: device,
                                transport: transport, deviceMAC: tapMAC, clock: { clock.now },
                                onOffloadChange: { change in changes.list.withLock { $0.append(change) } })
        }

        /// Sends one super-frame of 20 segments; returns how many GSO messages were offered.
        func sendSuperFrame() throws -> Int {
            let offered = transport.gsoOffered
            device.pending = [VirtioTests.superFrame(payload: 20 * 1410, mss: 1410)]
            _ = try worker.egressStep()
            return transport.gsoOffered - offered
        }

        func counter(_ c: Counter) -> UInt64 { worker.state.statistics().counter(c) }
    }

    @Test func aRefusedGSOSendComesBackAfterItsBackOffWhichDoublesWhileRefusalsContinue() throws {
        let h = try GSOHarness()
        let t0 = h.clock.now
        h.transport.refuseGSO = true
        #expect(try h.sendSuperFrame() > 0)
        #expect(h.worker.withdrawnOffloads == [.genericSegmentation])
        #expect(h.counter(.offloadsWithdrawn) == 1 && h.counter(.offloadsRetried) == 0)

        // Off for at least the 1 s back-off: nothing offered within it.
        h.clock.advance(by: 1)
        #expect(try h.sendSuperFrame() == 0, "1 s later (the clock's whole seconds): still off")
        // Then tried again: refused a second time, set aside for 2 s.
        h.clock.advance(by: 1)
        #expect(try h.sendSuperFrame() > 0, "tried again once the back-off passed")
        #expect(h.counter(.offloadsWithdrawn) == 2 && h.counter(.offloadsRetried) == 1)
        h.clock.advance(by: 2)
        #expect(try h.sendSuperFrame() == 0, "the back-off doubled: 2 s is not enough")

        // The kernel takes GSO again: the next retry sticks.
        h.transport.refuseGSO = false
        h.clock.advance(by: 1)
        let offered = try h.sendSuperFrame()
        #expect(offered > 0 && h.worker.withdrawnOffloads.isEmpty)
        let sent = h.transport.sent.suffix(offered)
        #expect(sent.allSatisfy { $0.segmentSize != nil }, "GSO messages, not datagrams")
        #expect(try h.sendSuperFrame() > 0)
        #expect(h.counter(.offloadsWithdrawn) == 2 && h.counter(.offloadsRetried) == 2)
        #expect(h.worker.state.statistics().totalDrops == 0, "nothing lost while refused")

        // Long after, a refusal starts from 1 s again.
        h.clock.advance(by: 600)
        h.transport.refuseGSO = true
        _ = try h.sendSuperFrame()
        h.transport.refuseGSO = false
        h.clock.advance(by: 2)
        #expect(try h.sendSuperFrame() > 0, "back to 1 s after a quiet period")

        let changes = h.changes.list.withLock { $0 }
        #expect(changes == [.withdrawn(.genericSegmentation, backOff: 1, refusals: 1), .retried(.genericSegmentation),
                            .withdrawn(.genericSegmentation, backOff: 2, refusals: 2), .retried(.genericSegmentation),
                            .withdrawn(.genericSegmentation, backOff: 1, refusals: 1), .retried(.genericSegmentation)],
                "one report per withdrawal and per retry: not per packet")
        #expect(h.clock.now - t0 == 607)
    }

    @Test func theBackOffStopsDoublingAtAMinute() throws {
        let h = try GSOHarness()
        h.transport.refuseGSO = true
        var backOffs: [Int64] = []
        for _ in 0..<9 {
            _ = try h.sendSuperFrame()
            let last = h.changes.list.withLock { $0.last }
            guard case .withdrawn(_, let backOff, _) = last else { Issue.record("no withdrawal: \(String(describing: last))"); return }
            backOffs.append(backOff)
            h.clock.advance(by: backOff + 1)
        }
        #expect(backOffs == [1, 2, 4, 8, 16, 32, 60, 60, 60])
        #expect(h.counter(.offloadsWithdrawn) == 9 && h.counter(.offloadsRetried) == 8)
    }

    /// A TAP that refuses super-frames, then takes them again: joining pauses for the back-off,
    /// then resumes, and no segment is lost or reordered in between.
    @Test func joiningSegmentsResumesAfterTheTAPsRefusalBackOff() throws {
        let h = try Harness(virtio: true)
        h.device.refuseSuperFrames = true
        func segments(_ batch: Int, count: Int = 8) -> [[UInt8]] {
            (0..<count).map { i in
                let n = count * batch + i
                return FrameBuilder.frame(destinationMAC: localMAC, sourceMAC: VirtioTests.remote, identification: UInt16(n),
                                          payload: .tcp(sourcePort: 5201, destinationPort: 40000, sequence: UInt32(1 + 1000 * n),
                                                        acknowledgment: 9, flags: TCP.ack, data: FrameBuilder.pattern(1000, seed: UInt8(n))))
            }
        }
        func deliver(_ batch: Int) throws -> [[UInt8]] {
            let before = h.device.written.count
            try h.ingress(segments(batch).map { (h.tunnelPacket($0, from: peer4a), peer4a) })
            return Array(h.device.written[before...])
        }
        let empty = [UInt8](repeating: 0, count: 10)
        #expect(try deliver(0) == segments(0).map { empty + $0 }, "refused: written as it came")
        #expect(!h.worker.joinsSegments && h.counter(.offloadsWithdrawn) == 1)
        h.clock.advance(by: 1)
        #expect(try deliver(1) == segments(1).map { empty + $0 }, "within the back-off: not joined")
        h.device.refuseSuperFrames = false
        h.clock.advance(by: 1)
        let joined = try deliver(2)
        #expect(joined.count == 1 && h.worker.joinsSegments, "joined again once the back-off passed")
        #expect(joined.first.map { Array($0[64...]) } == segments(2).flatMap { Array($0[54...]) })
        #expect(h.device.refusedWrites == 1)
        #expect(h.counter(.offloadsWithdrawn) == 1 && h.counter(.offloadsRetried) == 1)
        #expect(h.statistics.totalDrops == 0)
    }
}
