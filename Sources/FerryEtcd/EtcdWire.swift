import Foundation

// What etcd's v3 JSON gateway (grpc-gateway, etcd 3.4) sends and takes. Keys and values are
// base64; 64-bit integers are JSON strings; fields at their default (0, false, empty) are left
// out; a streamed reply (watch, lease keepalive) is one JSON object per message, each wrapped in
// `{"result": …}` or `{"error": …}`, and a message is not necessarily followed by a newline.

/// A 64-bit integer as the gateway writes it: a string ("42"), though a number is taken too.
struct WireInt64: Decodable, Sendable {
    var value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self), let value = Int64(text) {
            self.value = value
        } else {
            value = try container.decode(Int64.self)
        }
    }
}

struct WireHeader: Decodable, Sendable {
    var revision: WireInt64?
}

struct WireKeyValue: Decodable, Sendable {
    var key: String?
    var value: String?
    var create_revision: WireInt64?
    var mod_revision: WireInt64?
    var version: WireInt64?
    var lease: WireInt64?

    func keyValue() throws(EtcdError) -> EtcdKeyValue {
        EtcdKeyValue(key: try Wire.text(key ?? ""), value: try Wire.bytes(value ?? ""),
                     createRevision: create_revision?.value ?? 0, modRevision: mod_revision?.value ?? 0,
                     version: version?.value ?? 0, lease: lease?.value ?? 0)
    }
}

struct WireRangeResponse: Decodable, Sendable {
    var header: WireHeader?
    var kvs: [WireKeyValue]?
}

struct WireWriteResponse: Decodable, Sendable {
    var header: WireHeader?
    /// Delete's count of keys deleted.
    var deleted: WireInt64?
}

struct WireTxnResponse: Decodable, Sendable {
    struct Response: Decodable, Sendable {
        var response_range: WireRangeResponse?
    }
    var header: WireHeader?
    var succeeded: Bool?
    var responses: [Response]?
}

struct WireLeaseResponse: Decodable, Sendable {
    var header: WireHeader?
    var ID: WireInt64?
    var TTL: WireInt64?
}

struct WireAuthenticateResponse: Decodable, Sendable {
    var token: String?
}

/// A unary error reply: `{"error": "…", "message": "…", "code": 5}` (the code is gRPC's).
struct WireError: Decodable, Sendable {
    var error: String?
    var message: String?
    var code: Int?
}

/// An error inside a stream: grpc-gateway's `{"error": {"grpc_code": …, "message": …}}`.
struct WireStreamError: Decodable, Sendable {
    var grpc_code: Int?
    var http_code: Int?
    var message: String?
}

struct WireStreamMessage<Result: Decodable & Sendable>: Decodable, Sendable {
    var result: Result?
    var error: WireStreamError?
}

struct WireWatchResponse: Decodable, Sendable {
    struct Event: Decodable, Sendable {
        /// Absent for a put (the enum's default), "DELETE" for a delete.
        var type: String?
        var kv: WireKeyValue?
    }
    var header: WireHeader?
    var created: Bool?
    var canceled: Bool?
    var compact_revision: WireInt64?
    var cancel_reason: String?
    var events: [Event]?
}

/// Encoding and decoding helpers.
enum Wire {
    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func bytes(_ base64: String) throws(EtcdError) -> [UInt8] {
        guard let data = Data(base64Encoded: base64) else { throw .malformedReply("not base64: \(base64.prefix(40))") }
        return [UInt8](data)
    }

    static func text(_ base64: String) throws(EtcdError) -> String {
        String(decoding: try bytes(base64), as: UTF8.self)
    }

    /// The end of the range of keys that start with `prefix`: the prefix with its last byte
    /// below 0xff incremented and what follows dropped; "\0" (every key) when there is none.
    static func rangeEnd(prefix: String) -> [UInt8] {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return bytes
            }
            bytes.removeLast()
        }
        return [0]
    }

    /// A JSON request body from a dictionary of already-encoded values.
    static func json(_ object: [String: Any]) -> [UInt8] {
        // Dictionaries of strings, numbers, booleans, arrays and dictionaries only: cannot fail.
        [UInt8]((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: some Collection<UInt8>) throws(EtcdError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw .malformedReply("\(error) in \(String(decoding: bytes.prefix(200), as: UTF8.self))")
        }
    }
}

/// Splits a stream of bytes into the top-level JSON objects in it, however the bytes were cut
/// into chunks: a message may span chunks, and a chunk may hold several messages. Whitespace
/// (the gateway's newline delimiters) between objects is skipped; anything else outside an
/// object is an error, as is an object larger than `limit`.
struct JSONObjectSplitter: Sendable {
    private var buffer: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    /// Where in `buffer` scanning resumes.
    private var scanned = 0
    let limit: Int

    init(limit: Int = 64 << 20) {
        self.limit = limit
    }

    struct Garbage: Error, CustomStringConvertible {
        var description: String
    }

    /// Feeds `chunk`; returns the objects it completed, in order.
    mutating func feed(_ chunk: some Sequence<UInt8>) throws(Garbage) -> [[UInt8]] {
        buffer.append(contentsOf: chunk)
        var objects: [[UInt8]] = []
        var start = 0
        var i = scanned
        while i < buffer.count {
            let byte = buffer[i]
            if depth == 0 {
                switch byte {
                case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                    start = i + 1
                case UInt8(ascii: "{"):
                    start = i
                    depth = 1
                default:
                    throw Garbage(description: "unexpected \(String(decoding: buffer[i...].prefix(40), as: UTF8.self)) between JSON messages")
                }
            } else if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
            } else {
                switch byte {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 {
                        objects.append(Array(buffer[start...i]))
                        start = i + 1
                    }
                default: break
                }
            }
            i += 1
        }
        buffer.removeFirst(start)
        scanned = buffer.count
        if buffer.count > limit {
            throw Garbage(description: "a JSON message longer than \(limit) bytes")
        }
        return objects
    }

    /// Bytes of an object begun and not finished.
    var pending: Int { buffer.count }
}
