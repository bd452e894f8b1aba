// What `ferry run` serves for changes (`EngineControl`): peers added and removed with their
// subnets (and the observer that keeps routes in step told of each), static entries, and a
// reload that applies what can change live and names what needs a restart. Over a
// `ForwardingState` alone (no TAP, no worker: every removal is quiescent at once).

import FerryControl
import FerryEngine
import FerrySettings
import FerryWire
import Logging
import Synchronization
import Testing

/// The engine's API for change over a state with no worker.
final class StateEngine: ChangeableEngine {
    let state: ForwardingState
    init(_ configuration: EngineConfiguration) throws { state = try ForwardingState(configuration: configuration) }
    var isStopping: Bool { false }
    func addPeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerAddition { try state.addPeer(address) }
    func removePeer(_ address: IPAddress) throws(PeerChangeError) -> ForwardingState.PeerRemoval { try state.removePeer(address) }
    func apply(_ new: EngineConfiguration) -> ForwardingState.ConfigurationOutcome { state.apply(new) }
}

/// Every call the observer gets, in order: "+10.99.0.3=10.19.0.0/16", "-10.99.0.3".
final class RecordingObserver: PeerChangeObserver {
    let calls = Mutex<[String]>([])
    func peerAdded(_ peer: PeerSpec) throws { calls.withLock { $0.append("+\(peer)") } }
    func peerRemoved(_ peer: PeerSpec) throws { calls.withLock { $0.append("-\(peer)") } }
    func take() -> [String] { calls.withLock { c in defer { c = [] }; return c } }
}

/// Routes the peers of one prefix directly (as `--mode auto` routes the on-link ones), refuses
/// the peers of another (as `--mode routes` one not on-link), and records the rest as
/// `RecordingObserver` does.
final class DirectObserver: PeerChangeObserver {
    let recording = RecordingObserver()
    let onLink = try! IPPrefix(parsing: "10.99.0.0/24"), unreachable = try! IPPrefix(parsing: "10.98.0.0/24")
    struct NotOnLink: Error, CustomStringConvertible { var description: String { "peer is not on this host's network" } }
    func peerAdded(_ peer: PeerSpec) throws { try recording.peerAdded(peer) }
    func peerRemoved(_ peer: PeerSpec) throws { try recording.peerRemoved(peer) }
    func routesDirectly(_ peer: PeerSpec) throws -> Bool {
        if unreachable.contains(peer.address) { throw NotOnLink() }
        return onLink.contains(peer.address) && peer.subnet != nil
    }
}

/// Refuses every route change, as a route keeper whose `ip route` fails.
final class FailingObserver: PeerChangeObserver {
    struct Refused: Error, CustomStringConvertible { var description: String { "RTNETLINK answers: Operation not permitted" } }
    func peerAdded(_ peer: PeerSpec) throws { throw Refused() }
    func peerRemoved(_ peer: PeerSpec) throws { throw Refused() }
}

/// Settings as `ferry run --tap ferry0 --local 10.99.0.1 --config FILE` resolves them, FILE
/// holding `yaml`.
private func settings(_ yaml: String) throws -> RunSettings {
    var o = RunOptions()
    o.tap = "ferry0"
    o.local = "10.99.0.1"
    o.config = "/etc/ferry/test.yaml"
    return try RunSettings(options: o, file: ConfigFile(yaml: yaml, origin: "test.yaml"))
}

private func ip(_ s: String) -> IPAddress { IPAddress(s)! }

/// What the config file holds when a reload reads it.
final class NextFile: Sendable {
    let text: Mutex<String>
    init(_ text: String) { self.text = Mutex(text) }
    func set(_ t: String) { text.withLock { $0 = t } }
    var yaml: String { text.withLock { $0 } }
}

/// A control over a state started from `yaml`; `next` is what a reload reads.
private func control(_ yaml: String, next: NextFile? = nil, level: SharedLogLevel? = nil)
    throws -> (EngineControl, StateEngine, RecordingObserver) {
    let start = try settings(yaml)
    let engine = try StateEngine(start.engine)
    let observer = RecordingObserver()
    let read: (@Sendable () -> Result<RunSettings, ControlChangeRefusal>)? = next.map { next in
        { @Sendable () -> Result<RunSettings, ControlChangeRefusal> in
            do { return .success(try settings(next.yaml)) } catch {
                return .failure(ControlChangeRefusal("not reloaded, nothing changed: \(error)"))
            }
        }
    }
    let c = EngineControl(engine: engine, settings: start, observer: observer, logLevel: level, logger: Logger(label: "test"),
                          readSettings: read)
    return (c, engine, observer)
}

private let startYAML = """
    vni: 42
    subnet: 10.17.0.1/16
    peer:
      - 10.99.0.2=10.18.0.0/16
    """

@Suite("Engine control: changes at run time")
struct EngineControlTests {
    @Test("peer add and del change the engine and tell the observer, with the subnet the peer was added with")
    func observerHearsOfPeers() throws {
        let (c, engine, observer) = try control(startYAML)
        let subnet = try IPPrefix(parsing: "10.19.0.0/16")
        let added = try c.perform(.addPeer(ip("10.99.0.3"), subnet: subnet)).get()
        #expect(added.applied == ["peer 10.99.0.3 added with subnet 10.19.0.0/16"])
        #expect(engine.state.peers.configured.map(\.address) == [ip("10.99.0.2"), ip("10.99.0.3")])
        #expect(observer.take() == ["+10.99.0.3=10.19.0.0/16"])

        let removed = try c.perform(.removePeer(ip("10.99.0.3"))).get()
        #expect(removed.applied == ["peer 10.99.0.3 removed, with 0 forwarding entries"])
        #expect(observer.take() == ["-10.99.0.3=10.19.0.0/16"], "told with the subnet it had")
        _ = try c.perform(.removePeer(ip("10.99.0.2"))).get()
        #expect(observer.take() == ["-10.99.0.2=10.18.0.0/16"], "a peer of the config file too")
    }

    @Test("a route the observer cannot change is reported with the change, which stands")
    func observerFailureReported() throws {
        let start = try settings(startYAML)
        let engine = try StateEngine(start.engine)
        let c = EngineControl(engine: engine, settings: start, observer: FailingObserver(), logger: Logger(label: "test"))
        let report = try c.perform(.addPeer(ip("10.99.0.3"), subnet: try IPPrefix(parsing: "10.19.0.0/16"))).get()
        #expect(report.applied == ["peer 10.99.0.3 added with subnet 10.19.0.0/16"])
        #expect(report.failed == ["routes: RTNETLINK answers: Operation not permitted"])
        #expect(engine.state.peers.configured.count == 2)
    }

    @Test("refusals change nothing and tell nobody: a peer already there, an unknown one, an overlapping subnet, a bad entry")
    func refusals() throws {
        let (c, engine, observer) = try control(startYAML)
        func refusal(_ change: ControlChange) -> String? {
            if case .failure(let r) = c.perform(change) { return r.message }
            return nil
        }
        #expect(refusal(.addPeer(ip("10.99.0.2"), subnet: nil)) == "10.99.0.2 is a peer already")
        #expect(refusal(.removePeer(ip("10.99.0.7"))) == "10.99.0.7 is not a peer (ferry ctl stats lists them)")
        #expect(refusal(.addPeer(ip("10.99.0.3"), subnet: try IPPrefix(parsing: "10.18.128.0/17")))?
            .contains("overlaps peer 10.99.0.2's (10.18.0.0/16)") == true)
        #expect(refusal(.addPeer(ip("10.99.0.3"), subnet: try IPPrefix(parsing: "10.17.0.0/24")))?
            .contains("overlaps this host's") == true)
        let mac = MACAddress("02:42:0a:13:00:02")!
        #expect(refusal(.setEntry(mac, peer: ip("10.99.0.7")))?.contains("not a peer") == true)
        #expect(refusal(.removeEntry(mac)) == "\(mac) is not in the forwarding table")
        #expect(refusal(.reload) == "this ferry was started without --config: there is no file to reload")
        #expect(engine.state.peers.configured.count == 1)
        #expect(observer.take().isEmpty)
    }

    @Test("a peer routed directly (routes or auto mode) gets its route and never enters the engine; one that can be neither is refused")
    func directPeers() throws {
        let start = try settings(startYAML)
        let engine = try StateEngine(start.engine)
        let observer = DirectObserver()
        let c = EngineControl(engine: engine, settings: start, observer: observer, logger: Logger(label: "test"))
        let subnet = try IPPrefix(parsing: "10.19.0.0/16")
        #expect(try c.perform(.addPeer(ip("10.99.0.3"), subnet: subnet)).get().applied
                    == ["peer 10.99.0.3 routed directly (on this host's network: no tunnel) with subnet 10.19.0.0/16"])
        #expect(engine.state.peers.configured.map(\.address) == [ip("10.99.0.2")], "not in the tunnel")
        #expect(observer.recording.take() == ["+10.99.0.3=10.19.0.0/16"])
        #expect(c.peers.map(\.description) == ["10.99.0.2=10.18.0.0/16", "10.99.0.3=10.19.0.0/16"])
        guard case .failure(let again) = c.perform(.addPeer(ip("10.99.0.3"), subnet: subnet)) else { Issue.record("added twice"); return }
        #expect(again.message == "10.99.0.3 is a peer already")
        // A subnet that overlaps a direct peer's is refused as any other.
        guard case .failure(let overlap) = c.perform(.addPeer(ip("10.97.0.4"), subnet: try IPPrefix(parsing: "10.19.1.0/24"))) else {
            Issue.record("an overlapping subnet was accepted"); return
        }
        #expect(overlap.message.contains("overlaps peer 10.99.0.3's"), "\(overlap)")
        // Without a subnet there is nothing to route: the tunnel carries it.
        #expect(try c.perform(.addPeer(ip("10.99.0.4"), subnet: nil)).get().applied == ["peer 10.99.0.4 added"])
        #expect(engine.state.peers.configured.count == 2)
        // Neither routable nor allowed in the tunnel: refused, nothing changed, nobody told but the question.
        guard case .failure(let refused) = c.perform(.addPeer(ip("10.98.0.5"), subnet: try IPPrefix(parsing: "10.25.0.0/16"))) else {
            Issue.record("a peer neither mode takes was added"); return
        }
        #expect(refused.message == "peer is not on this host's network")
        _ = observer.recording.take()
        #expect(try c.perform(.removePeer(ip("10.99.0.3"))).get().applied == ["peer 10.99.0.3 removed (it was routed directly) with its route"])
        #expect(observer.recording.take() == ["-10.99.0.3=10.19.0.0/16"])
        #expect(engine.state.peers.configured.count == 2, "the engine never had it")
        guard case .failure(let gone) = c.perform(.removePeer(ip("10.99.0.3"))) else { Issue.record("removed twice"); return }
        #expect(gone.message.contains("is not a peer"))
    }

    @Test("fdb add and del set and remove a static entry")
    func staticEntries() throws {
        let (c, engine, _) = try control(startYAML)
        let mac = MACAddress("02:42:0a:12:00:02")!
        #expect(try c.perform(.setEntry(mac, peer: ip("10.99.0.2"))).get().applied == ["static entry \(mac) -> 10.99.0.2 added"])
        #expect(engine.state.staticEntries.map(\.mac) == [mac])
        #expect(try c.perform(.removeEntry(mac)).get().applied == ["static entry \(mac) removed"])
        #expect(engine.state.staticEntries.isEmpty)
    }

    @Test("reload applies peers, subnets, static entries, ageing, log level and statistics interval, and names what needs a restart")
    func reloadAppliesWhatItCan() throws {
        let next = NextFile(startYAML)
        let level = SharedLogLevel(.info)
        let (c, engine, observer) = try control(startYAML, next: next, level: level)
        _ = try c.perform(.addPeer(ip("10.99.0.5"), subnet: nil)).get()  // by ferry ctl: not in the file
        _ = observer.take()
        next.set(
            """
                vni: 43
                subnet: 10.17.0.1/16
                peer:
                  - 10.99.0.2=10.28.0.0/16
                  - address: 10.99.0.3
                    subnet: 10.19.0.0/16
                static-fdb: [02:42:0a:13:00:02=10.99.0.3]
                ageing: 60
                log-level: debug
                stats-interval: 5
                workers: 2
                """)
        let report = try c.perform(.reload).get()
        #expect(report.applied == [
            "peer 10.99.0.5 removed (0 forwarding entries with it)",
            "peer 10.99.0.2: subnet 10.18.0.0/16 -> 10.28.0.0/16",
            "peer 10.99.0.3=10.19.0.0/16 added",
            "static entry 02:42:0a:13:00:02 -> 10.99.0.3 added",
            "ageing 300 s -> 60 s",
            "log-level: info -> debug",
            "stats-interval: 10 -> 5",
        ], "\(report)")
        #expect(report.failed.isEmpty)
        #expect(report.needsRestart.count == 2 && report.needsRestart.contains("workers: none -> 2")
                    && report.needsRestart.contains { $0.hasPrefix("encapsulation:") }, "\(report.needsRestart)")
        #expect(observer.take() == ["-10.99.0.5", "-10.99.0.2=10.18.0.0/16", "+10.99.0.2=10.28.0.0/16", "+10.99.0.3=10.19.0.0/16"])
        #expect(engine.state.peers.configured.map(\.address) == [ip("10.99.0.2"), ip("10.99.0.3")])
        #expect(engine.state.ageingSeconds == 60)
        #expect(level.value == .debug)
        #expect(c.statsInterval == 5)

        // The same file again: nothing to change, and still what needs a restart.
        let again = try c.perform(.reload).get()
        #expect(again.applied.isEmpty && again.failed.isEmpty && again.needsRestart.count == 2, "\(again)")
        #expect(observer.take().isEmpty)
    }

    @Test("a reload names every membership change as needing a restart: etcd's client and lease are made at start")
    func etcdChangesNeedARestart() throws {
        let started = try settings("vni: 42\netcd: http://10.99.0.100:2379\netcd-ttl: 10\n")
        #expect(started.differencesNeedingRestart(try settings("vni: 42\netcd: http://10.99.0.100:2379\netcd-ttl: 10\n")).isEmpty)
        let changed = started.differencesNeedingRestart(try settings("""
            vni: 42
            etcd: http://10.99.0.100:2379,http://10.99.0.101:2379
            etcd-ttl: 20
            etcd-prefix: /other
            subnet-file: /run/ferry/other.env
            etcd-user: ferry
            etcd-password-file: /etc/ferry/etcd-password
            """))
        #expect(changed == [
            "etcd: http://10.99.0.100:2379 -> http://10.99.0.100:2379,http://10.99.0.101:2379",
            "etcd-prefix: /ferry/network -> /other",
            "etcd-ttl: 10 -> 20",
            "subnet-file: /run/ferry/subnet.env -> /run/ferry/other.env",
            "etcd-ca, etcd-cert, etcd-key, etcd-user or etcd-password-file changed",
        ], "\(changed)")
        #expect(started.differencesNeedingRestart(try settings("vni: 42\npeer: [10.99.0.2]\n")) == ["etcd: http://10.99.0.100:2379 -> none"])
    }

    @Test("a config file that no longer resolves changes nothing and says why")
    func brokenFileChangesNothing() throws {
        let next = NextFile("vni: 42\npeer: [10.99.0.2=10.18.0.0/16, 10.99.0.3=10.18.0.0/24]\n")
        let (c, engine, observer) = try control(startYAML, next: next)
        guard case .failure(let refusal) = c.perform(.reload) else { Issue.record("reloaded a file with overlapping subnets"); return }
        #expect(refusal.message.contains("overlap"), "\(refusal)")
        next.set("vni: [42\n")
        guard case .failure = c.perform(.reload) else { Issue.record("reloaded a file that is not YAML"); return }
        #expect(engine.state.peers.configured.map(\.address) == [ip("10.99.0.2")])
        #expect(observer.take().isEmpty)
    }
}
