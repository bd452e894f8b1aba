import Foundation
import SystemPackage

/// What Ferry made on a host, step by step, in the order it made it: all that `teardown`
/// undoes. A thing Ferry found already there (an adopted bridge, its address, a user's route)
/// is never in it.
public struct SetupRecord: Codable, Equatable, Sendable {
    public var created: [SetupStep]

    public init(created: [SetupStep] = []) { self.created = created }

    /// Notes a step applied: a creation is added (once); a deletion of something recorded
    /// removes it from the record.
    public mutating func note(_ step: SetupStep) {
        switch step {
        case .createBridge, .addAddress, .setUp, .addRoute:
            if !created.contains(step) { created.append(step) }
        case .deleteRoute(let r): created.removeAll { $0 == .addRoute(r) }
        case .deleteAddress(let a, let d): created.removeAll { $0 == .addAddress(a, device: d) }
        case .setDown(let d): created.removeAll { $0 == .setUp(d) }
        case .deleteBridge(let name):
            created.removeAll {
                switch $0 {
                case .createBridge(name), .setUp(name): true
                case .addAddress(_, name): true
                default: false
                }
            }
        }
    }

    /// The routes Ferry has in place by this record.
    public var routes: [RouteEntry] { created.compactMap { if case .addRoute(let r) = $0 { r } else { nil } } }
}

/// Where a record lives: one JSON file per configuration, `<directory>/<name>.setup.json`.
///
/// The default directory is `/run/ferry`, a tmpfs: the record is lost at a reboot exactly when
/// what it describes is (a bridge and routes made over rtnetlink do not survive one), so a
/// record never outlives its objects to claim a bridge that a boot script made since. A path
/// under /var/lib would survive the reboot and make teardown delete that bridge.
public struct SetupRecordStore: Sendable {
    public static let defaultDirectory = "/run/ferry"

    public let path: String
    /// The file held open (`keepingOpen()`): read and written through this descriptor.
    let kept: KeptFile?

    public init(directory: String = SetupRecordStore.defaultDirectory, name: String) {
        path = (directory as NSString).appendingPathComponent("\(name).setup.json")
        kept = nil
    }

    public init(path: String) {
        self.path = path
        kept = nil
    }

    /// The same store, its file opened now and kept open: for a run that gives its privileges
    /// up (`ferry run --user`), whose routes follow peers afterwards but which may then neither
    /// write in the directory (root's) nor open the file (root's, mode 0600). Written in place
    /// through the descriptor, not renamed over (on /run's tmpfs a crash cannot cut a write in
    /// two, and the write keeps a whole record in the file at every moment); an empty record
    /// is written as one, not removed. The file is made, empty record, when there is none.
    /// (A `ferry teardown` or `ferry setup` run meanwhile replaces the file by its path: what
    /// this run records afterwards goes to the file it holds, which nothing reads.)
    public func keepingOpen() throws(SetupError) -> SetupRecordStore {
        let record = try load()
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SetupError("cannot open the set-up record \(path): \(String(cString: strerror(errno)))") }
        let store = SetupRecordStore(path: path, kept: KeptFile(fd))
        try store.save(record)
        return store
    }

    init(path: String, kept: KeptFile?) {
        self.path = path
        self.kept = kept
    }

    /// The record, or an empty one when there is no file.
    public func load() throws(SetupError) -> SetupRecord {
        if let kept {
            let bytes = kept.read()
            guard !bytes.isEmpty else { return SetupRecord() }
            do { return try JSONDecoder().decode(SetupRecord.self, from: Data(bytes)) } catch {
                throw SetupError("cannot read the set-up record \(path) (\(error))")
            }
        }
        guard FileManager.default.fileExists(atPath: path) else { return SetupRecord() }
        do {
            return try JSONDecoder().decode(SetupRecord.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw SetupError("cannot read the set-up record \(path) (\(error)); if it is damaged, undo what it lists by hand "
                             + "and remove it")
        }
    }

    /// Writes the record whole (to a temporary file, then renamed over the old one); an empty
    /// record removes the file.
    public func save(_ record: SetupRecord) throws(SetupError) {
        if let kept {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            guard let bytes = try? encoder.encode(record), kept.write([UInt8](bytes)) else {
                throw SetupError("cannot write the set-up record \(path): \(String(cString: strerror(errno)))")
            }
            return
        }
        do {
            if record.created.isEmpty {
                if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
                return
            }
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let temporary = path + ".tmp"
            try encoder.encode(record).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, path) == 0 else { throw SetupError("rename \(temporary): \(String(cString: strerror(errno)))") }
        } catch let e as SetupError {
            throw e
        } catch {
            throw SetupError("cannot write the set-up record \(path): \(error)")
        }
    }
}

/// A record file held open by a run that gave its privileges up (`SetupRecordStore.keepingOpen`).
/// Open for the life of the process: a store's copies share it.
final class KeptFile: @unchecked Sendable {
    let fd: Int32
    let lock = NSLock()

    init(_ fd: Int32) { self.fd = fd }

    func read() -> [UInt8] {
        lock.withLock {
            let file = FileDescriptor(rawValue: fd)
            var out: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 16384)
            while let n = try? chunk.withUnsafeMutableBytes({ try file.read(fromAbsoluteOffset: Int64(out.count), into: $0) }), n > 0 {
                out += chunk[..<n]
            }
            return out
        }
    }

    /// The file's whole content replaced by `bytes` (JSON), so that it is a whole record at
    /// every moment: one write at offset 0, padded with blanks (which JSON allows after the
    /// value) over what is left of a longer record, then cut to length. Truncating first would
    /// leave an empty file to a process killed in between.
    func write(_ bytes: [UInt8]) -> Bool {
        lock.withLock {
            var stat = stat()
            guard fstat(fd, &stat) == 0 else { return false }
            let padded = bytes + [UInt8](repeating: UInt8(ascii: " "), count: max(0, Int(stat.st_size) - bytes.count))
            guard (try? FileDescriptor(rawValue: fd).writeAll(toAbsoluteOffset: 0, padded)) != nil else { return false }
            return ftruncate(fd, off_t(bytes.count)) == 0
        }
    }
}
