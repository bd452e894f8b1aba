import CFerryLinux
import Glibc
import FerryWire

/// The headers of one `sendmmsg`/`recvmmsg` call, allocated once: per message an `mmsghdr`,
/// two iovecs (a tunnel header and the frame it precedes, so a frame is never copied to be
/// sent) and an address. The buffers themselves belong to the caller.
public final class MessageBatch {
    public let capacity: Int
    @usableFromInline let headers: UnsafeMutablePointer<cferry_mmsghdr>
    @usableFromInline let iovecs: UnsafeMutablePointer<iovec>
    @usableFromInline let addresses: UnsafeMutablePointer<sockaddr_storage>
    /// Messages filled in for the next send, or received by the last receive.
    public var count = 0

    public init(capacity: Int) {
        precondition(capacity > 0 && capacity <= 1024, "a batch holds 1 to 1024 messages")
        self.capacity = capacity
        headers = .allocate(capacity: capacity)
        headers.initialize(repeating: cferry_mmsghdr(), count: capacity)
        iovecs = .allocate(capacity: 2 * capacity)
        iovecs.initialize(repeating: iovec(), count: 2 * capacity)
        addresses = .allocate(capacity: capacity)
        addresses.initialize(repeating: sockaddr_storage(), count: capacity)
    }

    deinit {
        headers.deallocate()
        iovecs.deallocate()
        addresses.deallocate()
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
            headers[i].msg_hdr.msg_controllen = 0
            headers[i].msg_hdr.msg_flags = 0
            headers[i].msg_len = 0
        }
    }

    /// Bytes received into message `i`.
    @inlinable public func receivedLength(_ i: Int) -> Int { Int(headers[i].msg_len) }

    /// True when message `i` did not fit its buffer.
    @inlinable public func wasTruncated(_ i: Int) -> Bool { headers[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

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
        guard count < capacity else { return false }
        let i = count
        let iov = iovecs + 2 * i
        iov[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count)
        iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
        headers[i].msg_hdr.msg_iov = iov
        headers[i].msg_hdr.msg_iovlen = 2
        headers[i].msg_hdr.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(destination))
        headers[i].msg_hdr.msg_namelen = destination.pointee.length
        headers[i].msg_hdr.msg_controllen = 0
        headers[i].msg_hdr.msg_control = nil
        headers[i].msg_hdr.msg_flags = 0
        count += 1
        return true
    }

    /// The number of bytes message `i` carries (header and payload).
    @inlinable public func messageLength(_ i: Int) -> Int {
        Int(iovecs[2 * i].iov_len) + Int(iovecs[2 * i + 1].iov_len)
    }
}

extension MessageBatch {
    /// For a fake transport: records that message `i` received `length` bytes from `source`.
    public func setReceived(_ i: Int, length: Int, source: IPAddress, port: UInt16 = 0) {
        headers[i].msg_len = UInt32(length)
        var sa = SocketAddress(source, port: port)
        withUnsafeBytes(of: &sa.storage) { UnsafeMutableRawPointer(addresses + i).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
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
