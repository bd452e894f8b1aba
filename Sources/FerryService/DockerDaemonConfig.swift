import Foundation

/// Docker's `/etc/docker/daemon.json`, changed in as few keys as Ferry needs: `bridge` (Docker
/// puts its containers on Ferry's bridge instead of making docker0) and `mtu` (the containers'
/// interfaces no larger than what the tunnel carries). Every other key is kept as it is; what
/// Ferry set is recorded with the value it replaced, so that `revert` puts back exactly that.
public enum DockerDaemonConfig {
    /// Each key set, with the value it had before (nil: it was absent).
    public struct Change: Codable, Sendable, Equatable {
        public var key: String
        /// The value set and the one before, as JSON text (`"bridge0"`, `1450`).
        public var value: String
        public var previous: String?
    }

    public enum Failure: Error, CustomStringConvertible, Equatable {
        case invalidJSON(path: String, reason: String)
        case notAnObject(path: String)
        case conflicting(path: String, key: String, reason: String)

        public var description: String {
            switch self {
            case .invalidJSON(let path, let reason):
                "\(path) is not valid JSON (\(reason)); fix it (`python3 -m json.tool \(path)` shows where) or move it away, then run again; nothing was changed"
            case .notAnObject(let path):
                "\(path) is not a JSON object ({...}), which Docker needs; fix it, then run again; nothing was changed"
            case .conflicting(let path, let key, let reason):
                "\(path) sets \"\(key)\", \(reason); nothing was changed"
            }
        }
    }

    /// `existing` (nil: no file) with `bridge` and `mtu` set; the new text and what changed
    /// (keys that already had these values are not changes).
    public static func merge(_ existing: Data?, path: String, bridge: String, mtu: Int) throws(Failure) -> (text: Data, changes: [Change]) {
        var object = try parse(existing, path: path)
        // Docker refuses to start with both: the bridge's own address is its subnet's.
        if object["bip"] != nil {
            throw .conflicting(path: path, key: "bip", reason: """
                which Docker refuses together with "bridge" (the bridge's address is Ferry's `subnet:`); remove "bip" from it
                """)
        }
        var changes: [Change] = []
        for (key, value) in [("bridge", bridge as Any), ("mtu", mtu as Any)] {
            let new = json(value)
            let old = object[key].map(json)
            guard old != new else { continue }
            changes.append(Change(key: key, value: new, previous: old))
            object[key] = value
        }
        return (serialise(object), changes)
    }

    /// What `changes` did to a file undone in `current`: each key back to its previous value
    /// (removed if it was absent), unless it has been changed since (then it is left, and
    /// named in `kept`). `empty` when nothing is left in the object.
    public static func revert(_ current: Data?, path: String, changes: [Change]) throws(Failure)
        -> (text: Data, kept: [String], empty: Bool) {
        var object = try parse(current, path: path)
        var kept: [String] = []
        for change in changes {
            guard object[change.key].map(json) == change.value else {
                if object[change.key] != nil { kept.append(change.key) }
                continue
            }
            if let previous = change.previous, let value = try? JSONSerialization.jsonObject(with: Data(previous.utf8), options: .fragmentsAllowed) {
                object[change.key] = value
            } else {
                object[change.key] = nil
            }
        }
        return (serialise(object), kept, object.isEmpty)
    }

    /// Whether two texts hold the same JSON object (key order and layout aside).
    public static func sameObject(_ a: Data, _ b: Data) -> Bool {
        guard let x = try? parse(a, path: ""), let y = try? parse(b, path: "") else { return false }
        return serialise(x) == serialise(y)
    }

    static func parse(_ data: Data?, path: String) throws(Failure) -> [String: Any] {
        guard let data, !data.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) else { return [:] }
        do {
            try StrictJSON.check(Array(data))
        } catch {
            throw .invalidJSON(path: path, reason: error.description)
        }
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)
        } catch {
            let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            throw .invalidJSON(path: path, reason: reason)
        }
        guard let object = value as? [String: Any] else { throw .notAnObject(path: path) }
        return object
    }

    /// One value as compact JSON text, for comparing and recording.
    static func json(_ value: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func serialise(_ object: [String: Any]) -> Data {
        var data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        data.append(0x0A)
        return data
    }
}
