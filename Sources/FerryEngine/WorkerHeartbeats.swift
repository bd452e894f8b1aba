import Atomics
import Foundation

/// One count per worker of the turns its loop has made, so that a thread off the packet path
/// (the service watchdog) can tell a live worker from one that is wedged: a worker turns at
/// least every tenth of a second (its poll times out), so one whose count has not moved for
/// seconds is stuck in a step (a blocked call, a livelock) or gone.
///
/// Each worker writes only its own count, in a cache line of its own, with a relaxed load and
/// store (no read-modify-write): a turn of the loop costs no more than that.
public final class WorkerHeartbeats: @unchecked Sendable {
    public let workers: Int
    /// `stride` words apart, so that no two workers' counts share a cache line.
    let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>
    static var stride: Int { 16 }

    public init(workers: Int) {
        precondition(workers >= 1)
        self.workers = workers
        storage = .allocate(capacity: workers * Self.stride)
        storage.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: workers * Self.stride)
    }

    deinit { storage.deallocate() }

    func count(_ w: Int) -> UnsafeAtomic<UInt64> { UnsafeAtomic(at: storage + w * Self.stride) }

    /// Worker `w` made a turn of its loop. Only worker `w`'s thread calls it.
    @inline(__always)
    public func beat(worker w: Int) {
        let c = count(w)
        c.store(c.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// Every worker's count now.
    public func counts() -> [UInt64] { (0..<workers).map { count($0).load(ordering: .relaxed) } }

    /// Whether every worker has made at least one turn (each is forwarding).
    public var allStarted: Bool { counts().allSatisfy { $0 > 0 } }

    /// Compares the counts with those of the previous check (the first compares with the
    /// start): the workers whose count has not moved since. For one checking thread at a time
    /// (a lock keeps two from interleaving).
    public final class Watch: @unchecked Sendable {
        let heartbeats: WorkerHeartbeats
        var last: [UInt64]
        let lock = NSLock()

        public init(_ heartbeats: WorkerHeartbeats) {
            self.heartbeats = heartbeats
            last = [UInt64](repeating: 0, count: heartbeats.workers)
        }

        /// The indices of the workers that made no turn since the last check.
        public func stalledWorkers() -> [Int] {
            lock.withLock {
                let now = heartbeats.counts()
                defer { last = now }
                return now.indices.filter { now[$0] == last[$0] }
            }
        }
    }
}
