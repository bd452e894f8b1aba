// The cross-option checks of `EngineConfiguration.check` and `Encapsulation(kind:…)`: what
// `ferry run` refuses before it touches the system, without running it.

import FerryEngine
import FerryWire
import Testing

@Suite("Configuration check")
struct ConfigurationCheckTests {
    static let local = IPAddress("10.99.0.1")!
    static let peer = IPAddress("10.99.0.2")!
    static let device = Engine.DeviceOptions(tapName: "t0")

    static func vxlan(peers: [IPAddress] = [peer]) -> EngineConfiguration {
        EngineConfiguration(encapsulation: .vxlan(vni: 42), local: local, peers: peers)
    }

    static func gre(peers: [IPAddress] = [peer]) -> EngineConfiguration {
        EngineConfiguration(encapsulation: .gre(GREOptions(key: 7)), local: local, peers: peers)
    }

    /// The error `check` throws, nil if it passes.
    static func failure(_ c: EngineConfiguration, device: Engine.DeviceOptions = device, listed: Bool = false,
                        capture: CaptureOptions = CaptureOptions()) -> ConfigurationError? {
        do {
            try c.check(device: device, offloadsListed: listed, capture: capture)
            return nil
        } catch {
            return error
        }
    }

    @Test("a plain VXLAN and a plain GRE configuration pass, with every offload and a capture")
    func plainConfigurationsPass() {
        let capture = CaptureOptions(path: "/tmp/x.pcap", point: .outer, filter: "udp")
        #expect(Self.failure(Self.vxlan(), capture: capture) == nil)
        #expect(Self.failure(Self.gre()) == nil)
        var link = Self.gre()
        link.grePath = .link
        #expect(Self.failure(link) == nil)
    }

    @Test("peers: at least one unless any is accepted, of the local IP version, never the local address")
    func peers() {
        #expect(Self.failure(Self.vxlan(peers: [])) == .noPeers)
        var any = Self.vxlan(peers: [])
        any.acceptAnyPeer = true
        #expect(Self.failure(any) == nil)

        let v6 = IPAddress("fd00::2")!
        #expect(Self.failure(Self.vxlan(peers: [Self.peer, v6])) == .peerAddressFamily(peer: v6, local: Self.local))
        #expect(Self.failure(Self.vxlan(peers: [Self.peer, Self.local])) == .peerIsLocal(Self.local))
    }

    @Test("accept-cidr narrows accept-any: refused without it, and in the local IP version only")
    func acceptPrefixes() throws {
        var c = Self.vxlan()
        c.acceptPrefixes = [try IPPrefix(parsing: "10.99.0.0/16")]
        #expect(Self.failure(c) == .acceptPrefixWithoutAcceptAny)
        c.acceptAnyPeer = true
        #expect(Self.failure(c) == nil)
        let v6 = try IPPrefix(parsing: "fd00:99::/64")
        c.acceptPrefixes.append(v6)
        #expect(Self.failure(c) == .acceptPrefixFamily(prefix: v6, local: Self.local))
    }

    @Test("options of the other tunnel kind are refused")
    func optionsOfTheOtherKind() {
        var gre = Self.gre()
        gre.udpChecksum = false
        #expect(Self.failure(gre) == .udpChecksumWithGRE)
        var vxlan = Self.vxlan()
        vxlan.udpChecksum = false
        #expect(Self.failure(vxlan) == nil)
        vxlan.grePath = .link
        #expect(Self.failure(vxlan) == .grePathWithVXLAN)
    }

    @Test("a static entry must name a configured peer, even when any peer is accepted")
    func staticEntries() {
        let mac = MACAddress(0x02, 0, 0, 0, 0, 0x01)
        var c = Self.vxlan()
        c.staticEntries = [(mac, Self.peer)]
        #expect(Self.failure(c) == nil)
        let stranger = IPAddress("10.99.0.9")!
        c.staticEntries.append((mac, stranger))
        c.acceptAnyPeer = true
        #expect(Self.failure(c) == .staticEntryNotAPeer(mac: mac, peer: stranger))
    }

    @Test("TSO and USO need the checksum offload")
    func segmentationNeedsChecksum() {
        for (offloads, name) in [(Offloads.tcpSegmentation, "tso"), (.udpSegmentation, "uso")] {
            let device = Engine.DeviceOptions(tapName: "t0", offloads: [offloads, .genericReceive])
            #expect(Self.failure(Self.vxlan(), device: device, listed: true) == .offloadNeedsChecksum(name: name))
            let withChecksum = Engine.DeviceOptions(tapName: "t0", offloads: [offloads, .checksum])
            #expect(Self.failure(Self.vxlan(), device: withChecksum, listed: true) == nil)
        }
    }

    @Test("gso named in a list must apply: VXLAN with the UDP checksum; `all` asks only for what applies")
    func listedSegmentationOffload() {
        let listed = Engine.DeviceOptions(tapName: "t0", offloads: [.checksum, .tcpSegmentation, .genericSegmentation])
        #expect(Self.failure(Self.gre(), device: listed, listed: true) == .segmentationOffloadUnusable(listed: listed.offloads, blocker: .notVXLAN))
        #expect(Self.failure(Self.gre(), device: Self.device) == nil)
        #expect(Self.failure(Self.gre(), device: listed, listed: false) == nil)

        var noChecksum = Self.vxlan()
        noChecksum.udpChecksum = false
        #expect(Self.failure(noChecksum, device: listed, listed: true)
                == .segmentationOffloadUnusable(listed: listed.offloads, blocker: .noUDPChecksum))
        #expect(Self.failure(noChecksum, device: Self.device) == nil)
        #expect(Self.failure(Self.vxlan(), device: listed, listed: true) == nil)
    }

    @Test("a capture point or filter needs a capture file")
    func captureOptions() {
        #expect(Self.failure(Self.vxlan(), capture: CaptureOptions(point: .inner)) == .captureOptionsWithoutCapture)
        #expect(Self.failure(Self.vxlan(), capture: CaptureOptions(filter: "icmp")) == .captureOptionsWithoutCapture)
        #expect(Self.failure(Self.vxlan(), capture: CaptureOptions(path: "/tmp/x.pcap")) == nil)
    }

    @Test("the encapsulation follows the options given: VXLAN by default, GRE with any GRE option")
    func encapsulationFromOptions() throws {
        #expect(try Encapsulation(kind: nil, vni: 42, greKey: nil) == .vxlan(vni: 42))
        #expect(try Encapsulation(kind: nil, vni: nil, greKey: 7) == .gre(GREOptions(key: 7)))
        #expect(try Encapsulation(kind: nil, vni: nil, greKey: nil, greSequence: true) == .gre(GREOptions(sequence: true)))
        #expect(try Encapsulation(kind: .gre, vni: nil, greKey: nil) == .gre(GREOptions()))
        #expect(throws: ConfigurationError.missingVNI) { try Encapsulation(kind: nil, vni: nil, greKey: nil) }
        #expect(throws: ConfigurationError.greOptionsWithVXLAN) { try Encapsulation(kind: .vxlan, vni: 1, greKey: 7) }
        #expect(throws: ConfigurationError.greOptionsWithVXLAN) {
            try Encapsulation(kind: .vxlan, vni: 1, greKey: nil, greChecksum: true)
        }
        #expect(throws: ConfigurationError.vniWithGRE) { try Encapsulation(kind: nil, vni: 1, greKey: 7) }
    }

    @Test("static entries the table cannot hold, and a VXLAN port among the source ports, are refused")
    func tableAndPortBounds() {
        var c = Self.vxlan()
        c.fdbCapacity = 16
        c.staticEntries = (0..<17).map { (MACAddress(value: 0x0200_0000_0000 + UInt64($0)), Self.peer) }
        #expect(Self.failure(c) == .tooManyStaticEntries(count: 17, capacity: 16))
        c.staticEntries.removeLast()
        c.staticEntries.append(c.staticEntries[0])  // the same MAC twice is one entry
        #expect(Self.failure(c) == nil)

        var ports = Self.vxlan()
        ports.sourcePortRange = 4000...5000
        #expect(Self.failure(ports) == .destinationPortInSourceRange(port: 4789, range: 4000...5000))
        ports.destinationPort = 5001
        #expect(Self.failure(ports) == nil)
        var gre = Self.gre()
        gre.sourcePortRange = 4000...5000  // GRE has no ports: nothing to overlap
        #expect(Self.failure(gre) == nil)
    }

    /// The words `ferry run`'s tests look for (Tests/ferryTests/RunErrorTests.swift), so that a
    /// message changed here is seen without a subprocess.
    @Test("each message names the options and says what would be right")
    func messages() {
        let mac = MACAddress(0x02, 0, 0, 0, 0, 0x01)
        let cases: [(ConfigurationError, String)] = [
            (.noPeers, "give at least one --peer IP"),
            (.peerAddressFamily(peer: IPAddress("fd00::2")!, local: Self.local),
             "peer fd00::2 and --local 10.99.0.1 are of different IP versions"),
            (.peerIsLocal(Self.local), "peer 10.99.0.1 is this host's own --local address"),
            (.missingVNI, "VXLAN needs a VNI; add --vni N (0 to 16777215)"),
            (.greOptionsWithVXLAN, "--key, --gre-csum and --gre-seq are for GRE; VXLAN takes --vni"),
            (.vniWithGRE, "--vni is for VXLAN; GRE takes --key"),
            (.udpChecksumWithGRE, "--udp-csum applies to VXLAN only"),
            (.grePathWithVXLAN, "--gre-path applies to GRE only"),
            (.staticEntryNotAPeer(mac: mac, peer: IPAddress("10.99.0.9")!),
             "static entry '02:00:00:00:00:01=10.99.0.9' names 10.99.0.9, which is not a --peer"),
            (.offloadNeedsChecksum(name: "tso"), "--offloads: tso needs csum"),
            (.segmentationOffloadUnusable(listed: [.checksum, .tcpSegmentation, .genericSegmentation], blocker: .notVXLAN),
             "--offloads csum,tso,gso: gso is for VXLAN"),
            (.segmentationOffloadUnusable(listed: .genericSegmentation, blocker: .noUDPChecksum), "--offloads gso: gso needs the outer UDP checksum"),
            (.captureOptionsWithoutCapture, "--capture-point and --capture-filter need --capture FILE"),
            (.tooManyStaticEntries(count: 17, capacity: 16), "raise --fdb-size or give fewer --static-fdb"),
            (.destinationPortInSourceRange(port: 4789, range: 4000...5000), "--dstport 4789 lies inside --src-port-range 4000-5000"),
            (.acceptPrefixWithoutAcceptAny, "--accept-cidr limits which sources --accept-any-peer learns as peers; add --accept-any-peer"),
            (.acceptPrefixFamily(prefix: IPPrefix(IPAddress("fd00::")!, length: 64)!, local: Self.local),
             "--accept-cidr fd00::/64 and --local 10.99.0.1 are of different IP versions"),
        ]
        for (error, text) in cases {
            #expect(error.description.contains(text), "\(error.description)")
            #expect(!error.description.contains("\n"))
        }
    }
}
