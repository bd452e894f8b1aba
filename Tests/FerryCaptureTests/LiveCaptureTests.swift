#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import FerryCapture

/// Live capture on the loopback interface (needs root, as the test lab does). Each test binds
/// its own kernel-chosen UDP port and filters on it, so parallel tests do not see each other.
@Suite struct LiveCaptureTests {
    /// A UDP socket bound to 127.0.0.1 on a port the kernel picks, so the port is ours alone and
    /// datagrams sent to it are received rather than answered with ICMP port unreachable.
    final class LoopbackReceiver {
        let descriptor: Int32
        let port: UInt16

        init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try #require(descriptor >= 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                    bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
                }
            }
            guard bound, address.sin_port != 0 else {
                Glibc.close(descriptor)
                throw BindFailed()
            }
            self.descriptor = descriptor
            self.port = UInt16(bigEndian: address.sin_port)
        }

        struct BindFailed: Error {}

        deinit {
            Glibc.close(descriptor)
        }

        /// Sends one datagram from a fresh socket to this receiver.
        func send(_ payload: [UInt8]) throws {
            let sender = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try #require(sender >= 0)
            defer { Glibc.close(sender) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = port.bigEndian
            let sent = payload.withUnsafeBytes { bytes in
                withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                        sendto(sender, bytes.baseAddress, bytes.count, 0, generic, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            #expect(sent == payload.count)
        }
    }

    @Test(arguments: [LiveCapture.Direction.inOut, .in])
    func capturesDatagramsSentOverLoopbackInOrder(direction: LiveCapture.Direction) throws {
        let receiver = try LoopbackReceiver()
        let capture = try LiveCapture(interface: "lo", filter: "udp and port \(receiver.port)", direction: direction)
        #expect(capture.linkType == .ethernet)
        #expect(capture.selectableFileDescriptor >= 0)
        // Nothing has been sent yet: a non-blocking read finds nothing and returns at once.
        #expect(try capture.next() == nil)

        let tag = UUID().uuidString
        let payloads = (1...5).map { Array("ferry-capture \(tag) #\($0) ".utf8) + [UInt8](repeating: UInt8($0), count: $0 * 10) }
        for payload in payloads {
            try receiver.send(payload)
        }

        // Bounded in count and in time; how long it takes is not the point.
        var captured: [OwnedFrame] = []
        let started = Date()
        var attempts = 0
        while captured.count < payloads.count, attempts < 50, Date().timeIntervalSince(started) < 10 {
            attempts += 1
            if let frame = try capture.next(timeoutMilliseconds: 200) {
                captured.append(frame.owned())
            }
        }

        try #require(captured.count == payloads.count)
        for (frame, payload) in zip(captured, payloads) {
            #expect(frame.bytes.suffix(payload.count).elementsEqual(payload))
            // Ethernet (zero addresses on lo) + IPv4 + UDP + payload, nothing cut.
            #expect(frame.capturedLength == 14 + 20 + 8 + payload.count)
            #expect(frame.originalLength == frame.capturedLength)
            #expect(frame.bytes[12] == 0x08 && frame.bytes[13] == 0x00 && frame.bytes[23] == 17)
            // The kernel's stamp, converted as wall-clock time: within a minute of now.
            #expect(abs(frame.timestamp.seconds - PacketTimestamp.now().seconds) < 60)
        }
        #expect(capture.statistics().received >= UInt32(payloads.count))

        capture.close()
        capture.close()  // idempotent
        #expect(capture.selectableFileDescriptor == -1)
        #expect(try capture.next(timeoutMilliseconds: 10) == nil)
    }

    @Test func waitingWithNothingToCaptureReturnsNil() throws {
        let receiver = try LoopbackReceiver()
        // The filter matches only our own port, to which nothing is sent.
        let capture = try LiveCapture(interface: "lo", immediate: false, bufferSize: 1 << 20,
                                      filter: "udp and port \(receiver.port)", direction: .in)
        #expect(capture.activationWarning == nil)
        // Other tests' traffic on lo reaches the socket before the filter is attached (and is
        // counted by `statistics()`); libpcap must drain it rather than hand it over.
        #expect(try capture.next(timeoutMilliseconds: 50) == nil)
        #expect(capture.statistics().dropped == 0)
    }

    @Test func unknownInterfaceIsNamedInTheError() {
        #expect(throws: CaptureError.noSuchInterface(name: "ferrynope0")) {
            try LiveCapture(interface: "ferrynope0")
        }
    }

    @Test func badFilterOnALiveCaptureIsABadFilter() {
        #expect {
            try LiveCapture(interface: "lo", filter: "udp port")
        } throws: { error in
            guard case .badFilter(let expression, let reason) = error as? CaptureError else { return false }
            return expression == "udp port" && !reason.isEmpty
        }
    }
}
