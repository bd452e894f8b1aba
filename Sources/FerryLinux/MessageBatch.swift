import CFerryLinux
import Glibc
import FerryWire

/// The headers of one `sendmmsg`/`recvmmsg` call, allocated once: per message an `mmsghdr`,
/// two iovecs (a tunnel header and the frame it precedes, so a frame is never copied to be
/// sent) and an address; and a pool of iovecs for messages gathered from many pieces (a GSO
/// message of segment headers and payloads that stay in the buffer they were read into). The
/// buffers themselves belong to the caller.
public final class MessageBatch {
    public let capacity: Int
    @usableFromInline let headers: UnsafeMutablePointer<cferry_mmsghdr>
    @usableFromInline let iovecs: UnsafeMutablePointer<iovec>
    @usableFromInline let addresses: UnsafeMutablePointer<sockaddr_storage>
    /// Per message, room for control messages: on a send a UDP_SEGMENT size; on a receive the
    /// UDP_GRO segment size and the outer TOS or traffic class, with room to spare (a control
    /// area too small would make the kernel cut the TOS off silently, MSG_CTRUNC).
    @usableFromInline let controls: UnsafeMutableRawPointer
    @usableFromInline static var controlSpace: Int { 4 * cferry_cmsg_space(MemoryLayout<Int32>.size) }
    // A batch has one owner at a time (a worker thread): exclusivity is not checked at run
    // time, per message.
    /// Receives ask for control messages (the UDP_GRO segment size, the outer TOS).
    @exclusivity(unchecked) public var receivesControl = false
    /// Messages filled in for the next send, or received by the last receive. Emptying the
    /// batch gives the gathered messages' iovecs back.
    @inlinable public var count: Int {
        get { storedCount }
        set {
            storedCount = newValue
            if newValue == 0 { gatherUsed = 0 }
        }
    }
    // Stored apart from `count`: an observed property would be checked for exclusivity anyway.
    @exclusivity(unchecked) @usableFromInline var storedCount = 0
    /// Iovecs for gathered messages, taken in order by `appendGathered`.
    @usableFromInline let gatherIovecs: UnsafeMutablePointer<iovec>
    public let gatherCapacity: Int
    @exclusivity(unchecked) @usableFromInline var gatherUsed = 0

    /// `gatherCapacity`: iovecs shared by the gathered messages of one send.
    public init(capacity: Int, gatherCapacity: Int = 0) {
        precondition(capacity > 0 && capacity <= 1024, "a batch holds 1 to 1024 messages")
        precondition(gatherCapacity >= 0)
        self.capacity = capacity
        self.gatherCapacity = gatherCapacity
        gatherIovecs = .allocate(capacity: max(1, gatherCapacity))
        gatherIovecs.initialize(repeating: iovec(), count: max(1, gatherCapacity))
        headers = .allocate(capacity: capacity)
        headers.initialize(repeating: cferry_mmsghdr(), count: capacity)
        iovecs = .allocate(capacity: 2 * capacity)
        iovecs.initialize(repeating: iovec(), count: 2 * capacity)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_storage(), count: capacity)
        controls = .allocate(byteCount: capacity * Self.controlSpace, alignment: 8)
        controls.initializeMemory(as: UInt8.self, repeating: 0, count: capacity * Self.controlSpace)
    }

    deinit {
        headers.deallocate()
        iovecs.deallocate()
        gatherIovecs.deallocate()
        addresses.deallocate()
        controls.deallocate()
    }

    // MARK: Receiving

    /// Points message `i` at `buffer` for the next receive.
    public func setReceiveBuffer(_ i: Int, _ buffer: UnsafeMutableRawBufferPointer) {
        iovecs[2 * i] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        headers[i].msg_hdr.msg_iov = iovecs + 2 * i
        headers[i].msg_hdr.msg_iovlen = 1
        headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
    }

    /// Resets what the kernel overwrites on each receive.
    @inlinable
    func prepareForReceive() {
        for i in 0..<capacity {
            headers[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
            headers[i].msg_hdr.msg_control = receivesControl ? controls + i * Self.controlSpace : nil
            headers[i].msg_hdr.msg_controllen = receivesControl ? Self.controlSpace : 0
            headers[i].msg_hdr.msg_flags = 0
            headers[i].msg_len = 0
        }
    }

    /// Bytes received into message `i`.
    @inlinable public func receivedLength(_ i: Int) -> Int { Int(headers[i].msg_len) }

    /// True when message `i` did not fit its buffer.
    @inlinable public func wasTruncated(_ i: Int) -> Bool { headers[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    /// The size of the datagrams the kernel joined into message `i` (UDP_GRO), if it did.
    @inlinable public func groSegmentSize(_ i: Int) -> Int? {
        guard receivesControl, let size = udpControl(i, type: CFERRY_UDP_GRO, as: Int32.self), size > 0 else { return nil }
        return Int(size)
    }

    /// The outer IPv4 TOS or IPv6 traffic class of message `i` (IP_RECVTOS, IPV6_RECVTCLASS),
    /// if the socket reports it.
    @inlinable public func receivedTOS(_ i: Int) -> UInt8? {
        guard receivesControl else { return nil }
        if let tos = control(i, level: Int32(IPPROTO_IP), type: IP_TOS, as: UInt8.self) { return tos }
        return control(i, level: Int32(IPPROTO_IPV6), type: IPV6_TCLASS, as: Int32.self).map { UInt8(truncatingIfNeeded: $0) }
    }

    /// Where message `i` came from.
    @inlinable public func source(_ i: Int) -> (IPAddress, UInt16)? {
        SocketAddress.decode(UnsafeRawPointer(addresses + i))
    }

    // MARK: Sending

    /// Adds a message of `header` then `payload` (either may be empty) to `destination`, which
    /// must stay in place until the batch is sent. False when the batch is full.
    @inlinable @discardableResult
    public func append(to destination: UnsafePointer<SocketAddress>, header: UnsafeRawBufferPointer,
                       payload: UnsafeRawBufferPointer) -> Bool {
        append(name: UnsafeMutableRawPointer(mutating: UnsafeRawPointer(destination)), length: destination.pointee.length,
               header: header, payload: payload)
    }

    /// The batch's own room for message `i`'s address (a sockaddr_storage), for a sender that
    /// copies the address in rather than pointing at one that may change (`append(addressLength:)`).
    @inlinable public func addressStorage(_ i: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(addresses + i) }

    /// Adds a message of `header` then `payload` to the address already copied into
    /// `addressStorage(count)`, `addressLength` bytes long. False when the batch is full.
    @inlinable @discardableResult
    public func append(addressLength: Int, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> Bool {
        append(name: UnsafeMutableRawPointer(addresses + count), length: socklen_t(addressLength), header: header, payload: payload)
    }

    @inlinable
    func append(name: UnsafeMutableRawPointer, length: socklen_t, header: UnsafeRawBufferPointer,
                payload: UnsafeRawBufferPointer) -> Bool {
        guard count < capacity else { return false }
        let i = count
        let iov = iovecs + 2 * i
        iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count)
        iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        headers[i].msg_hdr.msg_iov = iov
        headers[i].msg_hdr.msg_iovlen = 2
        headers[i].msg_hdr.msg_name = name
        headers[i].msg_hdr.msg_namelen = length
        headers[i].msg_hdr.msg_controllen = 0
        headers[i].msg_hdr.msg_control = nil
        headers[i].msg_hdr.msg_flags = 0
        count += 1
        return true
    }

    /// Whether `messages` more messages fit, and gathered pieces `pieces` more.
    @inlinable public func hasRoom(messages: Int, pieces: Int = 0) -> Bool {
        count + messages <= capacity && gatherUsed + pieces <= gatherCapacity
    }

    /// Opens a UDP GSO message to `destination` gathered from up to `pieces` buffers, each
    /// added next with `appendPiece`: the kernel cuts the pieces' bytes, end to end, into
    /// datagrams of `segmentSize` bytes (the last may be shorter); with 0, one datagram. The pieces and `destination`
    /// must stay in place until the batch is sent. False when there is no room (`hasRoom`).
    @inlinable @discardableResult
    public func appendGathered(to destination: UnsafePointer<SocketAddress>, segmentSize: Int, pieces: Int) -> Bool {
        guard hasRoom(messages: 1, pieces: pieces) else { return false }
        let i = count
        headers[i].msg_hdr.msg_iov = gatherIovecs + gatherUsed
        headers[i].msg_hdr.msg_iovlen = 0
        headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(destination))
        headers[i].msg_hdr.msg_namelen = destination.pointee.length
        headers[i].msg_hdr.msg_flags = 0
        gatherUsed += pieces
        count += 1
        if segmentSize > 0 {
            setUDPControl(i, type: CFERRY_UDP_SEGMENT, value: UInt16(segmentSize))
        } else {
            headers[i].msg_hdr.msg_control = nil
            headers[i].msg_hdr.msg_controllen = 0
        }
        return true
    }

    /// Adds `piece` to the message `appendGathered` opened last, within the pieces it asked for.
    @inlinable
    public func appendPiece(_ piece: UnsafeRawBufferPointer) {
        let i = count - 1
        let n = Int(headers[i].msg_hdr.msg_iovlen)
        let iov = headers[i].msg_hdr.msg_iov!
        precondition(iov + n < gatherIovecs + gatherUsed, "more pieces than the message asked room for")
        iov[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: piece.baseAddress), iov_len: piece.count)
        headers[i].msg_hdr.msg_iovlen = n + 1
    }

    /// Adds a message with the same bytes (and GSO size) as message `m`, to `destination`: the
    /// two share their iovecs, which the kernel only reads. False when the batch is full.
    @inlinable @discardableResult
    public func appendCopy(of m: Int, to destination: UnsafePointer<SocketAddress>) -> Bool {
        guard count < capacity, m < count else { return false }
        let i = count
        headers[i].msg_hdr.msg_iov = headers[m].msg_hdr.msg_iov
        headers[i].msg_hdr.msg_iovlen = headers[m].msg_hdr.msg_iovlen
        headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(destination))
        headers[i].msg_hdr.msg_namelen = destination.pointee.length
        headers[i].msg_hdr.msg_flags = 0
        if headers[m].msg_hdr.msg_controllen > 0 {
            let control = controls + i * Self.controlSpace
            control.copyMemory(from: headers[m].msg_hdr.msg_control!, byteCount: Int(headers[m].msg_hdr.msg_controllen))
            headers[i].msg_hdr.msg_control = control
            headers[i].msg_hdr.msg_controllen = headers[m].msg_hdr.msg_controllen
        } else {
            headers[i].msg_hdr.msg_control = nil
            headers[i].msg_hdr.msg_controllen = 0
        }
        count += 1
        return true
    }

    /// Adds one UDP GSO message: `payload` holds segments of `segmentSize` bytes end to end (the
    /// last may be shorter), each sent by the kernel as its own datagram to `destination`.
    @inlinable @discardableResult
    public func append(to destination: UnsafePointer<SocketAddress>, payload: UnsafeRawBufferPointer,
                       segmentSize: Int) -> Bool {
        guard append(to: destination, header: UnsafeRawBufferPointer(start: nil, count: 0), payload: payload) else { return false }
        setUDPControl(count - 1, type: CFERRY_UDP_SEGMENT, value: UInt16(segmentSize))
        return true
    }

    /// Puts one SOL_UDP control message of `type` carrying `value` on message `i` (and no
    /// other: the length covers this one exactly, as the kernel checks every one it is given).
    @inlinable
    func setUDPControl<T: FixedWidthInteger>(_ i: Int, type: Int32, value: T) {
        headers[i].msg_hdr.msg_control = controls + i * Self.controlSpace
        headers[i].msg_hdr.msg_controllen = cferry_cmsg_space(MemoryLayout<T>.size)
        let cmsg = cferry_cmsg_firsthdr(&headers[i].msg_hdr)!
        cmsg.pointee.cmsg_level = CFERRY_SOL_UDP
        cmsg.pointee.cmsg_type = type
        cmsg.pointee.cmsg_len = cferry_cmsg_len(MemoryLayout<T>.size)
        UnsafeMutableRawPointer(cferry_cmsg_data(cmsg)!).storeBytes(of: value, as: T.self)
    }

    /// The value of message `i`'s SOL_UDP control message of `type`, if it has one.
    @inlinable
    func udpControl<T: FixedWidthInteger>(_ i: Int, type: Int32, as: T.Type) -> T? {
        control(i, level: CFERRY_SOL_UDP, type: type, as: T.self)
    }

    /// The value of message `i`'s control message at `level` of `type`, if it has one.
    @inlinable
    func control<T: FixedWidthInteger>(_ i: Int, level: Int32, type: Int32, as: T.Type) -> T? {
        guard headers[i].msg_hdr.msg_controllen > 0 else { return nil }
        var next = cferry_cmsg_firsthdr(&headers[i].msg_hdr)
        while let cmsg = next {
            if cmsg.pointee.cmsg_level == level, cmsg.pointee.cmsg_type == type,
               Int(cmsg.pointee.cmsg_len) >= cferry_cmsg_len(MemoryLayout<T>.size) {
                return UnsafeRawPointer(cferry_cmsg_data(cmsg)!).loadUnaligned(as: T.self)
            }
            next = cferry_cmsg_nxthdr(&headers[i].msg_hdr, cmsg)
        }
        return nil
    }

    /// The number of bytes message `i` carries (header and payload, or all its pieces).
    @inlinable public func messageLength(_ i: Int) -> Int {
        let iov = headers[i].msg_hdr.msg_iov!
        var n = 0
        for k in 0..<Int(headers[i].msg_hdr.msg_iovlen) { n += iov[k].iov_len }
        return n
    }

    /// Copies message `i`'s bytes (all its pieces, joined) into `buffer`, as far as they fit;
    /// how many. For captures: no allocation.
    public func gather(_ i: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let iov = headers[i].msg_hdr.msg_iov!
        var n = 0
        for k in 0..<Int(headers[i].msg_hdr.msg_iovlen) {
            guard let base = iov[k].iov_base else { continue }
            let take = min(iov[k].iov_len, buffer.count - n)
            if take > 0 { (buffer.baseAddress! + n).copyMemory(from: base, byteCount: take) }
            n += take
        }
        return n
    }
}

extension MessageBatch {
    /// For a fake transport: records that message `i` received `length` bytes from `source`
    /// (and no control messages yet).
    public func setReceived(_ i: Int, length: Int, source: IPAddress, port: UInt16 = 0) {
        headers[i].msg_len = UInt32(length)
        headers[i].msg_hdr.msg_control = controls + i * Self.controlSpace
        headers[i].msg_hdr.msg_controllen = 0
        var sa = SocketAddress(source, port: port)
        withUnsafeBytes(of: &sa.storage) { UnsafeMutableRawPointer(addresses + i).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// For a fake transport: marks message `i` as `segmentSize`-byte datagrams joined by UDP_GRO.
    public func setGROSegmentSize(_ i: Int, _ segmentSize: Int) {
        appendReceivedControl(i, level: CFERRY_SOL_UDP, type: CFERRY_UDP_GRO, value: Int32(segmentSize))
    }

    /// For a fake transport: the outer TOS (`ipv6`: traffic class) message `i` arrived with.
    public func setReceivedTOS(_ i: Int, _ tos: UInt8, ipv6: Bool = false) {
        if ipv6 {
            appendReceivedControl(i, level: Int32(IPPROTO_IPV6), type: IPV6_TCLASS, value: Int32(tos))
        } else {
            appendReceivedControl(i, level: Int32(IPPROTO_IP), type: IP_TOS, value: tos)
        }
    }

    /// Adds a control message after those message `i` already holds, as the kernel lays them out.
    func appendReceivedControl<T: FixedWidthInteger>(_ i: Int, level: Int32, type: Int32, value: T) {
        receivesControl = true
        let base = controls + i * Self.controlSpace
        if headers[i].msg_hdr.msg_control == nil { headers[i].msg_hdr.msg_controllen = 0 }
        headers[i].msg_hdr.msg_control = base
        let at = Int(headers[i].msg_hdr.msg_controllen)
        precondition(at + cferry_cmsg_space(MemoryLayout<T>.size) <= Self.controlSpace)
        let cmsg = (base + at).assumingMemoryBound(to: cmsghdr.self)
        cmsg.pointee.cmsg_level = level
        cmsg.pointee.cmsg_type = type
        cmsg.pointee.cmsg_len = cferry_cmsg_len(MemoryLayout<T>.size)
        UnsafeMutableRawPointer(cferry_cmsg_data(cmsg)!).storeBytes(of: value, as: T.self)
        headers[i].msg_hdr.msg_controllen = at + cferry_cmsg_space(MemoryLayout<T>.size)
    }

    /// For a fake transport: the receive buffer of message `i`.
    public func receiveBuffer(_ i: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: iovecs[2 * i].iov_base, count: iovecs[2 * i].iov_len)
    }

    /// For a fake transport and for captures: message `i`'s destination and its bytes, header
    /// and payload joined.
    public func message(_ i: Int) -> (destination: IPAddress?, bytes: [UInt8]) {
        let name = headers[i].msg_hdr.msg_name.map { SocketAddress.decode(UnsafeRawPointer($0))?.0 } ?? nil
        var bytes: [UInt8] = []
        for k in 0..<Int(headers[i].msg_hdr.msg_iovlen) {
            let v = headers[i].msg_hdr.msg_iov[k]
            if let base = v.iov_base { bytes += UnsafeRawBufferPointer(start: base, count: v.iov_len) }
        }
        return (name, bytes)
    }
}

extension MessageBatch {
    /// For a fake transport: the link-layer destination (sockaddr_ll) message `i` is sent to,
    /// if it names one.
    public func linkDestination(_ i: Int) -> (interfaceIndex: Int32, mac: MACAddress, etherType: UInt16)? {
        guard let name = headers[i].msg_hdr.msg_name, headers[i].msg_hdr.msg_namelen >= 20,
              name.load(as: UInt16.self) == UInt16(AF_PACKET) else { return nil }
        let bytes = UnsafeRawBufferPointer(start: name, count: 20)
        return (bytes.loadUnaligned(fromByteOffset: 4, as: Int32.self), MACAddress(bytes, at: 12),
                UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
    }

    /// The UDP_SEGMENT size message `i` carries, if it is a GSO message.
    public func segmentSize(_ i: Int) -> Int? {
        udpControl(i, type: CFERRY_UDP_SEGMENT, as: UInt16.self).map(Int.init)
    }

    /// Calls `body` with each datagram GSO message `i` stands for (its bytes, from all its
    /// pieces, cut every `segmentSize(i)` bytes), joined in `scratch`; nothing for a message that
    /// is not GSO. For sending such a message again where the kernel refused it whole.
    public func forEachDatagram(of i: Int, scratch: UnsafeMutableRawBufferPointer,
                                _ body: (UnsafeRawBufferPointer) -> Void) {
        guard let size = segmentSize(i), size > 0, size <= scratch.count else { return }
        let iov = headers[i].msg_hdr.msg_iov!
        var filled = 0
        for k in 0..<Int(headers[i].msg_hdr.msg_iovlen) {
            guard let base = iov[k].iov_base else { continue }
            var offset = 0
            while offset < iov[k].iov_len {
                let n = min(size - filled, iov[k].iov_len - offset)
                (scratch.baseAddress! + filled).copyMemory(from: base + offset, byteCount: n)
                filled += n
                offset += n
                if filled == size {
                    body(UnsafeRawBufferPointer(start: scratch.baseAddress, count: filled))
                    filled = 0
                }
            }
        }
        if filled > 0 { body(UnsafeRawBufferPointer(start: scratch.baseAddress, count: filled)) }
    }

    /// Message `i`'s destination as the kernel takes it (a sockaddr and its length).
    public func destinationName(_ i: Int) -> (UnsafeRawPointer?, socklen_t) {
        (headers[i].msg_hdr.msg_name.map { UnsafeRawPointer($0) }, headers[i].msg_hdr.msg_namelen)
    }
}
