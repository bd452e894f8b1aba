import FerryCapture
import FerryWire

/// What `diffCaptures` found between two captures of the same traffic (A and B: the two sides
/// of a tunnel, or before and after Ferry); its JSON is what `ferry pcap diff --json` prints.
public struct CaptureDiff: Codable, Sendable {
    /// What was read from one capture.
    public struct Side: Codable, Sendable {
        public internal(set) var path: String
        /// Frames read (those that matched the filter).
        public internal(set) var frames = 0
        /// `tunnel` (the capture held tunnel packets: their inner frames are compared, other
        /// frames left out) or `plain` (every frame is compared).
        public internal(set) var form = "plain"
        /// Inner frames (or plain frames) compared.
        public internal(set) var compared = 0
        /// Inner frames per tunnel (`tunnelLabel(_:)`).
        public internal(set) var tunnels: [String: Int] = [:]
        /// Frames not compared, by drop reason name (tunnel form only).
        public internal(set) var leftOut: [String: Int] = [:]
        /// Frames that did not match the filter.
        public internal(set) var filteredOut = 0
    }

    /// One-way delays of a flow's matched frames, in microseconds (receiver's timestamp minus
    /// sender's), p50 and p99 by nearest rank.
    public struct Delays: Codable, Sendable, Equatable {
        public internal(set) var count: Int
        public internal(set) var minimum: Int64
        public internal(set) var p50: Int64
        public internal(set) var p99: Int64
        public internal(set) var maximum: Int64
        /// Delays below zero: the two clocks are not comparable (or the direction is mixed).
        public internal(set) var negative: Int
    }

    /// A pair of frames that differ in some field.
    public struct Alteration: Codable, Sendable, Equatable {
        /// Frame numbers in A and in B.
        public internal(set) var a: Int
        public internal(set) var b: Int
        /// Field name → "value in A → value in B".
        public internal(set) var fields: [String: String]
    }

    /// One flow (`CaptureSummary.flowDescription(of:)`, as the sending side saw it).
    public struct Flow: Codable, Sendable {
        public internal(set) var flow: String
        /// `a>b` or `b>a`: the side whose timestamps come first (by the median of the matched
        /// frames); nil when no frame matched (then lost and unexpected are "only in A" and
        /// "only in B").
        public internal(set) var direction: String?
        /// Frames of the flow in A and in B.
        public internal(set) var inA = 0
        public internal(set) var inB = 0
        public internal(set) var matched = 0
        /// Sent and never received: frame numbers on the sending side.
        public internal(set) var lost: [Int] = []
        /// Received and never sent: frame numbers on the receiving side.
        public internal(set) var unexpected: [Int] = []
        /// Extra copies on the receiving side of a frame the sender sent once: their numbers there.
        public internal(set) var duplicated: [Int] = []
        /// Received after a frame sent later: frame numbers on the receiving side.
        public internal(set) var reordered: [Int] = []
        /// Matched frames that differ, with the fields.
        public internal(set) var altered: [Alteration] = []
        /// How many matched frames changed each field.
        public internal(set) var alteredFields: [String: Int] = [:]
        public internal(set) var delays: Delays?
    }

    public internal(set) var a: Side
    public internal(set) var b: Side
    public internal(set) var matched = 0
    public internal(set) var lost = 0
    public internal(set) var unexpected = 0
    public internal(set) var duplicated = 0
    public internal(set) var reordered = 0
    public internal(set) var altered = 0
    public internal(set) var alteredFields: [String: Int] = [:]
    /// Whether the one-way delays can be believed: every matched frame arrived after it left.
    /// False with any negative delay (two hosts' clocks apart by more than the delay).
    public internal(set) var clocksComparable = true
    /// In the order first seen (A first, then flows only in B).
    public internal(set) var flows: [Flow] = []
}

/// Compares the frames of two captures of the same traffic. Each capture that holds tunnel
/// packets (VXLAN on `vxlanPort`, or 4789 and 8472 without one; GRE) is decapsulated, as
/// `ferry pcap decap` does, and its inner frames compared; one without any is compared frame
/// for frame. Frames are matched by `DiffFrame`'s rule, and every flow gets what was lost,
/// unexpected, duplicated, reordered and altered, and its one-way delays.
public func diffCaptures(a pathA: String, b pathB: String, vxlanPort: UInt16? = nil,
                         filter: PacketFilter? = nil) throws(CaptureError) -> CaptureDiff {
    let (sideA, framesA) = try readDiffSide(pathA, vxlanPort: vxlanPort, filter: filter)
    let (sideB, framesB) = try readDiffSide(pathB, vxlanPort: vxlanPort, filter: filter)
    return diffFrames(framesA, framesB, a: sideA, b: sideB)
}

/// A capture's frames to compare: the inner frames of its tunnel packets, or all of its
/// frames if it holds none.
func readDiffSide(_ path: String, vxlanPort: UInt16?, filter: PacketFilter?) throws(CaptureError) -> (CaptureDiff.Side, [DiffFrame]) {
    let reader = try PcapFileReader(path: path)
    let decapsulator = Decapsulator(policy: .forCaptures(port: vxlanPort, udpChecksum: .ignore))
    var side = CaptureDiff.Side(path: path)
    var plain: [DiffFrame] = [], inner: [DiffFrame] = []
    var number = 0
    while let frame = try reader.next() {
        number += 1
        if let filter, !filter.matches(frame) { side.filteredOut += 1; continue }
        side.frames += 1
        let time = frame.timestamp.seconds &* 1_000_000 &+ Int64(frame.timestamp.microseconds)
        switch decapsulator.decapsulate(frame: frame.bytes) {
        case .packet(let p):
            plain = []
            inner.append(DiffFrame(number: number, time: time, bytes: Array(frame.bytes[p.inner])))
            side.tunnels[tunnelLabel(p), default: 0] += 1
        case .drop(let reason):
            side.leftOut[reason.name, default: 0] += 1
            // Kept only while the capture may turn out to hold no tunnel packet at all.
            if inner.isEmpty { plain.append(DiffFrame(number: number, time: time, bytes: Array(frame.bytes))) }
        }
    }
    if inner.isEmpty {
        side.leftOut = [:]
        side.compared = plain.count
        return (side, plain)
    }
    side.form = "tunnel"
    side.compared = inner.count
    return (side, inner)
}

/// Pairs `framesA` with `framesB` (each in capture order) and reports per flow.
func diffFrames(_ framesA: [DiffFrame], _ framesB: [DiffFrame], a: CaptureDiff.Side, b: CaptureDiff.Side) -> CaptureDiff {
    // pairOfA[i] = the index in B of A's frame i, and the reverse.
    var pairOfA = [Int?](repeating: nil, count: framesA.count)
    var pairOfB = [Int?](repeating: nil, count: framesB.count)
    // Frames of one side left over whose identity the other side has: a copy too many.
    var extraCopyA = Set<Int>(), extraCopyB = Set<Int>()

    func pair(by key: (DiffFrame) -> [UInt8]?, markCopies: Bool) {
        var waiting: [[UInt8]: [Int]] = [:]  // B's unpaired frames by key, in order
        for (j, f) in framesB.enumerated() where pairOfB[j] == nil {
            if let k = key(f) { waiting[k, default: []].append(j) }
        }
        var next: [[UInt8]: Int] = [:]
        var keysOfA = Set<[UInt8]>()
        for (i, f) in framesA.enumerated() where pairOfA[i] == nil {
            guard let k = key(f) else { continue }
            keysOfA.insert(k)
            guard let list = waiting[k] else { continue }
            let n = next[k, default: 0]
            if n < list.count {
                pairOfA[i] = list[n]
                pairOfB[list[n]] = i
                next[k] = n + 1
            } else if markCopies {
                extraCopyA.insert(i)
            }
        }
        if markCopies {
            for (k, list) in waiting where keysOfA.contains(k) {
                for j in list.dropFirst(next[k, default: 0]) { extraCopyB.insert(j) }
            }
        }
    }
    pair(by: { $0.identity }, markCopies: true)
    // What is left and is no copy: the same packet with its payload changed, or rewritten.
    pair(by: { $0.headerKey }, markCopies: false)
    pair(by: { $0.contentKey }, markCopies: false)

    var diff = CaptureDiff(a: a, b: b)
    var flowIndex: [String: Int] = [:]
    func flow(_ name: String) -> Int {
        if let k = flowIndex[name] { return k }
        diff.flows.append(CaptureDiff.Flow(flow: name))
        flowIndex[name] = diff.flows.count - 1
        return diff.flows.count - 1
    }
    // A frame's flow is the one A saw it in (B's, for frames only in B).
    var flowOfA = [Int](repeating: 0, count: framesA.count), flowOfB = [Int](repeating: 0, count: framesB.count)
    for (i, f) in framesA.enumerated() {
        flowOfA[i] = flow(f.flow)
        diff.flows[flowOfA[i]].inA += 1
    }
    for (j, f) in framesB.enumerated() {
        flowOfB[j] = pairOfB[j].map { flowOfA[$0] } ?? flow(f.flow)
        diff.flows[flowOfB[j]].inB += 1
    }

    // Delays (B minus A) by flow, to tell each flow's direction.
    var rawDelays = [[Int64]](repeating: [], count: diff.flows.count)
    for (i, j) in pairOfA.enumerated() {
        guard let j else { continue }
        rawDelays[flowOfA[i]].append(framesB[j].time - framesA[i].time)
    }
    for k in diff.flows.indices {
        let d = rawDelays[k].sorted()
        guard !d.isEmpty else { continue }
        let forward = d[(d.count - 1) / 2] >= 0
        diff.flows[k].direction = forward ? "a>b" : "b>a"
        let oriented = (forward ? d : d.map { -$0 }).sorted()
        func rank(_ p: Double) -> Int64 { oriented[max(0, Int((p * Double(oriented.count)).rounded(.up)) - 1)] }
        diff.flows[k].delays = CaptureDiff.Delays(count: oriented.count, minimum: oriented.first!, p50: rank(0.5),
                                                  p99: rank(0.99), maximum: oriented.last!,
                                                  negative: oriented.count { $0 < 0 })
        diff.flows[k].matched = oriented.count
        if oriented.first! < 0 { diff.clocksComparable = false }
    }

    // Left-over frames: lost on the sending side, duplicated or unexpected on the receiving one.
    for (i, f) in framesA.enumerated() where pairOfA[i] == nil {
        let k = flowOfA[i]
        if diff.flows[k].direction == "b>a" {
            if extraCopyA.contains(i) { diff.flows[k].duplicated.append(f.number) } else { diff.flows[k].unexpected.append(f.number) }
        } else {
            diff.flows[k].lost.append(f.number)
        }
    }
    for (j, f) in framesB.enumerated() where pairOfB[j] == nil {
        let k = flowOfB[j]
        if diff.flows[k].direction == "b>a" {
            diff.flows[k].lost.append(f.number)
        } else if extraCopyB.contains(j) && diff.flows[k].direction != nil {
            diff.flows[k].duplicated.append(f.number)
        } else {
            diff.flows[k].unexpected.append(f.number)
        }
    }

    // Reordering, seen from the receiving side: a frame is reordered when a frame the sender
    // sent after it arrived before it.
    var receivedPairs = [[(sent: Int, received: Int)]](repeating: [], count: diff.flows.count)
    for (j, i) in pairOfB.enumerated() {
        guard let i else { continue }
        receivedPairs[flowOfA[i]].append((i, j))
    }
    for k in diff.flows.indices {
        let byReceiver: [(sent: Int, received: Int)]
        if diff.flows[k].direction == "b>a" {
            byReceiver = receivedPairs[k].map { (sent: $0.received, received: $0.sent) }.sorted { $0.received < $1.received }
        } else {
            byReceiver = receivedPairs[k]
        }
        var latestSent = -1
        for p in byReceiver {
            if p.sent < latestSent {
                let number = diff.flows[k].direction == "b>a" ? framesA[p.received].number : framesB[p.received].number
                diff.flows[k].reordered.append(number)
            }
            latestSent = max(latestSent, p.sent)
        }
    }

    // Alterations, field by field.
    for (i, j) in pairOfA.enumerated() {
        guard let j else { continue }
        let changes = framesA[i].differences(from: framesB[j])
        guard !changes.isEmpty else { continue }
        let k = flowOfA[i]
        var fields: [String: String] = [:]
        for c in changes {
            fields[c.field] = c.change
            diff.flows[k].alteredFields[c.field, default: 0] += 1
            diff.alteredFields[c.field, default: 0] += 1
        }
        diff.flows[k].altered.append(CaptureDiff.Alteration(a: framesA[i].number, b: framesB[j].number, fields: fields))
    }

    for f in diff.flows {
        diff.matched += f.matched
        diff.lost += f.lost.count
        diff.unexpected += f.unexpected.count
        diff.duplicated += f.duplicated.count
        diff.reordered += f.reordered.count
        diff.altered += f.altered.count
    }
    return diff
}
