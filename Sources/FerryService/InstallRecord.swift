import Foundation

/// What `ferry service install` did for one instance, kept beside its config
/// (`/etc/ferry/NAME.install.json`), so that `uninstall` undoes exactly that: the files it
/// wrote (and what each replaced, with --force), the directories it made, the keys of Docker's
/// daemon.json it set, whether it enabled the unit.
public struct InstallRecord: Codable, Sendable, Equatable {
    public struct WrittenFile: Codable, Sendable, Equatable {
        /// Absolute, as on the target system (without --root).
        public var path: String
        public var written: String
        /// What was there before (--force replaced it); nil: nothing was.
        public var previous: String?
    }

    public struct DockerChange: Codable, Sendable, Equatable {
        public var path: String
        /// A copy of the file as it was, kept until uninstall; nil when there was no file.
        public var backup: String?
        public var changes: [DockerDaemonConfig.Change]
    }

    public var name: String
    public var files: [WrittenFile] = []
    /// Made by install, parents first; removed by uninstall, children first, when empty.
    public var directories: [String] = []
    public var docker: DockerChange?
    public var enabled = false

    public init(name: String) { self.name = name }

    public static func path(name: String, configDirectory: String = ServiceUnit.defaultConfigDirectory) -> String {
        "\(configDirectory)/\(name).install.json"
    }

    func encoded() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = (try? encoder.encode(self)) ?? Data()
        data.append(0x0A)
        return data
    }
}
