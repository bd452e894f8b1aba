import FerryHost
import FerryWire
import Foundation
import Testing

/// The record kept open by a run that gives its privileges up (`keepingOpen`): written in
/// place through its descriptor, and always a record another process reads by its path.
struct SetupRecordStoreTests {
    static let route = RouteEntry(destination: try! IPPrefix(parsing: "10.26.0.0/16"), device: "bridge0")
    static let other = RouteEntry(destination: try! IPPrefix(parsing: "10.29.0.0/16"), device: "bridge0")

    @Test func aKeptRecordIsWrittenInPlaceAndReadByPathAsByDescriptor() throws {
        let directory = NSTemporaryDirectory() + "ferry-record-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let plain = SetupRecordStore(directory: directory, name: "kept")

        // No file yet: keeping it open makes one, an empty record.
        let kept = try plain.keepingOpen()
        #expect(FileManager.default.fileExists(atPath: plain.path))
        #expect(try plain.load() == SetupRecord())
        let mode = try FileManager.default.attributesOfItem(atPath: plain.path)[.posixPermissions] as? NSNumber
        #expect(mode?.intValue == 0o600)

        // A longer record, then a shorter one: what is read back is the last, whole.
        try kept.save(SetupRecord(created: [.createBridge("bridge0"), .addRoute(Self.route), .addRoute(Self.other)]))
        try kept.save(SetupRecord(created: [.addRoute(Self.other)]))
        #expect(try plain.load() == SetupRecord(created: [.addRoute(Self.other)]), "read by path")
        #expect(try kept.load() == SetupRecord(created: [.addRoute(Self.other)]), "read through the descriptor")

        // Emptied: still a record (the file stays; the directory may not be the run's to write).
        try kept.save(SetupRecord())
        #expect(try plain.load() == SetupRecord())

        // An existing record keeps its content when a later run keeps it open.
        try plain.save(SetupRecord(created: [.addRoute(Self.route)]))
        #expect(try plain.keepingOpen().load() == SetupRecord(created: [.addRoute(Self.route)]))
    }
}
