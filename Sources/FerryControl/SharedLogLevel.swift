import Logging
import Synchronization

/// The log level of every logger made with `handler(label:)`, changed at run time by a reload:
/// a `Logger` keeps its level in its handler, and each copy of a logger has its own, so the
/// handlers here read theirs from this one place instead.
public final class SharedLogLevel: Sendable {
    private let level: Atomic<Int>

    public init(_ level: Logger.Level) {
        self.level = Atomic(Self.index(level))
    }

    public var value: Logger.Level {
        get { Logger.Level.allCases[level.load(ordering: .relaxed)] }
        set { level.store(Self.index(newValue), ordering: .relaxed) }
    }

    static func index(_ level: Logger.Level) -> Int { Logger.Level.allCases.firstIndex(of: level)! }

    /// A handler writing to standard error as swift-log's default does, at this level.
    public func handler(label: String) -> LogHandler {
        var stream = StreamLogHandler.standardError(label: label)
        stream.logLevel = .trace  // the level is checked against this object's, by the logger
        return Handler(stream: stream, shared: self)
    }

    struct Handler: LogHandler {
        var stream: StreamLogHandler
        let shared: SharedLogLevel

        var logLevel: Logger.Level {
            get { shared.value }
            set { shared.value = newValue }
        }

        var metadata: Logger.Metadata {
            get { stream.metadata }
            set { stream.metadata = newValue }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { stream[metadataKey: key] }
            set { stream[metadataKey: key] = newValue }
        }

        func log(event: LogEvent) { stream.log(event: event) }
    }
}
