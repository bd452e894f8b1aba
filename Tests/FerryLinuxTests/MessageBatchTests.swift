import CFerryLinux
@testable import FerryLinux
import FerryWire
import Foundation
import SystemPackage
import Testing

/// MessageBatch is pointers: iovecs into the caller's buffers, addresses, control messages, all
/// handed to sendmmsg and recvmmsg. Each test builds a batch, gives it to a real socket on the
/// loopback, and checks what the kernel made of it on the other side, byte for byte, so that a
/// wrong iovec, length, address or control message shows as a wrong datagram.
@Suite struct MessageBatchTests {
    // MARK: - Scatter-gather

    /// A header and a payload from two buffers leave as one datagram, header first; each
    /// message goes to its own address (two receivers, alternating), in order, and an empty
    /// header or payload adds nothing.
    @Test(arguments: [loopback4, loopback6])
    func aHeaderAndAPayloadLeaveAsOneDatagramToTheirOwnAddress(_ local: IPAddress) throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: local, port: 0)
        let receivers = [try DatagramSocket.udp(local: local, port: 0), try DatagramSocket.udp(local: local, port: 0)]
        let destinations = receivers.map { arena.address(local, port: $0.port) }
        let shapes = [(8, 100), (0, 60), (50, 0), (8, 1400), (14, 1), (0, 0)]
        let messages = shapes.enumerated().map { i, shape in (bytes(shape.0, seed: 2 * i), bytes(shape.1, seed: 2 * i + 1)) }

        let batch = MessageBatch(capacity: 8)
        for (i, (header, payload)) in messages.enumerated() {
            #expect(batch.append(to: destinations[i % 2], header: arena.put(header), payload: arena.put(payload)))
        }
        #expect(batch.count == messages.count)
        for (i, (header, payload)) in messages.enumerated() {
            #expect(batch.messageLength(i) == header.count + payload.count, "message \(i)")
            #expect(batch.message(i).bytes == header + payload, "message \(i)")
            #expect(batch.message(i).destination == local)
            #expect(batch.segmentSize(i) == nil, "a plain message carries no UDP_SEGMENT")
        }
        var failures: [Int] = []
        #expect(sender.send(batch) { i, _ in failures.append(i) } == messages.count)
        #expect(failures.isEmpty)
        #expect(batch.count == 0, "a send empties the batch")

        for (r, receiver) in receivers.enumerated() {
            let expected = messages.enumerated().filter { $0.offset % 2 == r }.map { $0.element.0 + $0.element.1 }
            let got = try receiver.collect(expected.count, with: receiveBatch(capacity: 8, size: 2048, in: arena))
            expectSameDatagrams(got.map(\.bytes), expected, "receiver \(r): each datagram is its header then its payload, in order")
            #expect(got.allSatisfy { $0.source == local && $0.port == sender.port && !$0.truncated })
        }
    }

    /// A gathered message joins its pieces, which lie in separate buffers, end to end; with a
    /// segment size (UDP_SEGMENT) the kernel cuts the joined bytes into datagrams of that size
    /// wherever the pieces end, the last one shorter; without, it is one datagram. Two
    /// gathered messages in one batch keep their own pieces; the pool of iovecs is limited
    /// (`hasRoom`) and comes back when the batch is emptied.
    @Test func gatheredPiecesJoinAndTheSegmentSizeCutsThem() throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: loopback4, port: 0)
        let receiver = try DatagramSocket.udp(local: loopback4, port: 0)
        let destination = arena.address(loopback4, port: receiver.port)
        let batch = MessageBatch(capacity: 8, gatherCapacity: 12)

        let gsoPieces = [3, 1000, 17, 1, 2500, 479].enumerated().map { bytes($1, seed: $0) }
        let gso = gsoPieces.flatMap { $0 }
        let segment = 700
        try #require(batch.appendGathered(to: destination, segmentSize: segment, pieces: gsoPieces.count))
        for p in gsoPieces { batch.appendPiece(arena.put(p)) }
        // A message that asks for room for four pieces and uses two.
        let plainPieces = [bytes(40, seed: 10), bytes(300, seed: 11)]
        try #require(batch.appendGathered(to: destination, segmentSize: 0, pieces: 4))
        for p in plainPieces { batch.appendPiece(arena.put(p)) }
        // The single-buffer GSO form.
        let whole = bytes(1000, seed: 12)
        #expect(batch.append(to: destination, payload: arena.put(whole), segmentSize: 300))

        #expect(batch.count == 3)
        #expect(batch.messageLength(0) == gso.count && batch.messageLength(1) == 340 && batch.messageLength(2) == whole.count)
        #expect(batch.message(0).bytes == gso && batch.message(1).bytes == plainPieces.flatMap { $0 })
        #expect(batch.segmentSize(0) == segment && batch.segmentSize(1) == nil && batch.segmentSize(2) == 300)
        // Ten of twelve iovecs are taken: three more pieces do not fit, two do.
        #expect(!batch.hasRoom(messages: 1, pieces: 3) && batch.hasRoom(messages: 1, pieces: 2))
        #expect(!batch.appendGathered(to: destination, segmentSize: 0, pieces: 3))
        #expect(batch.count == 3, "a refused message is not added")

        var failures: [(Int, Errno?)] = []
        #expect(sender.send(batch) { failures.append(($0, $1)) } == 3)
        #expect(failures.isEmpty, "\(failures)")
        let expected = chunks(gso, segment) + [plainPieces.flatMap { $0 }] + chunks(whole, 300)
        let got = try receiver.collect(expected.count, with: receiveBatch(capacity: 16, size: 2048, in: arena))
        expectSameDatagrams(got.map(\.bytes), expected, "GSO segments cut at the segment size, then the joined message, then equal cuts")

        // Emptied by the send, the batch has its whole pool again: one message of twelve pieces.
        let many = (0..<12).map { bytes(5 + $0, seed: 20 + $0) }
        try #require(batch.appendGathered(to: destination, segmentSize: 0, pieces: 12))
        for p in many { batch.appendPiece(arena.put(p)) }
        #expect(sender.send(batch) { failures.append(($0, $1)) } == 1)
        expectSameDatagrams(try receiver.collect(1, with: receiveBatch(capacity: 2, size: 2048, in: arena)).map(\.bytes),
                            [many.flatMap { $0 }], "twelve pieces after the pool came back")
    }

    /// A copy shares its original's pieces and segment size but goes to its own address; a
    /// copy of a plain message stays plain. A copy of a message not in the batch, or into a
    /// full batch, is refused.
    @Test func aCopyGoesToItsOwnAddressWithTheSameBytesAndSegmentSize() throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: loopback4, port: 0)
        let r1 = try DatagramSocket.udp(local: loopback4, port: 0), r2 = try DatagramSocket.udp(local: loopback4, port: 0)
        let (d1, d2) = (arena.address(loopback4, port: r1.port), arena.address(loopback4, port: r2.port))
        let batch = MessageBatch(capacity: 4, gatherCapacity: 8)
        let pieces = [bytes(900, seed: 1), bytes(1234, seed: 2), bytes(66, seed: 3)]
        let joined = pieces.flatMap { $0 }
        try #require(batch.appendGathered(to: d1, segmentSize: 600, pieces: pieces.count))
        for p in pieces { batch.appendPiece(arena.put(p)) }
        #expect(batch.appendCopy(of: 0, to: d2))
        let (header, payload) = (bytes(8, seed: 4), bytes(200, seed: 5))
        #expect(batch.append(to: d1, header: arena.put(header), payload: arena.put(payload)))
        #expect(!batch.appendCopy(of: 3, to: d2), "message 3 does not exist yet")
        #expect(batch.appendCopy(of: 2, to: d2))
        #expect(!batch.appendCopy(of: 0, to: d2), "the batch is full")

        #expect(batch.message(1).bytes == joined && batch.message(1).destination == loopback4)
        #expect(batch.messageLength(1) == batch.messageLength(0) && batch.segmentSize(1) == 600)
        #expect(batch.segmentSize(3) == nil && batch.message(3).bytes == header + payload)

        #expect(sender.send(batch) { i, e in Issue.record("message \(i) refused: \(String(describing: e))") } == 4)
        let expected = chunks(joined, 600) + [header + payload]
        for (name, r) in [("the original's receiver", r1), ("the copies' receiver", r2)] {
            let got = try r.collect(expected.count, with: receiveBatch(capacity: 8, size: 2048, in: arena))
            expectSameDatagrams(got.map(\.bytes), expected, "\(name)")
        }
    }

    /// Re-sending what the kernel refused: a GSO message's datagrams, cut from all its pieces
    /// whatever their boundaries, in order.
    @Test func aGSOMessageSplitsIntoItsDatagramsAcrossPieceBoundaries() throws {
        let arena = Arena()
        let batch = MessageBatch(capacity: 2, gatherCapacity: 8)
        let destination = arena.address(loopback4, port: 9)
        let pieces = [bytes(1, seed: 0), bytes(299, seed: 1), bytes(450, seed: 2), bytes(151, seed: 3), bytes(0, seed: 4)]
        try #require(batch.appendGathered(to: destination, segmentSize: 300, pieces: pieces.count))
        for p in pieces { batch.appendPiece(arena.put(p)) }
        #expect(batch.append(to: destination, header: arena.put([1, 2]), payload: arena.put([3])))
        let scratch = arena.room(1 << 16)
        var datagrams: [[UInt8]] = []
        batch.forEachDatagram(of: 0, scratch: scratch) { datagrams.append(Array($0)) }
        #expect(datagrams == chunks(pieces.flatMap { $0 }, 300))
        var none = 0
        batch.forEachDatagram(of: 1, scratch: scratch) { _ in none += 1 }
        #expect(none == 0, "a plain message is not cut")
    }

    // MARK: - Control messages on receive

    /// With UDP_GRO, a GSO send arrives whole: one receive of every segment, and its control
    /// message gives the segment size. With IP_RECVTOS / IPV6_RECVTCLASS each receive gives
    /// its outer TOS too, read from the right message's control area even when both are there.
    @Test(arguments: [loopback4, loopback6])
    func aRealReceiveReportsTheGROSegmentSizeAndTheTOS(_ local: IPAddress) throws {
        let arena = Arena()
        let receiver = try DatagramSocket.udp(local: local, port: 0)
        try #require(receiver.enableGRO(), "UDP_GRO (Linux 5.0)")
        try #require(receiver.enableTOSReceive())
        // Two senders with their own TOS (DSCP and ECN bits both), told apart by their port.
        let gsoTOS: UInt8 = 0xB8 | ECN.ect0, plainTOS: UInt8 = 0x28 | ECN.ect1
        let gsoSender = try DatagramSocket.udpSender(local: local, port: 0, ttl: 64, tos: gsoTOS, dontFragment: true)
        let plainSender = try DatagramSocket.udpSender(local: local, port: 0, ttl: 64, tos: plainTOS, dontFragment: false)
        let destination = arena.address(local, port: receiver.port)
        let segment = 1200
        let gso = bytes(5 * segment + 333, seed: 7), plain = bytes(100, seed: 8)

        let out = MessageBatch(capacity: 2)
        #expect(out.append(to: destination, payload: arena.put(gso), segmentSize: segment))
        #expect(gsoSender.send(out) { i, e in Issue.record("GSO send refused: \(String(describing: e))") } == 1)
        #expect(out.append(to: destination, header: arena.put([]), payload: arena.put(plain)))
        #expect(plainSender.send(out) { i, e in Issue.record("send refused: \(String(describing: e))") } == 1)

        let batch = receiveBatch(capacity: 8, size: 1 << 16, in: arena)
        batch.receivesControl = true
        var got: [Received] = []
        let deadline = Date().addingTimeInterval(5)
        while got.reduce(0, { $0 + $1.bytes.count }) < gso.count + plain.count, Date() < deadline {
            got += try receiver.collect(1, with: batch, timeout: 1)
        }
        let fromGSO = got.filter { $0.port == gsoSender.port }, fromPlain = got.filter { $0.port == plainSender.port }
        expectSameDatagrams([fromGSO.flatMap(\.bytes)], [gso], "the GSO send's bytes, in order")
        expectSameDatagrams(fromPlain.map(\.bytes), [plain], "the plain send")
        #expect(fromGSO.contains { $0.bytes.count > segment }, "the loopback keeps a GSO send whole for a UDP_GRO socket")
        for r in fromGSO where r.bytes.count > segment {
            #expect(r.groSegmentSize == segment, "a joined receive of \(r.bytes.count) bytes")
        }
        #expect(fromPlain.allSatisfy { $0.groSegmentSize == nil }, "a lone datagram is not joined")
        #expect(fromGSO.allSatisfy { $0.tos == gsoTOS }, "\(fromGSO.map(\.tos))")
        #expect(fromPlain.allSatisfy { $0.tos == plainTOS }, "\(fromPlain.map(\.tos))")
        #expect(got.allSatisfy { !$0.truncated })

        // Without asking for control messages, none is read.
        #expect(out.append(to: destination, header: arena.put([]), payload: arena.put(plain)))
        _ = plainSender.send(out) { _, _ in }
        batch.receivesControl = false
        let bare = try receiver.collect(1, with: batch)
        #expect(bare.map(\.bytes) == [plain] && bare.allSatisfy { $0.tos == nil && $0.groSegmentSize == nil })
    }

    // MARK: - Truncation

    /// A datagram longer than its buffer is cut to the buffer and marked; one that fits
    /// exactly is not; and a mark does not outlive its receive.
    @Test func aDatagramLongerThanItsBufferIsMarkedTruncated() throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: loopback4, port: 0)
        let receiver = try DatagramSocket.udp(local: loopback4, port: 0)
        let destination = arena.address(loopback4, port: receiver.port)
        let size = 512
        let lengths = [size - 1, size, size + 1, 3 * size]
        let out = MessageBatch(capacity: 4)
        let datagrams = lengths.enumerated().map { bytes($1, seed: $0) }
        for d in datagrams { out.append(to: destination, header: arena.put([]), payload: arena.put(d)) }
        #expect(sender.send(out) { _, _ in } == lengths.count)

        let batch = receiveBatch(capacity: 4, size: size, in: arena)
        let got = try receiver.collect(lengths.count, with: batch)
        #expect(got.map(\.truncated) == lengths.map { $0 > size })
        expectSameDatagrams(got.map(\.bytes), datagrams.map { Array($0.prefix(size)) }, "what fits is kept")

        out.append(to: destination, header: arena.put([]), payload: arena.put(datagrams[1]))
        #expect(sender.send(out) { _, _ in } == 1)
        let again = try receiver.collect(1, with: batch)
        #expect(again.map(\.truncated) == [false], "the mark of the last receive is gone")
    }

    // MARK: - Partial sends

    /// A message the kernel refuses is reported with its own index and errno, and the messages
    /// after it still go: sendmmsg stops at the first failure, so the batch is sent again from
    /// the one after it.
    @Test func aRefusedMessageIsReportedAndTheRestStillGo() throws {
        let arena = Arena()
        let sender = try DatagramSocket.udp(local: loopback4, port: 0)
        let receiver = try DatagramSocket.udp(local: loopback4, port: 0)
        let good = arena.address(loopback4, port: receiver.port)
        // An IPv6 address on an IPv4 socket: EAFNOSUPPORT. More than a UDP datagram holds: EMSGSIZE.
        let wrongFamily = arena.address(loopback6, port: receiver.port)
        enum Kind { case fine, tooBig, wrongFamily }
        func run(_ kinds: [Kind]) throws {
            let batch = MessageBatch(capacity: kinds.count)
            var expected: [[UInt8]] = []
            for (i, kind) in kinds.enumerated() {
                let payload = bytes(kind == .tooBig ? 65_600 : 100 + i, seed: i)
                batch.append(to: kind == .wrongFamily ? wrongFamily : good, header: arena.put(bytes(8, seed: 50 + i)),
                             payload: arena.put(payload))
                if kind == .fine { expected.append(bytes(8, seed: 50 + i) + payload) }
            }
            var failures: [(Int, Errno?)] = []
            let sent = sender.send(batch) { failures.append(($0, $1)) }
            #expect(sent == expected.count, "\(kinds)")
            let refused = kinds.enumerated().filter { $0.element != .fine }
            #expect(failures.map(\.0) == refused.map(\.offset), "\(kinds): each refusal under its own index")
            #expect(failures.map(\.1) == refused.map { $0.element == .tooBig ? Errno.messageTooLong : .addressFamilyNotSupported },
                    "\(kinds): the kernel's errno")
            #expect(batch.count == 0)
            let got = try receiver.collect(expected.count, with: receiveBatch(capacity: 8, size: 2048, in: arena), timeout: 2)
            expectSameDatagrams(got.map(\.bytes), expected, "\(kinds): the others, once each, in order")
        }
        try run([.fine, .fine, .tooBig, .fine, .wrongFamily, .fine])
        try run([.tooBig, .fine, .fine])
        try run([.fine, .wrongFamily])
        try run([.wrongFamily, .tooBig])
    }

    /// sendmmsg takes what fits and says how many: a datagram socket whose peer does not read
    /// fills (an AF_UNIX pair with a small send buffer: each datagram stays charged to the
    /// sender until read), takes part of the batch, then none; after a short wait the rest are reported with no errno. With a
    /// reader making room, the send goes on from where sendmmsg stopped, each message once.
    @Test func aFullSocketTakesPartOfTheBatchAndTheRestGoOnceThereIsRoom() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                0, &pair) == 0)
        let sender = DatagramSocket(fd: pair[0], isIPv6: false)
        let reader = DatagramSocket(fd: pair[1], isIPv6: false)
        // Room for a score or so of these datagrams (the kernel doubles what it is given).
        var sendBuffer: Int32 = 16 << 10
        try #require(setsockopt(sender.fd, SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size)) == 0)
        let arena = Arena()
        let count = 64
        let messages = (0..<count).map { bytes(200, seed: $0) }
        func fill(_ batch: MessageBatch) {
            // A connected socket: no address (length 0).
            for m in messages { batch.append(addressLength: 0, header: arena.put(Array(m[0..<4])), payload: arena.put(Array(m[4...]))) }
        }
        func drain() throws -> [[UInt8]] {
            var got: [[UInt8]] = []
            let batch = receiveBatch(capacity: 16, size: 1024, in: arena)
            while true {
                let n = try reader.receive(batch)
                if n == 0 { return got }
                for i in 0..<n { got.append(Array(UnsafeRawBufferPointer(rebasing: batch.receiveBuffer(i)[0..<batch.receivedLength(i)]))) }
            }
        }

        // Nobody reads: part of the batch goes, the rest is reported as not sent (nil errno).
        let batch = MessageBatch(capacity: count)
        fill(batch)
        var failures: [(Int, Errno?)] = []
        let first = sender.send(batch) { failures.append(($0, $1)) }
        try #require(first > 0 && first < count, "the socket took \(first) of \(count)")
        #expect(failures.map(\.0) == Array(first..<count), "the ones not sent, each reported")
        #expect(failures.allSatisfy { $0.1 == nil }, "a full buffer, not an error: \(failures.compactMap(\.1))")
        expectSameDatagrams(try drain(), Array(messages[0..<first]), "those sent, in order, once")

        // A reader makes room while the send waits: it goes on from where sendmmsg stopped. The
        // reader is waiting in poll before the send starts, so that it wakes with the first
        // datagram: the send waits only 5 ms for room, and a thread started just before it was
        // not always running by then on a loaded machine (CI, once).
        let collected = ThreadResult<[[UInt8]]>()
        let done = DispatchSemaphore(value: 0)
        let ready = DispatchSemaphore(value: 0)
        let readerFD = reader.fd
        Thread {
            ready.signal()
            var got: [[UInt8]] = []
            var buffer = [UInt8](repeating: 0, count: 1024)
            let deadline = Date().addingTimeInterval(5)
            while got.count < count, Date() < deadline {
                guard Poller.wait(fd: readerFD, events: Int16(POLLIN), milliseconds: 100) else { continue }
                let n = recv(readerFD, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n > 0 { got.append(Array(buffer[0..<n])) }
            }
            collected.result = .success(got)
            done.signal()
        }.start()
        ready.wait()
        Thread.sleep(forTimeInterval: 0.05)  // into its poll
        fill(batch)
        failures = []
        let second = sender.send(batch) { failures.append(($0, $1)) }
        done.wait()
        let read = try collected.result!.get()
        try #require(second <= count, "\(second) reported sent of a batch of \(count): some twice")
        #expect(second > first, "the send went on past the first sendmmsg once the reader made room (\(second) of \(count))")
        expectSameDatagrams(read, Array(messages[0..<second]), "every message sent arrives once, in order")
        #expect(failures.map(\.0) == Array(second..<count))
    }
}
