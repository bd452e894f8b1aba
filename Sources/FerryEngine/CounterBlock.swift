import Atomics

/// A fixed set of 64-bit counters with one writer (the worker thread that owns them) and any
/// number of readers (the control socket). The writer adds with a relaxed load and store — no
/// read-modify-write, no lock — and readers see each counter whole.
///
/// `@unchecked Sendable`: the storage is only ever accessed atomically, and only its owner adds.
public final class CounterBlock: @unchecked Sendable {
    public let count: Int
    @usableFromInline let storage: UnsafeMutablePointer<UnsafeAtomic<UInt64>.Storage>

    public init(count: Int) {
        self.count = count
        storage = .allocate(capacity: count)
        storage.initialize(repeating: UnsafeAtomic<UInt64>.Storage(0), count: count)
    }

    deinit { storage.deallocate() }

    /// Adds `value` to counter `index`. Only the owning thread calls this.
    @inlinable @inline(__always)
    public func add(_ index: Int, _ value: UInt64 = 1) {
        let counter = UnsafeAtomic<UInt64>(at: storage + index)
        counter.store(counter.load(ordering: .relaxed) &+ value, ordering: .relaxed)
    }

    /// Reads counter `index` from any thread.
    @inlinable
    public func value(_ index: Int) -> UInt64 {
        UnsafeAtomic<UInt64>(at: storage + index).load(ordering: .relaxed)
    }
}
