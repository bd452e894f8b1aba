import FerryLinux
import FerryWire
import Testing

/// The doctor's probes against this process's own namespace, read-only: loopback's address and
/// route, and an unknown interface.
@Suite struct HostProbesTests {
    @Test func loopbackIsListedWithItsPrefixAndRoutedLocally() throws {
        let loopback = IPAddress("127.0.0.1")!
        let entry = try #require(HostProbes.interfaceAddresses().first { $0.address == loopback })
        #expect(entry.interface == "lo" && entry.prefixLength == 8)
        let route = try RouteLookup.route(to: loopback).get()
        #expect(route.type == "local" && route.device == "lo")
    }

    @Test func anUnknownInterfaceHasNoOffloadStateAndNoARPProbe() {
        #expect(HostProbes.transmitChecksumOffload("nosuch-if0") == nil)
        #expect(throws: LinuxError.self) { try HostProbes.arpDuplicates(of: IPv4Address(10, 0, 0, 1), on: "nosuch-if0") }
    }
}
