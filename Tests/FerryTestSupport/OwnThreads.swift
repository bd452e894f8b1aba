import Foundation
import Testing

/// Runs a suite's tests, and the test runner's work for them, on threads of their own instead
/// of Swift's cooperative pool (`@Suite(.serialized, .ownThreads)`).
///
/// For suites whose tests block: the live labs, which wait on processes and sleep for seconds.
/// A test function that is not `async` runs on whatever thread calls it, and the pool has one
/// thread per core: on a two-core machine, two blocking tests hold the whole pool, and every
/// other test (the labs' next one included) waits for them. Measured in CI's one `swift test`
/// process: the labs' first test (5 s alone) took 52 s, waiting for the unit tests ahead of it.
///
/// Each job gets a new thread, so that a blocking test can never hold up a job it waits for.
/// Meant for serialized suites: a suite that runs its tests in parallel would get a thread per
/// test, however many. Not for a suite whose code under test starts tasks of its own (`Task {}`
/// does not inherit the preference): those still wait for the pool, while the test's deadlines
/// run (the etcd client's watch tests failed so).
public struct OwnThreads: SuiteTrait, TestScoping {
    public var isRecursive: Bool { false }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        // The suite's scope covers its tests: they are child tasks, which inherit the preference.
        try await withTaskExecutorPreference(ThreadPerJobExecutor.shared) { try await function() }
    }
}

extension Trait where Self == OwnThreads {
    /// The suite's tests run on threads of their own, off Swift's cooperative pool.
    public static var ownThreads: Self { OwnThreads() }
}

/// A task executor that runs each job on a new thread (8 MiB of stack, as the main thread's).
public final class ThreadPerJobExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = ThreadPerJobExecutor()

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let thread = Thread { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
