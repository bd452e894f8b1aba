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

    /// One exchange as `ferry ctl` makes it: the server reads the request line, the client
    /// reads the whole reply until the server closes, however long (more than a socket buffer
    /// holds, so written in pieces and read in many).
    @Test func aRequestLineInAndAWholeReplyOut() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            // Root's only: the socket lets anyone who can connect reconfigure the data plane.
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber
            #expect(mode?.intValue == 0o600)

            let client = try UnixSocket.connect(to: path)
            let connection = try #require(try server.accept(waitingUpTo: 2000))
            try client.writeAll(Array("stats --json\nleft over".utf8))
            #expect(try connection.readLine() == "stats --json")

            let reply = bytes(3 << 20, seed: 9)
            let writer = Handover(connection)
            let wrote = DispatchSemaphore(value: 0)
            let failure = ThreadResult<Void>()
            Thread {
                failure.result = Result { try writer.value.writeAll(reply) }
                wrote.signal()
            }.start()
            // The writer blocks until the reader has taken most of it: read first, then let it close.
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while received.count < reply.count {
                let n = read(client.fd, &chunk, chunk.count)
                guard n > 0 else { break }
                received += chunk[0..<n]
            }
            wrote.wait()
            try failure.result?.get()
            #expect(received == reply, "\(received.count) of \(reply.count) bytes, in order")
        }
    }

    @Test func readAllReadsUntilThePeerCloses() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            let reply = bytes(50_000, seed: 3)
            var client: UnixSocket? = try UnixSocket.connect(to: path)
            let connection = try #require(try server.accept(waitingUpTo: 2000))
            // Small enough to sit in the socket buffer; then the server's end closes.
            try client!.writeAll(reply)
            client = nil
            #expect(try connection.readAll() == reply)
        }
    }

    /// A request line is bounded: a client that never sends a newline gets at most `limit`
    /// bytes read, and the read ends.
    @Test func aLineWithoutANewlineIsCutAtTheLimit() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            let client = try UnixSocket.connect(to: path)
            let connection = try #require(try server.accept(waitingUpTo: 2000))
            try client.writeAll([UInt8](repeating: 0x61, count: 10_000))
            let line = try connection.readLine()
            #expect(line.utf8.count <= 4096, "the default limit: \(line.utf8.count) bytes read")
            #expect(line.utf8.count > 0)
        }
    }

    /// The limit is "at most `limit` bytes" even when it is not a multiple of the 512-byte
    /// chunk reads go in (a regression test: it used to be overshot to the next chunk).
    @Test func aLimitThatIsNotAMultipleOfTheChunkIsStillAtMost() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            let server = try UnixSocket.listen(at: path)
            let client = try UnixSocket.connect(to: path)
            let connection = try #require(try server.accept(waitingUpTo: 2000))
            try client.writeAll([UInt8](repeating: 0x61, count: 3000))
            let line = try connection.readLine(limit: 1000)
            #expect(line.utf8.count == 1000, "\(line.utf8.count) bytes for a limit of 1000")
        }
    }

    /// A second listener on a path in use is refused (it would take the first one's clients);
    /// a socket file nobody listens on (left by a crash) is replaced.
    @Test func aLiveSocketIsRefusedAndAStaleOneReplaced() throws {
        try withDirectory { dir in
            let path = dir + "/ctl.sock"
            var first: UnixSocket? = try UnixSocket.listen(at: path)
            let inUse = #expect(throws: LinuxError.self) { try UnixSocket.listen(at: path) }
            #expect(inUse?.errno == .addressInUse && inUse?.hint?.contains("another ferry") == true, "\(String(describing: inUse))")
            _ = first
            first = nil  // closed: the file stays, stale
            #expect(FileManager.default.fileExists(atPath: path))
            let second = try UnixSocket.listen(at: path)
            let client = try UnixSocket.connect(to: path)
            #expect(try second.accept(waitingUpTo: 2000) != nil, "the new listener takes connections")
            _ = client
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

    @Test func acceptWithNobodyWaitingReturnsNilInTime() throws {
        try withDirectory { dir in
            let server = try UnixSocket.listen(at: dir + "/ctl.sock")
            let start = Date()
            #expect(try server.accept(waitingUpTo: 100) == nil)
            #expect(Date().timeIntervalSince(start) < 2)
        }
    }
}
