import Foundation
import Yams

/// A config file: a YAML mapping whose keys are `ferry run`'s long option names without the
/// dashes (`vni: 42`, `peer: [10.99.0.2]`). An unknown key is refused, naming the nearest known.
public struct ConfigFile: @unchecked Sendable {
    /// Where it was read from (in messages).
    public let origin: String
    /// The mapping as YAML gives it: strings, numbers, booleans, sequences and mappings.
    public let values: [String: Any]

    /// Reads and checks the file at `path`.
    public static func load(path: String) throws(SettingsError) -> ConfigFile {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw SettingsError("cannot read config file \(path): no such file or not readable")
        }
        return try ConfigFile(yaml: String(decoding: contents, as: UTF8.self), origin: path)
    }

    /// Parses `yaml` (from `origin`, named in messages).
    public init(yaml: String, origin: String = "(text)") throws(SettingsError) {
        self.origin = origin
        // Composed into nodes and converted here, not with Yams.load: its conversion to `Any`
        // traps on a mapping key that is not a scalar (`[c]: 1`, found by FuzzConfig).
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch {
            throw SettingsError("config file \(origin) is not valid YAML: \(error)")
        }
        guard let node else {
            values = [:]
            return
        }
        guard case .mapping = node, case let map as [String: Any] = try Self.value(node, origin) else {
            throw SettingsError("config file \(origin) must be a mapping of option names to values (e.g. `vni: 42`)")
        }
        for key in map.keys.sorted() where !RunSettings.keys.contains(key) {
            let near = RunSettings.keys.min { Self.distance($0, key) < Self.distance($1, key) }!
            throw SettingsError("config file \(origin): unknown key '\(key)'"
                                + (Self.distance(near, key) <= 3 ? "; did you mean '\(near)'?" : "")
                                + " (keys are the long option names of ferry run)")
        }
        values = map
    }

    public subscript(key: String) -> Any? { values[key] }

    /// A node as the settings read it: a scalar as YAML resolves it (Bool, Int, NSNull, else its
    /// text), a sequence as `[Any]`, a mapping as `[String: Any]` whose keys are scalars.
    static func value(_ node: Node, _ origin: String) throws(SettingsError) -> Any {
        switch node {
        case .scalar(let scalar):
            // Converted here, not with `node.any`: Yams builds YAML 1.1's base-60 integers
            // (`1:30`) with trapping arithmetic, so `200888888888888888:8:16` took ferry down
            // (found by FuzzConfig). Numbers are read from their text by the settings anyway.
            switch Tag.Name(rawValue: node.tag.description) {
            case .bool: return Bool.construct(from: scalar) ?? scalar.string
            case .null: return NSNull()
            case .int: return integer(scalar.string) ?? scalar.string
            default: return scalar.string
            }
        case .sequence(let sequence):
            return try sequence.map { (item) throws(SettingsError) in try value(item, origin) }
        case .mapping(let mapping):
            var map: [String: Any] = [:]
            for (key, item) in mapping {
                guard case .scalar(let scalar) = key else {
                    throw SettingsError("config file \(origin): a key must be a name (e.g. `vni:`), not a list or a mapping")
                }
                map[scalar.string] = try value(item, origin)
            }
            return map
        case .alias:
            throw SettingsError("config file \(origin): YAML aliases (*name) are not taken; write the value out")
        }
    }

    /// A YAML 1.1 integer's value (`42`, `-7`, `1_000`, `0x2a`, `0o52`, `052`, `0b101010`,
    /// base 60 `1:30`); nil when it does not fit in an `Int`.
    static func integer(_ text: String) -> Int? {
        var digits = Substring(text.replacingOccurrences(of: "_", with: ""))
        var negative = false
        if let sign = digits.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            digits = digits.dropFirst()
        }
        let magnitude: Int?
        if digits.contains(":") {
            var total = 0
            for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
                guard let n = Int(part, radix: 10) else { return nil }
                let (scaled, o1) = total.multipliedReportingOverflow(by: 60)
                let (sum, o2) = scaled.addingReportingOverflow(n)
                guard !o1, !o2 else { return nil }
                total = sum
            }
            magnitude = total
        } else if digits.hasPrefix("0x") {
            magnitude = Int(digits.dropFirst(2), radix: 16)
        } else if digits.hasPrefix("0o") {
            magnitude = Int(digits.dropFirst(2), radix: 8)
        } else if digits.hasPrefix("0b") {
            magnitude = Int(digits.dropFirst(2), radix: 2)
        } else if digits.count > 1, digits.hasPrefix("0") {
            magnitude = Int(digits.dropFirst(), radix: 8)
        } else {
            magnitude = Int(digits, radix: 10)
        }
        guard let magnitude else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// A scalar as text (`true`/`false` for booleans).
    static func text(_ v: Any) -> String {
        switch v {
        case let b as Bool: b ? "true" : "false"
        default: "\(v)"
        }
    }

    /// Levenshtein distance, for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var row = Array(0...b.count)
        for i in 1...a.count {
            var previous = row[0]
            row[0] = i
            for j in 1...b.count {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}

/// The command line's values over the file's, by key.
struct Values {
    let o: RunOptions
    let file: ConfigFile?

    init(options: RunOptions, file: ConfigFile?) {
        o = options
        self.file = file
    }

    /// A scalar: the flag, else the file's value as text.
    func value(_ flag: String?, _ key: String) -> String? { flag ?? file?[key].map(ConfigFile.text) }

    /// A list: the flags, else the file's sequence (or one scalar).
    func list(_ flag: [String], _ key: String) -> [String] {
        if !flag.isEmpty { return flag }
        switch file?[key] {
        case let array as [Any]: return array.map(ConfigFile.text)
        case let one?: return [ConfigFile.text(one)]
        case nil: return []
        }
    }

    func bool(_ flag: Bool, _ key: String) throws(SettingsError) -> Bool {
        if flag { return true }
        guard let v = file?[key] else { return false }
        guard let b = v as? Bool else { throw SettingsError("config key '\(key)' must be true or false, not '\(ConfigFile.text(v))'") }
        return b
    }

    /// `--peer ADDRESS[=SUBNET]`; in the file, a list whose items are such texts or mappings
    /// `{address: …, subnet: …}`.
    func peers() throws(SettingsError) -> [PeerSpec] {
        if !o.peer.isEmpty { return try o.peer.map { (text) throws(SettingsError) in try Parse.peer(text) } }
        let items: [Any] = switch file?["peer"] {
        case let array as [Any]: array
        case let one?: [one]
        case nil: []
        }
        return try items.map { (item) throws(SettingsError) -> PeerSpec in
            guard let map = item as? [String: Any] else { return try Parse.peer(ConfigFile.text(item)) }
            for key in map.keys.sorted() where key != "address" && key != "subnet" {
                throw SettingsError("config key 'peer': unknown key '\(key)' in a peer; a peer is {address: IP, subnet: PREFIX} (subnet optional)")
            }
            guard let address = map["address"].map(ConfigFile.text) else {
                throw SettingsError("config key 'peer': a peer written as a mapping needs `address:` (e.g. {address: 192.168.99.101, subnet: 172.17.0.0/16})")
            }
            var spec = try Parse.peer(address)
            if let subnet = map["subnet"].map(ConfigFile.text) {
                spec.subnet = try Parse.prefix(subnet, "peer \(address) subnet")
            }
            return spec
        }
    }
}
