// The capture ring between a worker and the capture writer: records whole and in order across
// the wrap, a full ring drops and counts, and producers on their own threads each with a ring
// of its own, drained at the same time by one consumer, lose nothing they were not told of.

import FerryCapture
import FerryEngine
import Foundation
import Synchronization
import Testing

@Suite("Capture ring")
struct CaptureRingTests {
    /// A frame whose bytes say which record it is: 8 bytes of sequence, then a pattern of it.
    /// (A plain loop, not `map` over a range: unspecialised in a debug build, that asks the
    /// runtime for generic metadata per byte, which under ThreadSanitizer took minutes.)
    static func frame(_ sequence: Int, length: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: length) { bytes, count in
            var i = 0
            while i < length {
                bytes[i] = i < 8 ? UInt8(truncatingIfNeeded: sequence >> (8 * i)) : UInt8(truncatingIfNeeded: sequence &* 31 &+ i)
                i += 1
            }
            count = length
        }
    }

    static func sequence(of bytes: UnsafeRawBufferPointer) -> Int {
        (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) }
    }

    struct Seen: Equatable {
        var sequence: Int, length: Int, originalLength: Int, point: CapturePoint, worker: Int, seconds: Int64, nanoseconds: Int
        var intact: Bool
    }

    static func drain(_ ring: CaptureRing, limit: Int = .max) -> [Seen] {
        var seen: [Seen] = []
        ring.drain(limit: limit) { r in
            let s = r.bytes.count >= 8 ? sequence(of: r.bytes) : -1
            let intact = r.bytes.count < 8 || Array(r.bytes) == Array(frame(s, length: r.originalLength).prefix(r.bytes.count))
            seen.append(Seen(sequence: s, length: r.bytes.count, originalLength: r.originalLength, point: r.point,
                             worker: r.worker, seconds: r.seconds, nanoseconds: r.nanoseconds, intact: intact))
        }
        return seen
    }

    @Test("records of every size come out whole and in order across many wraps of the ring")
    func wrapAround() {
        let ring = CaptureRing(capacity: 4096, worker: 3)
        #expect(ring.capacity == 4096)
        var sent: [Seen] = []
        var received: [Seen] = []
        var pushedBytes = 0
        // Sizes that leave every remainder at the end of the ring, 8..1500 bytes.
        for k in 0..<600 {
            let length = 8 + (k * 277) % 1493
            let bytes = Self.frame(k, length: length)
            let point: CapturePoint = k % 3 == 0 ? .outer : .inner
            let ok = bytes.withUnsafeBytes {
                ring.push($0, at: point, seconds: 1_700_000_000 + Int64(k), nanoseconds: k * 1000)
            }
            #expect(ok, "record \(k) of \(length) bytes did not fit an emptied ring")
            sent.append(Seen(sequence: k, length: length, originalLength: length, point: point, worker: 3,
                             seconds: 1_700_000_000 + Int64(k), nanoseconds: k * 1000, intact: true))
            pushedBytes += length + 48
            // Drain every other record, so that two are often waiting across the end.
            if k % 2 == 1 { received += Self.drain(ring) }
        }
        received += Self.drain(ring)
        #expect(received == sent)
        #expect(ring.dropped == 0 && ring.waiting == 0)
        #expect(pushedBytes > 50 * ring.capacity, "the test wrapped the ring \(pushedBytes / ring.capacity) times")
    }

    @Test("a full ring drops each record that does not fit and counts it; drained, it takes records again")
    func fullRingDropsAndCounts() {
        let ring = CaptureRing(capacity: 8192, worker: 0)
        var accepted = 0
        var k = 0
        // 200-byte frames make 248-byte records: 33 fit in 8 KiB.
        while Self.frame(k, length: 200).withUnsafeBytes({ ring.push($0, at: .inner, seconds: 0, nanoseconds: 0) }) {
            accepted += 1
            k += 1
        }
        #expect(accepted == 8192 / 248)
        #expect(ring.dropped == 1)
        for j in 0..<10 {
            #expect(!Self.frame(1000 + j, length: 200).withUnsafeBytes { ring.push($0, at: .inner, seconds: 0, nanoseconds: 0) })
        }
        #expect(ring.dropped == 11)
        // Half drained: room for as many again, and the order of what is left is kept.
        let first = Self.drain(ring, limit: accepted / 2)
        #expect(first.map(\.sequence) == Array(0..<(accepted / 2)))
        for j in 0..<(accepted / 2) {
            #expect(Self.frame(2000 + j, length: 200).withUnsafeBytes { ring.push($0, at: .inner, seconds: 0, nanoseconds: 0) })
        }
        let rest = Self.drain(ring)
        #expect(rest.map(\.sequence) == Array((accepted / 2)..<accepted) + Array(2000..<(2000 + accepted / 2)))
        #expect(rest.allSatisfy { $0.intact })
        #expect(ring.dropped == 11)
    }

    @Test("a frame longer than a record may be is cut, its length kept; the longest record always fits an emptied ring")
    func longFramesAreCut() {
        let ring = CaptureRing(capacity: 4096, worker: 1)
        #expect(ring.recordLimit == 4096 / 2 - 48 - 8)
        let big = Self.frame(7, length: 9000)
        #expect(big.withUnsafeBytes { ring.push($0, at: .outer, seconds: 1, nanoseconds: 2) })
        let seen = Self.drain(ring)
        #expect(seen.count == 1)
        #expect(seen.first?.length == ring.recordLimit && seen.first?.originalLength == 9000 && seen.first?.intact == true)
        // Into an emptied ring the largest record fits wherever the ring stands: it never
        // wedges on one (a record is at most half the ring).
        for k in 0..<50 {
            #expect(Self.frame(k, length: 100 + k * 37).withUnsafeBytes { ring.push($0, at: .inner, seconds: 0, nanoseconds: 0) })
            #expect(Self.drain(ring).count == 1)
            #expect(big.withUnsafeBytes { ring.push($0, at: .inner, seconds: 0, nanoseconds: 0) }, "at \(k)")
            #expect(Self.drain(ring).count == 1)
        }
        #expect(ring.dropped == 0)
    }

    @Test("the filter runs before the ring: frames it refuses take no room and count as nothing")
    func filterRunsInTheProducer() throws {
        let filter = try PacketFilter(expression: "arp")
        let ring = CaptureRing(capacity: 4096, worker: 0, filter: filter)
        let arp = arpRequest(from: localMAC)
        let udp = udpFrame()
        for _ in 0..<100 { _ = udp.withUnsafeBytes { ring.record($0, at: .inner) } }
        #expect(ring.waiting == 0 && ring.dropped == 0)
        #expect(arp.withUnsafeBytes { ring.record($0, at: .inner) })
        var got: [[UInt8]] = []
        ring.drain { got.append(Array($0.bytes)) }
        #expect(got == [arp])
    }

    @Test("four producers, each on its own thread with a ring of its own, one consumer draining all at once")
    func producersWithRingsOfTheirOwn() {
        let workers = 4, perWorker = 20_000
        let rings = (0..<workers).map { CaptureRing(capacity: 16384, worker: $0) }
        let done = Atomic<Int>(0)
        let group = DispatchGroup()
        for w in 0..<workers {
            let ring = rings[w]
            DispatchQueue.global().async(group: group) {
                for k in 0..<perWorker {
                    let bytes = Self.frame(k, length: 60 + (k * 13 + w) % 1400)
                    _ = bytes.withUnsafeBytes { ring.push($0, at: .inner, seconds: Int64(k), nanoseconds: w) }
                    if k % 64 == 0 { sched_yield() }
                }
                done.add(1, ordering: .releasing)
            }
        }
        var seen = [[Int]](repeating: [], count: workers)
        var broken = 0
        while true {
            let finished = done.load(ordering: .acquiring) == workers
            for ring in rings {
                ring.drain { r in
                    let s = Self.sequence(of: r.bytes)
                    if r.worker != ring.worker || r.nanoseconds != ring.worker || r.seconds != Int64(s)
                        || Array(r.bytes) != Self.frame(s, length: r.bytes.count) {
                        broken += 1
                    }
                    seen[ring.worker].append(s)
                }
            }
            if finished && rings.allSatisfy({ $0.waiting == 0 }) { break }
        }
        group.wait()
        #expect(broken == 0, "records torn or mixed between workers")
        var dropped = 0
        for w in 0..<workers {
            let s = seen[w]
            #expect(zip(s, s.dropFirst()).allSatisfy { $0 < $1 }, "worker \(w)'s records out of order")
            #expect(s.count + rings[w].dropped == perWorker, "worker \(w): \(s.count) seen + \(rings[w].dropped) dropped")
            dropped += rings[w].dropped
        }
        print("[capture ring] \(workers) producers × \(perWorker) records through 16 KiB rings: \(dropped) dropped, "
              + "\(workers * perWorker - dropped) seen in order")
    }
}
