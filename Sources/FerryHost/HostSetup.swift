import FerryLinux
import Foundation

/// Plans and applies set-up and teardown on this host (the calling thread's namespace),
/// keeping the record in step: it is written after every step, so that a failure half way
/// leaves a record of exactly what was made.
public struct HostSetup: Sendable {
    public let store: SetupRecordStore

    public init(store: SetupRecordStore) { self.store = store }

    /// What `setup` would change now.
    public func planSetup(_ layout: SetupLayout) throws(SetupError) -> [SetupStep] {
        try SetupPlan.setup(layout, state: try Self.readState(), record: try store.load())
    }

    /// What `teardown` would change now.
    public func planTeardown() throws(SetupError) -> [SetupStep] {
        SetupPlan.teardown(try store.load(), state: try Self.readState())
    }

    /// Plans and applies set-up; returns the steps taken (none: the host was as asked).
    @discardableResult
    public func setup(_ layout: SetupLayout) throws(SetupError) -> [SetupStep] {
        try apply(try planSetup(layout))
    }

    /// Plans and applies teardown; returns the steps taken. The record is gone afterwards.
    @discardableResult
    public func teardown() throws(SetupError) -> [SetupStep] {
        let steps = try apply(try planTeardown())
        // Whatever the record still lists is gone already (deleted by hand, or with its bridge).
        try store.save(SetupRecord())
        return steps
    }

    /// Applies `steps` in order, noting each in the record as it succeeds; stops at the first
    /// failure, whose error names the step.
    @discardableResult
    public func apply(_ steps: [SetupStep]) throws(SetupError) -> [SetupStep] {
        guard !steps.isEmpty else { return [] }
        var record = try store.load()
        for step in steps {
            do {
                try step.apply()
            } catch {
                throw SetupError("\(error)" + (record.created.isEmpty ? "" : " (what was made so far is recorded in \(store.path))"))
            }
            record.note(step)
            try store.save(record)
        }
        return steps
    }

    public static func readState() throws(SetupError) -> HostState {
        do {
            return try HostState.read()
        } catch {
            throw SetupError("cannot read the host's links, addresses and routes: \(error)")
        }
    }
}
