// The HTTP side on loopback, with a plain socket as the client: what is served, what is
// refused, and that a silent or slow client holds nothing up.

import FerryEngine
@testable import FerryMetrics
import FerryWire
import Foundation
import Glibc
import NIOCore
import Testing

@Suite("MetricsServer")
struct MetricsServerTests {
    @Test("GET /metrics answers 200 with the exposition; keep-alive serves a second request on the same connection")
    func servesMetrics() throws {
        try withServer { server in
            let c = try TestClient(port: server.port)
            defer { c.close() }
            for _ in 0..<2 {
                let r = try c.request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(r.status == 200)
                #expect(r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
                #expect(sample(r.body, "ferry_tap_rx_frames_total") == 17)
            }
        }
    }

    @Test("an unknown path is 404, a method other than GET on /metrics 405 with Allow: GET")
    func refusals() throws {
        try withServer { server in
            for (request, status) in [("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                                      ("GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                                      ("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 405),
                                      ("DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405)] {
                let c = try TestClient(port: server.port)
                defer { c.close() }
                let r = try c.request(request)
                #expect(r.status == status, "\(request)")
                if status == 405 { #expect(r.headers["allow"] == "GET") }
            }
            let c = try TestClient(port: server.port)
            defer { c.close() }
            #expect(try c.request("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").status == 200, "a query string is ignored")
        }
    }

    @Test("requests are bounded: headers beyond the limit get 400, a body beyond it 413, and the connection closes")
    func boundedRequests() throws {
        try withServer { server in
            let big = String(repeating: "a", count: server.limits.headerFieldBytes + 100)
            var c = try TestClient(port: server.port)
            var r = try c.request("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n")
            #expect(r.status == 400)
            #expect(c.isClosedByServer(within: 5))
            c.close()

            c = try TestClient(port: server.port)
            let body = String(repeating: "b", count: server.limits.bodyBytes + 100)
            r = try c.request("GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            #expect(r.status == 413)
            #expect(c.isClosedByServer(within: 5))
            c.close()
        }
    }

    @Test("a client that connects and sends nothing neither delays another's scrape nor stays past the request timeout")
    func silentClient() throws {
        var limits = MetricsServer.Limits()
        limits.requestTimeout = .seconds(2)
        try withServer(limits: limits) { server in
            let silent = try TestClient(port: server.port)
            defer { silent.close() }
            let slow = try TestClient(port: server.port)
            defer { slow.close() }
            try slow.send("GET /metr")  // and no more
            let started = Date()
            let c = try TestClient(port: server.port)
            defer { c.close() }
            #expect(try c.request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status == 200)
            // Well inside the silent ones' timeout: they held nothing up.
            #expect(Date().timeIntervalSince(started) < 1.5)
            #expect(silent.isClosedByServer(within: 20), "closed after the request timeout")
            #expect(slow.isClosedByServer(within: 20))
        }
    }

    @Test("connections beyond the limit are closed at once; those within it are served")
    func connectionLimit() throws {
        var limits = MetricsServer.Limits()
        limits.connections = 3
        limits.requestTimeout = .seconds(30)
        try withServer(limits: limits) { server in
            let held = try (0..<3).map { _ in try TestClient(port: server.port) }
            defer { held.forEach { $0.close() } }
            let extra = try TestClient(port: server.port)
            defer { extra.close() }
            #expect(extra.isClosedByServer(within: 5))
            #expect(try held[0].request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status == 200)
        }
    }

    @Test("a port in use, an address not on this host and a non-address are refused at bind, naming the address")
    func bindFailures() throws {
        let first = try MetricsServer(host: "127.0.0.1", port: 0)
        defer { first.stop() }
        let taken = Result { () throws(MetricsServerError) in try MetricsServer(host: "127.0.0.1", port: first.port) }
        guard case .failure(let inUse) = taken else { Issue.record("bound a port in use"); return }
        #expect(inUse.description.contains("127.0.0.1:\(first.port)"))
        #expect(inUse.description.contains("in use"))

        let foreign = Result { () throws(MetricsServerError) in try MetricsServer(host: "192.0.2.1", port: 9108) }
        guard case .failure(let notHere) = foreign else { Issue.record("bound an address not on this host"); return }
        #expect(notHere.description.contains("192.0.2.1:9108") && notHere.description.contains("no interface"))

        let garbage = Result { () throws(MetricsServerError) in try MetricsServer(host: "localhost:x", port: 9108) }
        guard case .failure(let notAnAddress) = garbage else { Issue.record("took a non-address"); return }
        #expect(notAnAddress.description.contains("not an IP address"))
    }

    @Test("IPv6 loopback, brackets or not")
    func ipv6() throws {
        let server = try MetricsServer(host: "[::1]", port: 0)
        defer { server.stop() }
        #expect(server.endpoint == "[::1]:\(server.port)")
        try server.start(exporter: MetricsExporter { fixedReading() })
        let c = try TestClient(port: server.port, ipv6: true)
        defer { c.close() }
        #expect(try c.request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status == 200)
    }

    func withServer(limits: MetricsServer.Limits = MetricsServer.Limits(), _ body: (MetricsServer) throws -> Void) throws {
        let server = try MetricsServer(host: "127.0.0.1", port: 0, limits: limits)
        defer { server.stop() }
        try server.start(exporter: MetricsExporter { fixedReading() })
        try body(server)
    }
}

func fixedReading() -> Statistics {
    var counters = Dictionary(uniqueKeysWithValues: Counter.allCases.map { ($0.name, UInt64(0)) })
    counters[Counter.tapReceivedFrames.name] = 17
    return Statistics(counters: counters, drops: Dictionary(uniqueKeysWithValues: DropReason.allCases.map { ($0.name, 0) }),
                      peers: [], fdbEntries: 0, workers: [], underlayMTU: 1500, directionDrops: [:])
}

/// A blocking HTTP/1.1 client over a plain TCP socket (reads time out after 10 s).
final class TestClient {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    let fd: Int32

    init(port: Int, ipv6: Bool = false) throws {
        fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let address = try SocketAddress(ipAddress: ipv6 ? "::1" : "127.0.0.1", port: port)
        let r = address.withSockAddr { connect(fd, $0, socklen_t($1)) }
        guard r == 0 else { Glibc.close(fd); throw Failure(description: "connect: \(String(cString: strerror(errno)))") }
    }

    func close() { Glibc.close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    /// Sends `text` and reads one response (headers, then Content-Length bytes of body).
    func request(_ text: String) throws -> Response {
        try? send(text)  // the server may answer and close before taking all of an oversized request
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        func headerEnd() -> Int? {
            guard data.count >= 4 else { return nil }
            for i in 0...(data.count - 4) where data[i] == 13 && data[i + 1] == 10 && data[i + 2] == 13 && data[i + 3] == 10 {
                return i
            }
            return nil
        }
        while true {
            if let end = headerEnd() {
                let head = String(decoding: data[..<end], as: UTF8.self).components(separatedBy: "\r\n")
                let status = Int(head[0].split(separator: " ")[1]) ?? 0
                var headers: [String: String] = [:]
                for line in head.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                let length = Int(headers["content-length"] ?? "0") ?? 0
                if data.count - end - 4 >= length {
                    return Response(status: status, headers: headers,
                                    body: String(decoding: data[(end + 4)..<(end + 4 + length)], as: UTF8.self))
                }
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { throw Failure(description: "no whole response (\(n), \(data.count) bytes read)") }
            data += buffer[..<n]
        }
    }

    /// Whether the server closes the connection (end of file or reset) within `seconds`.
    func isClosedByServer(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 200) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return true }
        }
        return false
    }
}
