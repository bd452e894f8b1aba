import FerryEngine
import Foundation
import Testing

@Suite struct WorkerHeartbeatsTests {
    /// A worker that turns is alive at each check; one that stops turning is named at the next
    /// check, and alive again once it turns.
    @Test func aWorkerThatStopsTurningIsNamed() {
        let beats = WorkerHeartbeats(workers: 3)
        #expect(!beats.allStarted)
        let watch = WorkerHeartbeats.Watch(beats)
        #expect(watch.stalledWorkers() == [0, 1, 2])
        for w in 0..<3 { beats.beat(worker: w) }
        #expect(beats.allStarted)
        #expect(watch.stalledWorkers() == [])
        beats.beat(worker: 0)
        beats.beat(worker: 2)
        #expect(watch.stalledWorkers() == [1])
        beats.beat(worker: 1)
        #expect(watch.stalledWorkers() == [0, 2])
        #expect(beats.counts() == [2, 2, 2])
    }

    /// Workers beating on their own threads while another checks: every count ends exact.
    @Test func countsAreEachWorkersOwn() async {
        let beats = WorkerHeartbeats(workers: 4)
        await withTaskGroup(of: Void.self) { group in
            for w in 0..<4 { group.addTask { for _ in 0..<100_000 { beats.beat(worker: w) } } }
            group.addTask { for _ in 0..<100 { _ = beats.counts() } }
        }
        #expect(beats.counts() == [100_000, 100_000, 100_000, 100_000])
    }
}
