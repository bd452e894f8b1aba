import FerryEtcd
import Foundation

/// Consumes a watch in a task of its own, keeping its events and how it ended, so that a test
/// waits for them with a deadline (a watch that never yields cannot hang the test).
///
/// `@unchecked Sendable`: `events` and `ending` change only under `lock`.
final class WatchRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [EtcdWatchEvent] = []
    private var ending: Result<Void, any Error>?
    private var task: Task<Void, Never>?

    init(_ stream: AsyncThrowingStream<EtcdWatchBatch, any Error>) {
        task = Task {
            do {
                for try await batch in stream {
                    self.lock.withLock { self.received += batch.events }
                }
                self.lock.withLock { self.ending = .success(()) }
            } catch {
                self.lock.withLock { self.ending = .failure(error) }
            }
        }
    }

    /// The events so far, once there are `count` of them or `timeout` seconds passed.
    func events(count: Int, timeout: Double = 10) async -> [EtcdWatchEvent] {
        _ = await wait(timeout) { $0.received.count >= count }
        return lock.withLock { received }
    }

    /// How the watch ended (nil if it had not within `timeout` seconds).
    func end(timeout: Double = 15) async -> Result<Void, any Error>? {
        _ = await wait(timeout) { $0.ending != nil }
        return lock.withLock { ending }
    }

    /// The error that ended the watch within `timeout`, as an `EtcdError`.
    func error(timeout: Double = 15) async -> EtcdError? {
        if case .failure(let error) = await end(timeout: timeout) { return error as? EtcdError }
        return nil
    }

    func cancel() { task?.cancel() }

    deinit { task?.cancel() }

    private func wait(_ timeout: Double, _ condition: (WatchRecorder) -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lock.withLock({ condition(self) }) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return lock.withLock { condition(self) }
    }
}

extension EtcdError {
    var isUnavailable: Bool { if case .unavailable = self { true } else { false } }
}
