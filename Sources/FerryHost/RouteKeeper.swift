import FerryWire
import Foundation

/// Keeps the routes to peers' container subnets in step with the peers of a running Ferry:
/// the control side calls `peerAdded` and `peerRemoved` as peers come and go (`ferry ctl peer
/// add`, a reload), and each call changes the routes and the record at once. Safe to call from
/// any thread; calls are applied one at a time. Needs CAP_NET_ADMIN when it changes a route.
public final class RouteKeeper: @unchecked Sendable {
    private let setup: HostSetup
    private let lock = NSLock()
    /// The layout as the peers stand now (under `lock`).
    private var layout: SetupLayout

    public init(layout: SetupLayout, store: SetupRecordStore) {
        self.layout = layout
        setup = HostSetup(store: store)
    }

    /// The layout as the peers stand now.
    public var current: SetupLayout { lock.withLock { layout } }

    /// The routes Ferry has installed, by its record (for `ferry ctl stats` to report).
    public var installed: [RouteEntry] { lock.withLock { (try? setup.store.load().routes) ?? [] } }

    /// A peer joined (or its subnet changed): installs its subnet's route, replacing Ferry's old
    /// one. A peer without a subnet needs no route, and loses the one Ferry made for it.
    /// Returns the steps taken; on an error the routes and the layout stay as they were.
    @discardableResult
    public func peerAdded(address: IPAddress, subnet: IPPrefix?, target: PeerRoute.Target = .bridge)
        throws(SetupError) -> [SetupStep] {
        lock.lock()
        defer { lock.unlock() }
        var next = layout
        next.routes.removeAll { $0.peer == address }
        if let subnet { next.routes.append(PeerRoute(peer: address, subnet: subnet, target: target)) }
        return try change(to: next)
    }

    /// A peer left: removes its subnet's route if Ferry made it. Returns the steps taken.
    @discardableResult
    public func peerRemoved(address: IPAddress) throws(SetupError) -> [SetupStep] {
        lock.lock()
        defer { lock.unlock() }
        var next = layout
        next.routes.removeAll { $0.peer == address }
        return try change(to: next)
    }

    /// Only the routes change: the bridge and its address are set-up's, made at start.
    private func change(to next: SetupLayout) throws(SetupError) -> [SetupStep] {
        let steps = try setup.planSetup(next).filter {
            switch $0 {
            case .addRoute, .deleteRoute: true
            default: false
            }
        }
        try setup.apply(steps)
        layout = next
        return steps
    }
}
