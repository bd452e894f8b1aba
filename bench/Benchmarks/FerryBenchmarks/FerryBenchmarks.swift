import Benchmark
import FerryBenchSupport
import FerryEngine
import Foundation
import FerryLinux
import FerryWire

// Each benchmark runs one step of the data plane over a batch of packets; the scaling factor
// is the batch, so results read per packet. Steady state must not allocate nor take a
// reference: the malloc and retain thresholds are zero.

let inner1400: [UInt8] = FrameBuilder.frame(
    destinationMAC: MACAddress(2, 0, 0, 0, 0, 2), sourceMAC: MACAddress(2, 0, 0, 0, 0, 1),
    payload: .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 1, acknowledgment: 1, flags: TCP.ack,
                  data: FrameBuilder.pattern(1386)))
let local = IPAddress.v4(IPv4Address(10, 99, 0, 1)), remote = IPAddress.v4(IPv4Address(10, 99, 0, 2))

func options(_ e: Encapsulation, udpChecksum: Bool = false) -> TunnelOptions {
    try! TunnelOptions(encapsulation: e, local: local, remote: remote, udpChecksum: udpChecksum)
}

/// Retains are counted only on request (FERRY_BENCH_RETAINS=1): the ARC hooks that count them
/// crash Swift 6.3's runtime on Linux (ordo-one/benchmark#349; the fix, a runtime interposer
/// package, is not in every mirror), while malloc counting is unaffected.
let countRetains = ProcessInfo.processInfo.environment["FERRY_BENCH_RETAINS"] == "1"
// `nonisolated(unsafe)`: the benchmark library's configuration types are not Sendable; these
// constants are made once, at start, and only read after.
nonisolated(unsafe) let zeroThreshold = BenchmarkThresholds(absolute: [.p0: 0, .p25: 0, .p50: 0, .p75: 0, .p90: 0, .p99: 0, .p100: 0])

nonisolated(unsafe) let zeroMallocs: [BenchmarkMetric: BenchmarkThresholds] =
    countRetains ? [.mallocCountTotal: zeroThreshold, .retainCount: zeroThreshold] : [.mallocCountTotal: zeroThreshold]
let metrics: [BenchmarkMetric] = [.wallClock, .throughput, .mallocCountTotal] + (countRetains ? [.retainCount] : [])

nonisolated(unsafe) let perPacket = Benchmark.Configuration(metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(2),
                                                            thresholds: zeroMallocs)

/// For benchmarks whose one iteration is a whole batch or super-frame.
nonisolated(unsafe) let perStep = Benchmark.Configuration(metrics: metrics, scalingFactor: .one, maxDuration: .seconds(2),
                                                          thresholds: zeroMallocs)

/// A 64 KiB TCP or UDP super-frame of 46 pieces of 1400 B, with the virtio header a TAP with
/// TSO or USO gives it.
func superFrame(udp: Bool) -> ([UInt8], VirtioNetHeader) {
    let data = FrameBuilder.pattern(46 * 1400)
    let frame = FrameBuilder.frame(destinationMAC: MACAddress(2, 0, 0, 0, 0, 2), sourceMAC: MACAddress(2, 0, 0, 0, 0, 1),
                                   payload: udp ? .udp(sourcePort: 4433, destinationPort: 443, data: data)
                                       : .tcp(sourcePort: 40000, destinationPort: 5201, sequence: 1, acknowledgment: 1,
                                              flags: TCP.ack, data: data), pad: false)
    return (frame, VirtioNetHeader(flags: VirtioNetHeader.flagNeedsChecksum,
                                   gsoType: udp ? VirtioNetHeader.gsoUDPL4 : VirtioNetHeader.gsoTCPv4,
                                   headerLength: udp ? 42 : 54, gsoSize: 1400, checksumStart: 34, checksumOffset: udp ? 6 : 16))
}

let benchmarks: @Sendable () -> Void = {
    for (name, e, csum) in [("vxlan", Encapsulation.vxlan(vni: 42), false), ("vxlan+udpcsum", .vxlan(vni: 42), true),
                            ("gre-key", .gre(GREOptions(key: 42)), false)] {
        Benchmark("encapsulate \(name) 1400 B", configuration: perPacket) { benchmark in
            let template = EncapsulationTemplate(options(e, udpChecksum: csum))
            let header = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 16)
            defer { header.deallocate() }
            inner1400.withUnsafeBytes { inner in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    blackHole(template.writeHeaders(.ipPacket, to: header, inner: inner))
                }
                benchmark.stopMeasurement()
            }
        }
    }

    for (name, e) in [("vxlan", Encapsulation.vxlan(vni: 42)), ("gre-key", .gre(GREOptions(key: 42)))] {
        Benchmark("decapsulate \(name) 1400 B", configuration: perPacket) { benchmark in
            let template = EncapsulationTemplate(options(e))
            var frame = [UInt8](repeating: 0, count: 128 + inner1400.count)
            frame.replaceSubrange(128..., with: inner1400)
            let start = frame.withUnsafeMutableBytes { template.encapsulateFrame(in: $0, innerOffset: 128, innerLength: inner1400.count) }
            let decapsulator = Decapsulator(policy: DecapsulationPolicy(vni: 42, greKey: 42, udpChecksum: .verify))
            frame.withUnsafeBytes { all in
                let outer = UnsafeRawBufferPointer(rebasing: all[start...])
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    blackHole(decapsulator.decapsulate(frame: outer))
                }
                benchmark.stopMeasurement()
            }
        }
    }

    // A segment's worth, and a 64 KiB super-frame (what TSO hands up and GRO coalescing verifies).
    for size in [1500, 65535] {
        Benchmark("checksum \(size) B", configuration: perPacket) { benchmark in
            let bytes = FrameBuilder.pattern(size)
            bytes.withUnsafeBytes { b in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations { blackHole(InternetChecksum.sum(b)) }
                benchmark.stopMeasurement()
            }
        }
    }

    // Userspace GSO and GRO over one 64 KiB super-frame (46 segments of 1400 B): cutting it as
    // a TAP with TSO or USO hands it over, and joining the pieces back for the receiving TAP.
    for (name, isUDP) in [("TCP", false), ("UDP", true)] {
        let (frame, header) = superFrame(udp: isUDP)
        Benchmark("segment a 64 KiB \(name) super-frame into 1400 B pieces", configuration: perStep) { benchmark in
            let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
            defer { area.deallocate() }
            frame.withUnsafeBytes { f in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    blackHole(try? Segmentation.segment(f, header: header, into: area, gap: 8) { blackHole($0 + $1) })
                }
                benchmark.stopMeasurement()
            }
        }
        Benchmark("segment a 64 KiB \(name) super-frame, headers only (payload gathered in place)", configuration: perStep) { benchmark in
            let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
            defer { area.deallocate() }
            frame.withUnsafeBytes { f in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    blackHole(try? Segmentation.segmentHeaders(f, header: header, into: area, gap: 8) { blackHole($0 + $1 + $2 + $3) })
                }
                benchmark.stopMeasurement()
            }
        }
        Benchmark("coalesce 1400 B \(name) pieces into a 64 KiB super-frame", configuration: perStep) { benchmark in
            // The pieces, each behind 10 bytes of headroom, as they sit in receive buffers.
            let area = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
            defer { area.deallocate() }
            var pieces: [(offset: Int, length: Int)] = []
            frame.withUnsafeBytes { f in
                _ = try? Segmentation.segment(f, header: header, into: area, gap: 10) { pieces.append(($0, $1)) }
            }
            let coalescer = SegmentCoalescer(udp: true)
            let base = area.baseAddress!
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for p in pieces {
                    coalescer.add(UnsafeRawBufferPointer(start: base + p.offset, count: p.length), plain: base + p.offset - 10) { blackHole($0.count) }
                }
                coalescer.flush { blackHole($0.count) }
            }
            benchmark.stopMeasurement()
        }
    }

    Benchmark("flow hash", configuration: perPacket) { benchmark in
        inner1400.withUnsafeBytes { b in
            for _ in benchmark.scaledIterations { blackHole(FlowHash.hash(ofFrame: b)) }
        }
    }

    // The engine's egress step over an in-memory TAP and transport: 64 frames a batch, two peers;
    // through the raw header-including path, and through UDP senders.
    for (suffix, udpSenders) in [("", 0), (", UDP senders", 4)] {
        Benchmark("engine egress, batch of 64 frames flooded to 2 peers\(suffix)", configuration: perStep) { benchmark in
            let (worker, device) = makeWorker(udpSenders: udpSenders)
            measureEgress(benchmark, worker, device, frames: 64)
        }
    }

    // GRE on the link path: each packet's next-hop address copied in under the peer's seqlock.
    Benchmark("engine egress, batch of 64 frames flooded to 2 peers, GRE link path", configuration: perStep) { benchmark in
        let (worker, device) = makeWorker(gre: true, link: true)
        for p in 0..<worker.peers.count {
            worker.peers[p].setLinkNextHop(LinkNextHop(interfaceIndex: 2, mac: MACAddress(2, 0, 0, 0, 9, UInt8(p))))
        }
        measureEgress(benchmark, worker, device, frames: 64)
    }

    // The same step for a TAP with TSO: one 64 KiB TCP super-frame a step, cut for GSO sends
    // through the UDP senders, to two peers.
    Benchmark("engine egress, a 64 KiB TCP super-frame to 2 peers, UDP senders", configuration: perStep) { benchmark in
        let (frame, header) = superFrame(udp: false)
        var withHeader = [UInt8](repeating: 0, count: VirtioNetHeader.length)
        withHeader.withUnsafeMutableBytes { header.write(to: $0.baseAddress!) }
        let (worker, device) = makeWorker(udpSenders: 4, frame: withHeader + frame)
        measureEgress(benchmark, worker, device, frames: 1)
    }

    Benchmark("engine ingress, batch of 64 packets", configuration: perStep) { benchmark in
        let (worker, _) = makeWorker()
        let transport = worker.transport
        transport.incoming = 64
        _ = try? worker.ingressStep()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            transport.incoming = 64
            blackHole(try? worker.ingressStep())
        }
        benchmark.stopMeasurement()
    }
}

/// Times the egress step over `frames` frames from the TAP, after one step to warm up (the
/// first batch may size buffers).
func measureEgress(_ benchmark: Benchmark, _ worker: Worker<ReplayDevice, ReplayTransport>, _ device: ReplayDevice,
                   frames: Int) {
    device.pending = frames
    _ = try? worker.egressStep()
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        device.pending = frames
        blackHole(try? worker.egressStep())
    }
    benchmark.stopMeasurement()
}

/// A worker over the replaying fakes, with two peers; `frame` (by default a 1000-byte
/// broadcast) is what the TAP hands out, behind a virtio header when it is a super-frame's.
func makeWorker(udpSenders: Int = 0, frame: [UInt8]? = nil, gre: Bool = false,
                   link: Bool = false) -> (Worker<ReplayDevice, ReplayTransport>, ReplayDevice) {
    let configuration = EngineConfiguration(encapsulation: gre ? .gre(GREOptions(key: 42)) : .vxlan(vni: 42), local: local,
                                            peers: [remote, .v4(IPv4Address(10, 99, 0, 3))], underlayMTU: 1500)
    let broadcast = FrameBuilder.frame(destinationMAC: .broadcast, sourceMAC: MACAddress(2, 0, 0, 0, 0, 1),
                                       payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(1000)))
    let device = ReplayDevice(frame: frame ?? broadcast, virtioHeader: frame != nil)
    var payload = [UInt8](repeating: 0, count: 8 + inner1400.count)
    payload.replaceSubrange(8..., with: FrameBuilder.frame(
        destinationMAC: MACAddress(2, 0, 0, 0, 0, 1), sourceMAC: MACAddress(2, 0, 0, 0, 0, 9),
        payload: .udp(sourcePort: 1, destinationPort: 2, data: FrameBuilder.pattern(1358))))
    payload.withUnsafeMutableBytes { _ = VXLAN.writeHeader(to: $0, at: 0, vni: 42) }
    let transport = ReplayTransport(payload: payload, source: remote, udpSenders: udpSenders)
    transport.hasLinkSender = link
    let limits = DataPathLimits(configuration: configuration, maximumFrame: frame == nil ? 1600 : 65535 + 28)
    let worker = try! Worker(configuration: configuration, limits: limits, device: device, transport: transport,
                                   deviceMAC: MACAddress(2, 0, 0, 0, 0, 0xAA))
    return (worker, device)
}
