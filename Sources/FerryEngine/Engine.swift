import Atomics
import FerryCapture
import FerryLinux
import FerryWire
import Foundation
import Logging

/// What `ferry run` sets up: the TAP on its bridge, the sockets, the forwarder, and the two
/// threads that drive it until `stop()`.
public final class Engine: @unchecked Sendable {
    public typealias LiveForwarder = Forwarder<TAPDevice, SocketTransport>

    public let forwarder: LiveForwarder
    public let tap: TAPDevice
    public let tapMTU: Int
    let logger: Logger
    let stopping = ManagedAtomic<Bool>(false)
    let finished = DispatchGroup()
    var failures: [String] = []
    let failureLock = NSLock()

    /// Where the TAP goes and how big its frames are.
    public struct DeviceOptions: Sendable {
        public var tapName: String
        public var bridge: String?
        public var persistent = false
        /// nil: the underlay MTU less the encapsulation overhead.
        public var mtu: Int?
        /// Checksum and TCP segmentation offload on the TAP (a virtio-net header on each frame).
        public var offloads: Bool
        public init(tapName: String, bridge: String? = nil, persistent: Bool = false, mtu: Int? = nil, offloads: Bool = true) {
            self.tapName = tapName
            self.bridge = bridge
            self.persistent = persistent
            self.mtu = mtu
            self.offloads = offloads
        }
    }

    /// Everything that can stop Ferry from starting, each with what to do about it.
    public enum SetupError: Error, CustomStringConvertible {
        case addressNotLocal(IPAddress)
        case system(LinuxError)
        case options(TunnelOptionsError)
        case capture(CaptureError)
        case invalid(String)

        public var description: String {
            switch self {
            case .addressNotLocal(let a):
                "local address \(a) is not configured on any interface of this host; give --local one of the addresses `ip -br addr` lists"
            case .system(let e): e.description
            case .options(let e): e.description
            case .capture(let e): e.description
            case .invalid(let s): s
            }
        }
    }

    public init(configuration base: EngineConfiguration, device: DeviceOptions, capture: CaptureTap?,
                logger: Logger) throws(SetupError) {
        var configuration = base
        self.logger = logger
        guard let underlay = NetworkInterface.holding(configuration.local) else {
            throw .addressNotLocal(configuration.local)
        }
        do {
            if configuration.underlayMTU <= 0 { configuration.underlayMTU = try NetworkInterface(underlay).mtu() }
            configuration.localMAC = (try? NetworkInterface(underlay).macAddress()) ?? .zero
            let tap = try TAPDevice(name: device.tapName, persistent: device.persistent, offloads: device.offloads)
            let link = NetworkInterface(tap.name)
            let mtu = device.mtu ?? configuration.defaultTAPMTU
            guard mtu >= 68 else {
                throw SetupError.invalid("the underlay MTU \(configuration.underlayMTU) leaves no room for frames after \(configuration.ipOverhead) bytes of encapsulation; raise it")
            }
            try link.setMTU(mtu)
            if let bridge = device.bridge { try link.attach(toBridge: bridge) }
            try link.setUp()
            // With TSO the TAP hands over super-frames of up to 64 KiB.
            configuration.maximumFrame = (tap.offloads & TAPDevice.offloadTSO4 != 0 ? 65535 : max(mtu, configuration.underlayMTU))
                + Ethernet.headerLength + Ethernet.vlanTagLength + VirtioNetHeader.length
            // With offloads, VXLAN leaves through UDP sockets that the kernel segments (GSO) —
            // unless outer packets are captured, which needs the headers Ferry writes itself.
            // An explicit --no-udp-csum keeps the raw path too: GSO cannot send without a checksum.
            let udpSenders = device.offloads && capture?.outer != true && configuration.udpChecksum != false ? 8 : 0
            let transport = try SocketTransport(options: try configuration.tunnelOptions(remote: configuration.peers.first ?? configuration.local),
                                                udpSenders: udpSenders, gro: device.offloads)
            self.tap = tap
            self.tapMTU = mtu
            forwarder = try LiveForwarder(configuration: configuration, device: tap, transport: transport,
                                          deviceMAC: try link.macAddress(), capture: capture)
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

    public var configuration: EngineConfiguration { forwarder.configuration }

    /// Starts the egress and ingress threads.
    public func start() {
        spawn("egress", fd: forwarder.device.pollDescriptor) { [forwarder] in try forwarder.egressStep() }
        spawn("ingress", fd: forwarder.transport.pollDescriptor) { [forwarder] in try forwarder.ingressStep() }
    }

    func spawn(_ name: String, fd: Int32, step: @escaping @Sendable () throws -> Int) {
        finished.enter()
        let thread = Thread { [self] in
            defer { finished.leave() }
            while !stopping.load(ordering: .relaxed) {
                do {
                    if try step() == 0 {
                        // Nothing waiting: sleep until there is, or a tenth of a second passes
                        // so that a stop is noticed.
                        _ = Poller.wait(fd: fd, events: Int16(POLLIN), milliseconds: 100)
                    }
                } catch {
                    logger.error("\(name) loop stopped: \(error)")
                    failureLock.withLock { failures.append("\(name): \(error)") }
                    stopping.store(true, ordering: .relaxed)
                }
            }
        }
        thread.name = "ferry-\(name)"
        thread.start()
    }

    public func stop() { stopping.store(true, ordering: .relaxed) }

    public var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Waits for both threads to end; returns what made them stop, if not a request.
    public func wait() -> [String] {
        finished.wait()
        forwarder.capture?.close()
        return failureLock.withLock { failures }
    }
}
