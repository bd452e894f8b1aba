import Foundation

extension EtcdClient {
    /// One etcd member's client URL: `http://HOST:PORT` or `https://HOST:PORT` (IPv6 in
    /// brackets), port 2379 when none is given.
    public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
        public var tls: Bool
        public var host: String
        public var port: Int

        public init(tls: Bool, host: String, port: Int = 2379) {
            self.tls = tls
            self.host = host
            self.port = port
        }

        /// The URL requests go to (without a path).
        public var url: String {
            let h = host.contains(":") ? "[\(host)]" : host
            return "\(tls ? "https" : "http")://\(h):\(port)"
        }

        public var description: String { url }

        /// Reads one URL, or says what is wrong with it and how to write it.
        public init(parsing text: String) throws(ConfigurationError) {
            let text = text.trimmingCharacters(in: .whitespaces)
            guard let schemeEnd = text.range(of: "://") else {
                throw ConfigurationError("'\(text)' has no scheme: write http://\(text) (or https://\(text) for TLS)")
            }
            let scheme = text[..<schemeEnd.lowerBound].lowercased()
            guard scheme == "http" || scheme == "https" else {
                throw ConfigurationError("'\(text)': the scheme must be http or https (etcd's client URL, as in http://10.0.0.1:2379), not \(scheme)")
            }
            var rest = text[schemeEnd.upperBound...]
            if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) {
                guard rest[slash...] == "/" else {
                    throw ConfigurationError("'\(text)' has a path or query: give the member's URL alone (\(scheme)://\(rest[..<slash])); Ferry adds /v3/…")
                }
                rest = rest[..<slash]
            }
            guard !rest.contains("@") else {
                throw ConfigurationError("'\(text)' holds credentials: give them with --etcd-user and --etcd-password-file, not in the URL")
            }
            var host: Substring
            var portText: Substring?
            if rest.hasPrefix("[") {
                guard let close = rest.firstIndex(of: "]") else {
                    throw ConfigurationError("'\(text)': an IPv6 address in brackets needs its closing ] (as in http://[fd00::1]:2379)")
                }
                host = rest[rest.index(after: rest.startIndex)..<close]
                let after = rest[rest.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":") else { throw ConfigurationError("'\(text)': expected :PORT after the ]") }
                    portText = after.dropFirst()
                }
            } else {
                let colons = rest.filter { $0 == ":" }.count
                guard colons <= 1 else {
                    throw ConfigurationError("'\(text)': an IPv6 address goes in brackets, as in \(scheme)://[fd00::1]:2379")
                }
                if let colon = rest.firstIndex(of: ":") {
                    host = rest[..<colon]
                    portText = rest[rest.index(after: colon)...]
                } else {
                    host = rest
                }
            }
            guard !host.isEmpty else { throw ConfigurationError("'\(text)' names no host: write \(scheme)://HOST:2379") }
            var port = 2379
            if let portText {
                guard let p = Int(portText), (1...65535).contains(p) else {
                    throw ConfigurationError("'\(text)': the port must be a number from 1 to 65535 (etcd's client port is usually 2379)")
                }
                port = p
            }
            self.init(tls: scheme == "https", host: String(host), port: port)
        }

        /// Reads `--etcd`'s value: URLs separated by commas.
        public static func parseList(_ text: String) throws(ConfigurationError) -> [Endpoint] {
            let items = text.split(separator: ",", omittingEmptySubsequences: false)
            var endpoints: [Endpoint] = []
            for item in items {
                guard !item.trimmingCharacters(in: .whitespaces).isEmpty else {
                    throw ConfigurationError(text.isEmpty
                        ? "no etcd URL given: write --etcd http://HOST:2379[,http://HOST2:2379…]"
                        : "an empty URL in '\(text)': separate the URLs with single commas")
                }
                let endpoint = try Endpoint(parsing: String(item))
                guard !endpoints.contains(endpoint) else {
                    throw ConfigurationError("\(endpoint) is listed twice in '\(text)'")
                }
                endpoints.append(endpoint)
            }
            return endpoints
        }
    }

    /// A configuration that cannot work, with what to change.
    public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Where etcd is and how to talk to it.
    public struct Configuration: Sendable {
        /// The members' client URLs, tried in this order (the one that last answered first).
        public var endpoints: [Endpoint]
        /// How long one connection attempt to a member may take.
        public var connectTimeout: Duration = .seconds(2)
        /// How long one request to one member may take before the next member is tried.
        public var requestTimeout: Duration = .seconds(5)
        /// How long an operation may take in all, across members: past it, `.unavailable`.
        public var operationTimeout: Duration = .seconds(10)
        /// How often a watch asks its member whether it still serves (a linearizable count of
        /// the watched keys); zero: never, the watch then ends only when its stream does.
        public var watchCheckInterval: Duration = .seconds(5)
        /// How long a member that failed is tried only after the others.
        public var setAsideInterval: Duration = .seconds(30)
        /// For https endpoints: the CA that signed the members' certificates (the system's
        /// roots when nil), and a client certificate and its key when the members ask for one.
        public var caFile: String?
        public var certificateFile: String?
        public var keyFile: String?
        /// etcd's user and password, when etcd's authentication is enabled.
        public var user: String?
        public var password: String?

        public init(endpoints: [Endpoint], caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil,
                    user: String? = nil, password: String? = nil) {
            self.endpoints = endpoints
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.user = user
            self.password = password
        }

        /// From `--etcd URL[,URL…]`.
        public init(parsing urls: String) throws(ConfigurationError) {
            self.init(endpoints: try Endpoint.parseList(urls))
        }

        /// Says what is inconsistent: no endpoint, a certificate without its key, a user
        /// without a password, TLS files with no https endpoint, files that cannot be read.
        public func validate() throws(ConfigurationError) {
            guard !endpoints.isEmpty else { throw ConfigurationError("no etcd endpoint: give --etcd http://HOST:2379") }
            if (certificateFile == nil) != (keyFile == nil) {
                throw ConfigurationError("a client certificate needs its key and a key its certificate: give both --etcd-cert and --etcd-key")
            }
            if (user == nil) != (password == nil) {
                throw ConfigurationError("etcd authentication needs both a user and a password (--etcd-user and --etcd-password-file)")
            }
            let files = [caFile, certificateFile, keyFile].compactMap { $0 }
            if !files.isEmpty && !endpoints.contains(where: \.tls) {
                throw ConfigurationError("TLS files are given but no endpoint is https: write the URLs as https://HOST:2379")
            }
            for file in files where !FileManager.default.isReadableFile(atPath: file) {
                throw ConfigurationError("cannot read \(file) (a TLS file for etcd): check the path and its permissions")
            }
        }
    }
}
