import FerryLinux
import Foundation
import SystemPackage
import Testing

/// The control channel's socket: a request line in, a reply out, over a Unix stream socket in a
/// directory of the test's own.
@Suite struct UnixSocketTests {
    func withDirectory<R>(_ body: (String) throws -> R) throws -> R {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("ferry-unix-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    /// The server's end of a connection, once the client's connect is queued.
    func accepted(_ server: UnixSocket) throws -> UnixSocket {
        #expect(Poller.wait(fd: server.fd, events: Int16(POLLIN), milliseconds: 2000))
        return try #require(try server.acceptNonBlocking())
    }

    /// One exchange as the control server makes it, non-blocking: the request read as it is,
    /// then a reply longer than a socket buffer holds sent in whatever pieces the socket takes
    /// (`.wouldBlock` when full, never blocking), the client reading between them: all of it
    /// arrives, in order. The socket file is root's alone.
    @Test func aRequestInAndALongReplyOutWithoutBlocking() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            // Root's only: the socket lets anyone who can connect read the data plane's state.
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600)

            let client = try UnixSocket.connect(to: path)
            let connection = try accepted(server)
            var request: [UInt8] = []
            #expect(try connection.receive(upTo: 100, appendingTo: &request).value == nil, "nothing sent yet: wouldBlock")
            try client.writeAll(Array("stats --json\nleft over".utf8))
            #expect(try connection.receive(upTo: 5, appendingTo: &request).value == 5, "at most what was asked")
            #expect(try connection.receive(upTo: 100, appendingTo: &request).value == 17)
            #expect(String(decoding: request, as: UTF8.self) == "stats --json\nleft over")

            let reply = bytes(3 << 20, seed: 9)
            var sent = 0, blocked = 0
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while received.count < reply.count {
                // As much as the socket takes, then the client reads what is there.
                while sent < reply.count, let n = try connection.sendSome(reply[sent...]).value { sent += n }
                if sent < reply.count { blocked += 1 }
                guard Poller.wait(fd: client.fd, events: Int16(POLLIN), milliseconds: 2000) else { break }
                repeat {
                    let n = read(client.fd, &chunk, chunk.count)
                    guard n > 0 else { break }
                    received += chunk[0..<n]
                } while Poller.wait(fd: client.fd, events: Int16(POLLIN), milliseconds: 0)
            }
            #expect(blocked > 0, "3 MiB does not fit a socket buffer: the sender was told so rather than blocked")
            #expect(received == reply, "\(received.count) of \(reply.count) bytes, in order")
        }
    }

    @Test func readAllReadsUntilThePeerCloses() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            let reply = bytes(50_000, seed: 3)
            var client: UnixSocket? = try UnixSocket.connect(to: path)
            let connection = try accepted(server)
            // Small enough to sit in the socket buffer; then the server's end closes.
            try client!.writeAll(reply)
            client = nil
            #expect(try connection.readAll() == reply)
        }
    }

    /// A peer that has shut its side reads as 0 (the end), after what it sent; one that has
    /// gone makes a send fail with an error (EPIPE), not a signal that would end the process.
    @Test func theEndAndAGonePeerAreOutcomesNotSignals() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            var client: UnixSocket? = try UnixSocket.connect(to: path)
            let connection = try accepted(server)
            try client!.writeAll(Array("fdb".utf8))
            client = nil
            var request: [UInt8] = []
            #expect(try connection.receive(upTo: 100, appendingTo: &request).value == 3)
            #expect(try connection.receive(upTo: 100, appendingTo: &request).value == 0)
            #expect(request == Array("fdb".utf8))
            let gone = #expect(throws: LinuxError.self) { try connection.sendSome(ArraySlice(bytes(100, seed: 1))) }
            #expect(gone?.errno == .brokenPipe || gone?.errno == .connectionReset, "\(String(describing: gone))")
        }
    }

    /// A second listener on a path in use is refused (it would take the first one's clients);
    /// a socket file nobody listens on (left by a crash) is replaced.
    @Test func aLiveSocketIsRefusedAndAStaleOneReplaced() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            var first: UnixSocket? = try UnixSocket.listen(at: path)
            let inUse = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: path) }
            #expect(inUse?.errno == .addressInUse && inUse?.hint?.contains("another ferry is running on \(path)") == true,
                    "\(String(describing: inUse))")
            _ = first
            first = nil  // closed: the file stays, stale
            #expect(FileManager.default.fileExists(atPath: path))
            let second = try UnixSocket.listen(at: path)
            let client = try UnixSocket.connect(to: path)
            #expect(try accepted(second).fd >= 0, "the new listener takes connections")
            _ = client
        }
    }

    /// A listener whose queue is full still counts as running (a non-blocking connect says
    /// EAGAIN, which must not read as stale).
    @Test func aListenerWithAFullQueueIsStillRunning() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let first = try UnixSocket.listen(at: path, backlog: 1)
            var waiting: [Int32] = []
            defer { waiting.forEach { close($0) } }
            // Never accepted: the queue fills (a blocking connect would then wait for ever).
            for _ in 0..<4 {
                let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                var sa = sockaddr_un()
                sa.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
                _ = withUnsafePointer(to: &sa) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                waiting.append(fd)
            }
            let inUse = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: path) }
            #expect(inUse?.errno == .addressInUse, "\(String(describing: inUse))")
            _ = first
        }
    }

    /// What is at the path and is not a socket (a file, a directory, a symbolic link, even to a
    /// socket) is never replaced: an error that says so, and the thing left as it was.
    @Test func anythingButASocketIsLeftAlone() throws {
        try withDirectory { dir in
            let file = dir + "/file.sock"
            try Data("keep me".utf8).write(to: URL(fileURLWithPath: file))
            let notSocket = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: file) }
            #expect(notSocket?.errno == .fileExists && notSocket?.hint?.contains("not a socket") == true,
                    "\(String(describing: notSocket))")
            #expect(FileManager.default.contents(atPath: file) == Data("keep me".utf8))

            let directory = dir + "/dir.sock"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            #expect(throws: LinuxError.self) { try UnixSocket.listen(at: directory) }
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) && isDirectory.boolValue)

            let target = dir + "/real.sock"
            let real = try UnixSocket.listen(at: target)
            let link = dir + "/link.sock"
            try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
            let linked = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: link) }
            #expect(linked?.hint?.contains("not a socket") == true, "\(String(describing: linked))")
            #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == target)
            _ = real
        }
    }

    /// A listener removes its own socket file when asked, and nothing that has replaced it.
    @Test func aListenerRemovesItsOwnFileOnly() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let first = try UnixSocket.listen(at: path)
            first.removeBoundFile()
            #expect(!FileManager.default.fileExists(atPath: path))

            let second = try UnixSocket.listen(at: path)
            try FileManager.default.removeItem(atPath: path)
            try Data("someone else's".utf8).write(to: URL(fileURLWithPath: path))
            second.removeBoundFile()
            #expect(FileManager.default.contents(atPath: path) == Data("someone else's".utf8))
        }
    }

    @Test func badPathsSayWhatIsWrong() throws {
        try withDirectory { dir in
            let long = dir + "/" + String(repeating: "x", count: 120)
            let tooLong = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: long) }
            #expect(tooLong?.errno == .fileNameTooLong)
            #expect(!FileManager.default.fileExists(atPath: long))
            let nobody = #expect(throws: LinuxError.self) { try UnixSocket.connect(to: dir + "/none.sock") }
            #expect(nobody?.errno == .noSuchFileOrDirectory && nobody?.hint?.contains("no ferry is running") == true)
            let noDirectory = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: dir + "/missing/ctl.sock") }
            #expect(noDirectory?.hint?.contains("does not exist") == true, "\(String(describing: noDirectory))")
        }
    }

    @Test func acceptWithNobodyWaitingReturnsNilAtOnce() throws {
        try withDirectory { dir in
            let server = try UnixSocket.listen(at: dir + "/ctl.sock")
            #expect(try server.acceptNonBlocking() == nil)
        }
    }

    /// A pair wakes a poll on one end by a byte written to the other.
    @Test func aPairWakesAPoll() throws {
        let (a, b) = try UnixSocket.pair()
        #expect(!Poller.wait(fd: a.fd, events: Int16(POLLIN), milliseconds: 0))
        #expect(try b.sendSome([1]).value == 1)
        #expect(Poller.wait(fd: a.fd, events: Int16(POLLIN), milliseconds: 1000))
    }
}
