// BatchTimings: a worker records batch times while the control side reads them. Readings
// under a recording thread must each be a consistent whole (ThreadSanitizer-clean: CI's TSan
// run covers this suite), lose nothing and count nothing twice.

import Atomics
@testable import FerryEngine
import FerryLinux
import Foundation
import Testing

@Suite("BatchTimings")
struct BatchTimingsTests {
    /// A thread that plays the worker: `batches` batches (each a boundary, then one egress and
    /// one ingress time), then boundaries only until told to stop.
    final class Recorder: @unchecked Sendable {
        let timings: BatchTimings
        let recorded = ManagedAtomic<Int>(0)
        let stop = ManagedAtomic<Bool>(false)
        let finished = DispatchSemaphore(value: 0)

        init(_ timings: BatchTimings, batches: Int) {
            self.timings = timings
            Thread { [self] in
                for i in 1...batches {
                    timings.passBoundary()
                    timings.recordEgress(Int64(i % 1000 + 1))  // 1 … 1000 ns, evenly
                    timings.recordIngress(5_000)
                    recorded.store(i, ordering: .releasing)
                }
                while !stop.load(ordering: .acquiring) {
                    timings.passBoundary()
                    usleep(200)
                }
                finished.signal()
            }.start()
        }

        func finish() {
            stop.store(true, ordering: .releasing)
            finished.wait()
        }
    }

    @Test("readings while a thread records are consistent, grow, and end exact")
    func readingsUnderARecordingThread() {
        let timings = BatchTimings()
        let batches = 200_000
        let recorder = Recorder(timings, batches: batches)
        var last: UInt64 = 0, readings = 0
        while recorder.recorded.load(ordering: .acquiring) < batches {
            let r = timings.reading(timeoutMilliseconds: 2000)
            // Each bank is handed over between batches: egress and ingress counts agree.
            #expect(r.egress.totalCount == r.ingress.totalCount)
            #expect(r.egress.totalCount >= last)
            #expect(r.egress.totalCount <= UInt64(batches))
            last = r.egress.totalCount
            readings += 1
        }
        // The last batches are handed over at the recorder's next boundary.
        let final = timings.reading(timeoutMilliseconds: 5000)
        recorder.finish()
        #expect(final.current)
        #expect(final.egress.totalCount == UInt64(batches))
        #expect(final.ingress.totalCount == UInt64(batches))
        #expect(final.egress.valuesAreEquivalent(final.egress.max, 1000))
        #expect(final.ingress.valuesAreEquivalent(final.ingress.valueAtPercentile(50), 5_000))
        // Evenly spread over 1 … 1000: the median within HdrHistogram's 1 % of 500.
        #expect(abs(Int(final.egress.valueAtPercentile(50)) - 500) <= 10)
        #expect(readings >= 1)
        // Nothing more to hand over: a reading now is the same, and current.
        let again = timings.reading(timeoutMilliseconds: 100)
        #expect(again.egress.totalCount == UInt64(batches) && !again.current)
    }

    @Test("a worker that does not reach a boundary in time counts in the next reading")
    func lateWorkerCountsNextTime() {
        let timings = BatchTimings()
        timings.recordEgress(2_000)
        timings.recordEgress(3_000)
        // No boundary passed: the reading gives up, with nothing, and says so.
        let early = timings.reading(timeoutMilliseconds: 20)
        #expect(!early.current && early.egress.totalCount == 0)
        // The worker answers the request still pending; the next reading takes that bank.
        timings.passBoundary()
        timings.recordEgress(4_000)  // into the other bank: for a later reading
        let later = timings.reading(timeoutMilliseconds: 20)
        #expect(later.egress.totalCount == 2)
        #expect(later.egress.valuesAreEquivalent(later.egress.max, 3_000))
        let thread = Thread { for _ in 0..<400 { timings.passBoundary(); usleep(1000) } }
        thread.start()
        let last = timings.reading(timeoutMilliseconds: 2000)
        #expect(last.current && last.egress.totalCount == 3)
    }

    /// What `ctl stats` reads: the engine hands the banks over once a second (`handOver`), and
    /// a reading that does not wait gets what was handed over, never blocking on a worker (a
    /// flood of stats requests used to wait half a second each, and starved the control loop).
    @Test("hand-overs once a second make readings that never wait")
    func handOversFeedReadingsThatDoNotWait() {
        let timings = BatchTimings()
        timings.recordEgress(2_000)
        #expect(timings.reading(timeoutMilliseconds: 0).egress.totalCount == 0, "nothing handed over yet")
        BatchTimings.handOver([timings])
        timings.passBoundary()  // the worker's next boundary: bank handed over
        timings.recordEgress(3_000)
        BatchTimings.handOver([timings])  // takes it, asks again
        #expect(timings.reading(timeoutMilliseconds: 0).egress.totalCount == 1)
        timings.passBoundary()
        BatchTimings.handOver([timings])
        let r = timings.reading(timeoutMilliseconds: 0)
        #expect(r.egress.totalCount == 2 && r.egress.valuesAreEquivalent(r.egress.max, 3_000))
    }

    @Test("worker steps time their batches; ctl's statistics carry them")
    func stepsAreTimed() throws {
        let h = try Harness()
        for _ in 0..<3 { try h.egress(arpRequest(from: localMAC)) }
        let packet = h.tunnelPacket(remoteFrame(), from: peer4a)
        try h.ingress([(packet, peer4a), (packet, peer4a)])
        // The reading's request is served at the next step's boundary: step on another thread.
        let worker = h.worker
        let stepping = Thread { for _ in 0..<200 { _ = try? worker.egressStep(); usleep(2000) } }
        stepping.start()
        let s = h.worker.state.statistics(includingBatchTimes: true, batchTimesWait: 2000)
        let w = try #require(s.workers.first)
        #expect(w.batchTimesCurrent == true)
        #expect(w.egressBatchTimes?.batches == 3)
        #expect(w.ingressBatchTimes?.batches == 1)
        let times = try #require(w.egressBatchTimes)
        #expect(times.p50 > 0 && times.p50 <= times.p99 && times.p99 <= times.maximum)
        // The batch sizes come from the buckets /metrics exports.
        #expect(w.egressBatches?.percentile(50) == 1 && w.ingressBatches?.percentile(100) == 2)
        // Without asking, none (what /metrics and the periodic log read).
        #expect(h.statistics.workers.first?.egressBatchTimes == nil)
    }
}
