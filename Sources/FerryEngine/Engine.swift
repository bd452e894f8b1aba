import Atomics
import FerryCapture
import FerryLinux
import FerryWire
import Foundation
import Logging

/// What `ferry run` sets up: the TAP on its bridge, the sockets, and the workers that move
/// frames until `stop()`. Each worker is one thread with a TAP queue and a receiving socket of
/// its own, carrying both directions. Flows are spread over the workers by hash — on the way
/// out by the TAP's steering program (`TAPDevice.steerByFlow`), on the way in by SO_REUSEPORT —
/// so each direction of a flow stays on one worker and is never reordered.
///
/// `@unchecked Sendable`: `linkStates` is touched by `init`, then by the next-hop thread only;
/// `seen` by the surroundings thread only;
/// `failures` only under `failureLock`; everything else is immutable or atomic.
public final class Engine: @unchecked Sendable {
    public typealias LiveWorker = Worker<TAPDevice, SocketTransport>

    /// The workers, sharing `state`; each runs on a thread of its own.
    public let workers: [LiveWorker]
    public let state: ForwardingState
    /// The first worker's TAP queue (the device's name, offloads and MTU are the same for all).
    public let tap: TAPDevice
    public let tapMTU: Int
    /// The offloads in use (those asked for that the kernel took and that apply to the tunnel),
    /// and why each other one asked for is not.
    public let offloads: OffloadResolution
    public let configuration: EngineConfiguration
    /// The capture the workers feed, if any: its writer runs from `start()` to `wait()`.
    public let capture: CaptureTap?
    /// The bridge the TAP was put on (`--bridge`), which it must stay a port of.
    public let bridge: String?
    /// Each worker's turns of its loop, for a watchdog off the packet path (`ServiceNotifier`).
    public let heartbeats: WorkerHeartbeats
    let logger: Logger
    let stopping = ManagedAtomic<Bool>(false)
    /// A peer was added: the next-hop thread looks its link path up now, not at its next second.
    let nextHopsDue = ManagedAtomic<Bool>(false)
    /// Signalled by `stop()` and by a thread that ends on an error: `waitUntilStopping` wakes.
    let stopped = DispatchSemaphore(value: 0)
    /// What the last next-hop lookup said about each peer, so that a change is logged once.
    /// Touched by `init` and then only by the refreshing thread, which `start` creates.
    var linkStates: [IPAddress: String] = [:]
    /// What the surroundings thread saw last (`Engine+Surroundings.swift`), so that a change
    /// is logged once.
    var seen = Surroundings()
    let finished = DispatchGroup()
    var failures: [String] = []
    let failureLock = NSLock()

    /// Workers by default: one per core this process may run on.
    public static var defaultWorkers: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Where the TAP goes and how big its frames are.
    public struct DeviceOptions: Sendable {
        public var tapName: String
        public var bridge: String?
        public var persistent = false
        /// nil: the underlay MTU less the encapsulation overhead.
        public var mtu: Int?
        /// The offloads to use where the kernel takes them: checksum, TCP and UDP segmentation
        /// on the TAP (a virtio-net header on each frame), UDP GSO and GRO on the sockets.
        public var offloads: Offloads
        /// Worker threads, each with a queue of the TAP (IFF_MULTI_QUEUE when more than one);
        /// nil: `Engine.defaultWorkers`.
        public var workers: Int?
        public init(tapName: String, bridge: String? = nil, persistent: Bool = false, mtu: Int? = nil, offloads: Offloads = .all,
                    workers: Int? = nil) {
            self.tapName = tapName
            self.bridge = bridge
            self.persistent = persistent
            self.mtu = mtu
            self.offloads = offloads
            self.workers = workers
        }
    }

    /// Everything that can stop Ferry from starting, each with what to do about it.
    public enum SetupError: Error, CustomStringConvertible {
        case addressNotLocal(IPAddress)
        case system(LinuxError)
        case options(TunnelOptionsError)
        case configuration(ConfigurationError)
        case capture(CaptureError)
        case invalid(String)

        public var description: String {
            switch self {
            case .addressNotLocal(let a):
                "local address \(a) is not configured on any interface of this host; give --local one of the addresses `ip -br addr` lists"
            case .system(let e): e.description
            case .options(let e): e.description
            case .configuration(let e): e.description
            case .capture(let e): e.description
            case .invalid(let s): s
            }
        }
    }

    public init(configuration: EngineConfiguration, device: DeviceOptions, capture: CaptureTap?,
                logger: Logger) throws(SetupError) {
        self.logger = logger
        self.configuration = configuration
        self.capture = capture
        self.bridge = device.bridge
        // The options that contradict each other, for every user of the library (`ferry run`
        // has said so before it gets here).
        do { try configuration.check(device: device) } catch { throw .configuration(error) }
        guard let underlay = NetworkInterface.holding(configuration.local) else {
            throw .addressNotLocal(configuration.local)
        }
        var count = max(1, device.workers ?? Self.defaultWorkers)
        if case .gre(let g) = configuration.encapsulation, g.sequence, count > 1 {
            // Sequence numbers are one count per peer, in sending order: one sender keeps it.
            logger.notice("GRE sequence numbers need one sending thread: running 1 worker instead of \(count)")
            count = 1
        }
        do {
            var limits = DataPathLimits(configuration: configuration,
                                        underlayMTU: try configuration.underlayMTU ?? NetworkInterface(underlay).mtu(),
                                        localMAC: (try? NetworkInterface(underlay).macAddress()) ?? .zero)
            let madeHere = !NetworkInterface(device.tapName).exists
            let opened = try Self.openTAP(device, workers: count, logger: logger)
            let tap = opened.tap
            count = opened.workers
            var queues = [tap]
            for _ in 1..<count {
                queues.append(try TAPDevice(name: tap.name, offloads: device.offloads.tapFlags, multiQueue: true))
            }
            if count > 1 {
                do {
                    try tap.steerByFlow()
                } catch {
                    logger.notice("""
                        TAP queues are chosen by the kernel (a one-way flow may move to another worker after 3 s): \(error)
                        """)
                }
            }
            let link = NetworkInterface(tap.name)
            if madeHere {
                // Before it joins the bridge: a bridge made without a MAC of its own takes its
                // lowest port's, so a TAP with a new random MAC at each start could change the
                // bridge's, and the containers' ARP entries for their gateway would go stale.
                let mac = Self.stableMAC(tap: tap.name, local: configuration.local)
                do { try link.setMACAddress(mac) } catch { logger.notice("\(tap.name) keeps the kernel's random MAC: \(error)") }
            }
            let mtu = device.mtu ?? limits.defaultTAPMTU(configuration)
            guard mtu >= 68 else {
                throw SetupError.invalid("the underlay MTU \(limits.underlayMTU) leaves no room for frames after \(configuration.ipOverhead) bytes of encapsulation; raise it")
            }
            try link.setMTU(mtu)
            if let bridge = device.bridge { try link.attach(toBridge: bridge) }
            try link.setUp()
            // With TSO the TAP hands over super-frames of up to 64 KiB.
            // So does a GRO socket, whatever the TAP: a receive may hold 64 KiB of datagrams.
            let taken = Offloads(tapFlags: tap.offloads)
            let joinsDatagrams: Bool
            if case .vxlan = configuration.encapsulation { joinsDatagrams = device.offloads.contains(.genericReceive) } else { joinsDatagrams = false }
            let big = joinsDatagrams || !taken.isDisjoint(with: [.tcpSegmentation, .udpSegmentation])
            limits.maximumFrame = (big ? 65535 : max(mtu, limits.underlayMTU))
                + Ethernet.headerLength + Ethernet.vlanTagLength + VirtioNetHeader.length
            limits.joinsReceivedSegments = device.offloads.contains(.genericReceive)
            limits.tapMTU = mtu
            let gsoBlocker = configuration.udpSegmentationBlocker(capturingOuter: capture?.outer == true)
            let udpSenders = device.offloads.contains(.genericSegmentation) && gsoBlocker == nil ? 8 : 0
            let state = try ForwardingState(configuration: configuration, limits: limits, workers: count)
            let options = try state.tunnelOptions(remote: configuration.peers.first ?? configuration.local)
            let receivers = try SocketTransport.receivers(options: options, workers: count)
            let deviceMAC = try link.macAddress()
            var workers: [LiveWorker] = []
            for w in 0..<count {
                let transport = try SocketTransport(options: options, receiver: receivers[w], udpSenders: udpSenders,
                                                    sharedPorts: count > 1, gro: device.offloads.contains(.genericReceive),
                                                    link: configuration.grePath == .link)
                workers.append(try LiveWorker(configuration: configuration, device: queues[w], transport: transport,
                                                 deviceMAC: deviceMAC, capture: capture, state: state, index: w,
                                                 onOffloadChange: { [logger] in Self.logOffloadChange($0, worker: w, logger) }))
            }
            self.tap = tap
            self.tapMTU = mtu
            self.offloads = Self.resolve(asked: device.offloads, tap: tap, worker: workers[0], gsoBlocker: gsoBlocker,
                                         encapsulation: configuration.encapsulation)
            self.state = state
            self.workers = workers
            self.heartbeats = WorkerHeartbeats(workers: workers.count)
            // The first packets take the link path if the next hops are known already.
            if workers[0].transport.hasLinkSender { refreshNextHops() }
        } catch let e as SetupError {
            throw e
        } catch let e as LinuxError {
            throw .system(e)
        } catch let e as TunnelOptionsError {
            throw .options(e)
        } catch {
            throw .invalid("\(error)")
        }
    }

    /// The offloads in use once the TAP and the sockets are open, and why each other one asked
    /// for is not: decided here once, for the log and `ferry run`'s start-up notices.
    static func resolve(asked: Offloads, tap: TAPDevice, worker: LiveWorker, gsoBlocker: UDPSegmentationBlocker?,
                        encapsulation: Encapsulation) -> OffloadResolution {
        var inUse = Offloads(tapFlags: tap.offloads)
        if worker.transport.udpSenderCount > 0 { inUse.insert(.genericSegmentation) }
        if asked.contains(.genericReceive), worker.transport.receivesGRO || worker.joinsSegments { inUse.insert(.genericReceive) }
        var gre = false
        if case .gre = encapsulation { gre = true }
        var notInUse: [(offload: Offloads, reason: String)] = []
        for (_, offload) in Offloads.names where asked.contains(offload) && !inUse.contains(offload) {
            let reason: String
            switch offload {
            case .genericSegmentation:
                if gre { continue }  // never GRE's: `on` asks for it, and it does not apply
                reason = gsoBlocker?.description ?? "no UDP socket could be bound in the source-port range"
            case .genericReceive where gre: reason = "the TAP has no virtio-net header to join segments behind (add csum)"
            case .genericReceive: reason = "the kernel refused UDP_GRO, and the TAP has no virtio-net header to join segments behind"
            case .udpSegmentation: reason = "the TAP refused it (USO needs Linux 6.2)"
            default: reason = "the TAP refused it"
            }
            notInUse.append((offload, reason))
        }
        return OffloadResolution(inUse: inUse, notInUse: notInUse)
    }

    /// Logs, once per worker, an offload the kernel refused at run time.
    static func logOffloadChange(_ change: OffloadChange, worker: Int, _ logger: Logger) {
        // At most one line per offload and worker per back-off (1 s, doubling up to 60 s).
        switch change {
        case .withdrawn(let offload, let backOff, let refusals):
            let what = switch offload {
            case .genericSegmentation: "the kernel refused a UDP GSO send; sending a datagram at a time"
            case .genericReceive: "the TAP refused a super-frame; writing segments as they came"
            default: "the kernel refused offload \(offload); not using it"
            }
            let again = refusals > 1 ? " (refused \(refusals) times in a row)" : ""
            logger.notice("worker \(worker): \(what) for \(backOff) s, then trying again\(again)")
        case .retried(let offload):
            logger.info("worker \(worker): trying offload \(offload) again")
        }
    }

    /// The MAC of a TAP Ferry makes: the same at every start on a host (derived from the TAP's
    /// name and the local underlay address, which differ between hosts and between ferries on
    /// one host), locally administered and unicast. A TAP that existed before keeps its own.
    public static func stableMAC(tap: String, local: IPAddress) -> MACAddress {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a, 64 bits
        for byte in "ferry tap \(tap) \(local)".utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return MACAddress(value: hash & 0xFEFF_FFFF_FFFF | 0x0200_0000_0000)
    }

    /// The TAP's first queue (multi-queue for several workers). A persistent single-queue TAP
    /// made earlier (`ip tuntap add` without `multi_queue`) keeps working with one worker,
    /// unless workers were asked for by number.
    static func openTAP(_ device: DeviceOptions, workers: Int, logger: Logger) throws(LinuxError) -> (tap: TAPDevice, workers: Int) {
        do {
            return (try TAPDevice(name: device.tapName, persistent: device.persistent, offloads: device.offloads.tapFlags,
                                  multiQueue: workers > 1), workers)
        } catch let e where e.errno == .invalidArgument && workers > 1 && device.workers == nil {
            let tap = try TAPDevice(name: device.tapName, persistent: device.persistent, offloads: device.offloads.tapFlags)
            logger.notice("""
                \(device.tapName) is a single-queue TAP: running 1 worker instead of \(workers) \
                (recreate it with `ip tuntap add \(device.tapName) mode tap multi_queue` for more)
                """)
            return (tap, 1)
        }
    }

    /// Every counter now, summed over the workers.
    public func statistics() -> Statistics { state.statistics() }

    /// The forwarding table's live entries.
    public func forwardingEntries() -> [FDBEntry] { state.forwardingEntries() }

    /// Detaches a capture attached at run time (`state.captures.attach`, `ferry ctl capture`);
    /// returns the version `state.captures.workersHaveSeen` must reach before its rings are
    /// final. (An outer capture attached while VXLAN goes through UDP senders records each
    /// datagram with rebuilt headers, `Worker.recordSentUDP`: the send path does not change.)
    @discardableResult
    public func detachCapture(_ capture: CaptureAttachment) -> Int { state.captures.detach(capture) }

    /// Starts one thread per worker: it moves a batch each way, and sleeps on both its TAP
    /// queue and its socket when neither had anything.
    public func start() {
        capture?.start(logger: logger)
        if workers[0].transport.hasLinkSender {
            spawn("next-hops") { [self] in
                var ticks = 0
                while ticks < 10 && !isStopping && !nextHopsDue.exchange(false, ordering: .relaxed) {
                    Scheduling.sleep(milliseconds: 100)
                    ticks += 1
                }
                if !isStopping { refreshNextHops() }
            }
        }
        // Once a second, as the next hops: the underlay's MTU (an MTU change is rare, and a
        // second of oversize drops, answered with ICMP, is what PMTU discovery costs anyway),
        // and what else may change under Ferry (`Engine+Surroundings.swift`).
        spawn("surroundings") { [self] in
            var ticks = 0
            while ticks < 10 && !isStopping {
                Scheduling.sleep(milliseconds: 100)
                ticks += 1
            }
            if !isStopping {
                // Removed peers' slots cleared and given back, their memory freed.
                state.settlePeerChanges()
                // Each worker's batch times handed over at its next batch boundary, so that a
                // `ctl stats` (which never waits on a worker) shows them at most a second old.
                BatchTimings.handOver(state.batchTimings)
                try watchSurroundings()
            }
        }
        for f in workers {
            let tapFD = f.device.pollDescriptor, socketFD = f.transport.pollDescriptor
            spawn("worker-\(f.index)") { [heartbeats] in
                heartbeats.beat(worker: f.index)
                let moved = try f.egressStep() + f.ingressStep()
                if f.index == 0 { f.state.agePeers() }
                if moved == 0 {
                    // A tenth of a second at most, so that a stop is noticed; holding no
                    // peer meanwhile, so that peers that leave their slots can be freed.
                    f.peers.goOffline(worker: f.index)
                    Poller.waitReadable(tapFD, socketFD, milliseconds: 100)
                }
            }
        }
    }

    /// Points each peer's link path at its next hop as the kernel's tables have it now, or
    /// back at the IP path; asks the kernel to confirm neighbours it has not lately.
    func refreshNextHops() {
        let peers = state.peers.all
        // Peers come and go (learned ones age out): keep what was said of those still here.
        let here = Set(peers.map(\.address))
        linkStates = linkStates.filter { here.contains($0.key) }
        for peer in peers where peer.isActive {
            let answer = RouteLookup.nextHop(to: peer.address, from: configuration.local)
            let said: String
            switch answer {
            case .resolved(let hop, let nextHop, let stale):
                peer.setLinkNextHop(hop)
                // Link-path packets do not tell the kernel the neighbour is alive, so it would
                // stay stale with a MAC that may no longer answer: have it probe again.
                if stale { RouteLookup.confirm(nextHop, interfaceIndex: hop.interfaceIndex) }
                said = "GRE to \(peer.address) takes the link path: \(hop)" + (nextHop == peer.address ? "" : " (gateway \(nextHop))")
            case .unresolved(let nextHop):
                peer.setLinkNextHop(nil)
                said = "GRE to \(peer.address) goes through the IP stack until its next hop \(nextHop) is resolved"
            case .notOverEthernet(let why):
                peer.setLinkNextHop(nil)
                said = "GRE to \(peer.address) goes through the IP stack: no link path (\(why))"
            case .lookupFailed(let why):
                // Nothing learned: the path stays as it was until a lookup answers.
                said = "GRE to \(peer.address): next-hop lookup failed (\(why)); keeping the path it had"
            }
            if linkStates[peer.address] != said {
                linkStates[peer.address] = said
                logger.info("\(said)")
            }
        }
    }

    func spawn(_ name: String, loop: @escaping @Sendable () throws -> Void) {
        finished.enter()
        let thread = Thread { [self] in
            defer { finished.leave() }
            Scheduling.nameCurrentThread("ferry-\(name)")
            while !stopping.load(ordering: .relaxed) {
                do {
                    try loop()
                } catch {
                    logger.error("\(name) stopped: \(error)")
                    failureLock.withLock { failures.append("\(name): \(error)") }
                    stop()
                }
            }
        }
        thread.name = "ferry-\(name)"
        thread.start()
    }

    /// Asks every thread to stop (each notices within a tenth of a second).
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        stopped.signal()
    }

    /// Waits until the engine is stopping (asked to, or a worker ended on an error), at most
    /// until `deadline`; true if it is.
    public func waitUntilStopping(deadline: DispatchTime) -> Bool {
        if isStopping { return true }
        _ = stopped.wait(timeout: deadline)
        if isStopping { stopped.signal() }  // for the next waiter
        return isStopping
    }

    public var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Waits for every worker to end; returns what made them stop, if not a request.
    public func wait() -> [String] {
        finished.wait()
        capture?.close()
        return failureLock.withLock { failures }
    }
}
