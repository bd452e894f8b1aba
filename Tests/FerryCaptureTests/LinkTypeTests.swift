import Testing
import FerryCapture

@Suite struct LinkTypeTests {
    @Test func ethernetIsDLTEN10MB() {
        #expect(LinkType.ethernet.rawValue == 1)
        #expect(LinkType.ethernet.name == "EN10MB")
        #expect(LinkType.ethernet.summary == "Ethernet")
        #expect("\(LinkType.ethernet)" == "EN10MB")
    }

    @Test func otherTypesCarryLibpcapsNames() {
        #expect(LinkType.linuxCooked.rawValue == 113)
        #expect(LinkType.linuxCooked.name == "LINUX_SLL")
        #expect(LinkType.linuxCooked2.name == "LINUX_SLL2")
        #expect(LinkType.rawIP.name == "RAW")
    }

    @Test func namesLookUpBothWays() {
        #expect(LinkType(name: "EN10MB") == .ethernet)
        #expect(LinkType(name: "en10mb") == .ethernet)
        #expect(LinkType(name: "LINUX_SLL") == .linuxCooked)
        #expect(LinkType(name: "NOT_A_LINK_TYPE") == nil)
    }

    @Test func unknownValuesStillHaveAName() {
        #expect(LinkType(rawValue: 65_000).name == "DLT 65000")
        #expect(LinkType(rawValue: 65_000).summary == "DLT 65000")
    }
}
