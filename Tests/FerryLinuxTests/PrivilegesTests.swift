import FerryLinux
import Glibc
import Testing

/// What can be checked of `Privileges` without giving up the test runner's own: the user
/// database lookups and the capability bits. Dropping itself is a live test (LivePrivilegesTests).
@Suite struct PrivilegesTests {
    @Test func usersAreLookedUpWithTheirGroups() throws {
        let root = try #require(UserAccount.named("root"))
        #expect(root.uid == 0 && root.gid == 0)
        #expect(root.groups.contains(0))
        let nobody = try #require(UserAccount.named("nobody"))
        #expect(nobody.uid == 65534)
        #expect(nobody.groups.contains(nobody.gid))
        #expect(!nobody.groups.contains(0))
        #expect(UserAccount.named("ferry-no-such-user") == nil)
        #expect(UserAccount.named("") == nil)
    }

    @Test func capabilityBitsAreTheKernels() {
        // <linux/capability.h>: CAP_NET_ADMIN 12, CAP_NET_RAW 13; /proc/PID/status shows masks.
        #expect(Capability.netAdmin.mask == 0x1000)
        #expect(Capability.netRaw.mask == 0x2000)
        #expect(Capability.netAdmin.description == "cap_net_admin")
    }

    @Test func theCurrentCredentialsAreRead() {
        let now = Privileges.current()
        #expect(now.uid == geteuid())
        if geteuid() == 0 {
            // Root's test runner has CAP_NET_ADMIN in both sets (as `ferry run` before --user).
            #expect(now.effective & Capability.netAdmin.mask != 0)
            #expect(now.bounding & Capability.netAdmin.mask != 0)
        }
    }
}
