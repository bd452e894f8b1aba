#define _GNU_SOURCE
#include "CFerryLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <net/if_arp.h>

// The mirror must be the kernel's struct, byte for byte.
_Static_assert(sizeof(struct cferry_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(offsetof(struct cferry_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr.msg_len");
_Static_assert(sizeof(struct virtio_net_hdr) == 10, "virtio_net_hdr is 10 bytes");

static void set_name(struct ifreq *ifr, const char *name) {
    memset(ifr, 0, sizeof *ifr);
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
}

int cferry_tap_open(const char *name, int flags, char *out_name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct ifreq ifr;
    set_name(&ifr, name);
    ifr.ifr_flags = (short)flags;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    return fd;
}

int cferry_tap_set_persist(int fd, int persist) { return ioctl(fd, TUNSETPERSIST, (unsigned long)persist); }
int cferry_tap_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }
int cferry_tap_set_vnet_header_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }

int cferry_if_get_mtu(int sock, const char *name, int *mtu) {
    struct ifreq ifr;
    set_name(&ifr, name);
    int r = ioctl(sock, SIOCGIFMTU, &ifr);
    if (r == 0) *mtu = ifr.ifr_mtu;
    return r;
}

int cferry_if_set_mtu(int sock, const char *name, int mtu) {
    struct ifreq ifr;
    set_name(&ifr, name);
    ifr.ifr_mtu = mtu;
    return ioctl(sock, SIOCSIFMTU, &ifr);
}

int cferry_if_get_flags(int sock, const char *name, short *flags) {
    struct ifreq ifr;
    set_name(&ifr, name);
    int r = ioctl(sock, SIOCGIFFLAGS, &ifr);
    if (r == 0) *flags = ifr.ifr_flags;
    return r;
}

int cferry_if_set_flags(int sock, const char *name, short flags) {
    struct ifreq ifr;
    set_name(&ifr, name);
    ifr.ifr_flags = flags;
    return ioctl(sock, SIOCSIFFLAGS, &ifr);
}

int cferry_if_get_hwtype(int sock, const char *name) {
    struct ifreq ifr;
    set_name(&ifr, name);
    if (ioctl(sock, SIOCGIFHWADDR, &ifr) < 0) return -1;
    return ifr.ifr_hwaddr.sa_family;
}

int cferry_if_get_hwaddr(int sock, const char *name, uint8_t out[6]) {
    struct ifreq ifr;
    set_name(&ifr, name);
    int r = ioctl(sock, SIOCGIFHWADDR, &ifr);
    if (r == 0) memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
    return r;
}

int cferry_if_set_hwaddr(int sock, const char *name, const uint8_t address[6]) {
    struct ifreq ifr;
    set_name(&ifr, name);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, address, 6);
    return ioctl(sock, SIOCSIFHWADDR, &ifr);
}

int cferry_bridge_add_if(int sock, const char *bridge, int ifindex) {
    struct ifreq ifr;
    set_name(&ifr, bridge);
    ifr.ifr_ifindex = ifindex;
    return ioctl(sock, SIOCBRADDIF, &ifr);
}

int cferry_sendmmsg(int fd, struct cferry_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

int cferry_recvmmsg(int fd, struct cferry_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, timeout);
}

int cferry_setns(int fd, int nstype) { return setns(fd, nstype); }

// ---------------------------------------------------------------------------------------------
// Flow steering for a multi-queue TAP.
//
// Without a program, the kernel puts a frame on the queue whose descriptor last wrote a packet
// of the same flow, and falls back to a hash when that entry is older than 3 s: a one-way flow
// can move queue (and two workers then hold its packets at once). This socket-filter program,
// attached with TUNSETSTEERINGEBPF, picks the queue from the flow's addresses and ports alone
// (the TAP takes its return value modulo the queue count), so a flow never moves. Packet loads
// are the classic absolute ones (from the Ethernet header); a load past the end ends the
// program with 0, i.e. queue 0.

#include <linux/bpf.h>
#include <sys/syscall.h>

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define LD_ABS(size, offset) INSN(BPF_LD | (size) | BPF_ABS, 0, 0, 0, (offset))
#define MOV64_REG(d, s) INSN(BPF_ALU64 | BPF_MOV | BPF_X, (d), (s), 0, 0)
#define MOV64_IMM(d, i) INSN(BPF_ALU64 | BPF_MOV | BPF_K, (d), 0, 0, (i))
#define XOR64_REG(d, s) INSN(BPF_ALU64 | BPF_XOR | BPF_X, (d), (s), 0, 0)
#define JEQ_IMM(d, i, o) INSN(BPF_JMP | BPF_JEQ | BPF_K, (d), 0, (o), (i))
#define JNE_IMM(d, i, o) INSN(BPF_JMP | BPF_JNE | BPF_K, (d), 0, (o), (i))
#define JA(o) INSN(BPF_JMP | BPF_JA, 0, 0, (o), 0)
#define EXIT() INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define MOV32_REG(d, s) INSN(BPF_ALU | BPF_MOV | BPF_X, (d), (s), 0, 0)
#define XOR32_REG(d, s) INSN(BPF_ALU | BPF_XOR | BPF_X, (d), (s), 0, 0)
#define RSH32_IMM(d, i) INSN(BPF_ALU | BPF_RSH | BPF_K, (d), 0, 0, (i))
#define MUL32_IMM(d, i) INSN(BPF_ALU | BPF_MUL | BPF_K, (d), 0, 0, (i))
#define AND64_IMM(d, i) INSN(BPF_ALU64 | BPF_AND | BPF_K, (d), 0, 0, (i))

int cferry_tap_steer_by_flow(int fd, char *log, unsigned int log_size) {
    // Offsets are from the Ethernet header of an untagged frame (a bridge's VLAN tag is still
    // out of band here); r7 gathers the flow. Ports count only where they are: after a
    // 20-byte IPv4 header of an unfragmented packet (a fragment's flow is its addresses).
    struct bpf_insn p[] = {
        /*  0 */ MOV64_REG(BPF_REG_6, BPF_REG_1),        // LD_ABS wants the context in r6
        /*  1 */ LD_ABS(BPF_H, 12),                      // EtherType
        /*  2 */ JEQ_IMM(BPF_REG_0, 0x0800, 3),          // -> 6, IPv4
        /*  3 */ JEQ_IMM(BPF_REG_0, 0x86DD, 17),         // -> 21, IPv6
        /*  4 */ MOV64_IMM(BPF_REG_0, 0),                // anything else: queue 0
        /*  5 */ EXIT(),
        /*  6 */ LD_ABS(BPF_W, 26),                      // IPv4 source
        /*  7 */ MOV64_REG(BPF_REG_7, BPF_REG_0),
        /*  8 */ LD_ABS(BPF_W, 30),                      // destination
        /*  9 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 10 */ LD_ABS(BPF_B, 14),                      // version and header length
        /* 11 */ JNE_IMM(BPF_REG_0, 0x45, 30),           // options: -> 42, addresses only
        /* 12 */ LD_ABS(BPF_H, 20),                      // flags and fragment offset
        /* 13 */ AND64_IMM(BPF_REG_0, 0x3FFF),           // MF or an offset: a fragment
        /* 14 */ JNE_IMM(BPF_REG_0, 0, 27),              // -> 42
        /* 15 */ LD_ABS(BPF_B, 23),                      // protocol
        /* 16 */ JEQ_IMM(BPF_REG_0, 6, 1),               // TCP -> 18
        /* 17 */ JNE_IMM(BPF_REG_0, 17, 24),             // not UDP -> 42
        /* 18 */ LD_ABS(BPF_W, 34),                      // ports
        /* 19 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 20 */ JA(21),                                 // -> 42
        /* 21 */ LD_ABS(BPF_W, 22),                      // IPv6 source and destination, 8 words
        /* 22 */ MOV64_REG(BPF_REG_7, BPF_REG_0),
        /* 23 */ LD_ABS(BPF_W, 26), /* 24 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 25 */ LD_ABS(BPF_W, 30), /* 26 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 27 */ LD_ABS(BPF_W, 34), /* 28 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 29 */ LD_ABS(BPF_W, 38), /* 30 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 31 */ LD_ABS(BPF_W, 42), /* 32 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 33 */ LD_ABS(BPF_W, 46), /* 34 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 35 */ LD_ABS(BPF_W, 50), /* 36 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        /* 37 */ LD_ABS(BPF_B, 20),                      // next header (extension headers: addresses only)
        /* 38 */ JEQ_IMM(BPF_REG_0, 6, 1),               // TCP -> 40
        /* 39 */ JNE_IMM(BPF_REG_0, 17, 2),              // not UDP -> 42
        /* 40 */ LD_ABS(BPF_W, 54),                      // ports
        /* 41 */ XOR64_REG(BPF_REG_7, BPF_REG_0),
        // Mix (MurmurHash3's 32-bit finaliser), so that the low bits the TAP keeps depend on
        // every bit of the flow: Linux gives a host's connections ports of one parity.
        /* 42 */ MOV32_REG(BPF_REG_0, BPF_REG_7), /* 43 */ RSH32_IMM(BPF_REG_0, 16), /* 44 */ XOR32_REG(BPF_REG_7, BPF_REG_0),
        /* 45 */ MUL32_IMM(BPF_REG_7, (int)0x85EBCA6B),
        /* 46 */ MOV32_REG(BPF_REG_0, BPF_REG_7), /* 47 */ RSH32_IMM(BPF_REG_0, 13), /* 48 */ XOR32_REG(BPF_REG_7, BPF_REG_0),
        /* 49 */ MUL32_IMM(BPF_REG_7, (int)0xC2B2AE35),
        /* 50 */ MOV32_REG(BPF_REG_0, BPF_REG_7), /* 51 */ RSH32_IMM(BPF_REG_0, 16), /* 52 */ XOR32_REG(BPF_REG_0, BPF_REG_7),
        /* 53 */ EXIT(),
    };
    _Static_assert(sizeof p / sizeof p[0] == 54, "the jump offsets above count 54 instructions");
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insn_cnt = sizeof p / sizeof p[0];
    attr.insns = (unsigned long)p;
    attr.license = (unsigned long)"GPL";
    // No log at first: a verbose log that fills its buffer fails a good program (ENOSPC).
    int prog = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (prog < 0 && log && log_size > 0) {
        // Again, only to tell why.
        int saved = errno;
        log[0] = 0;
        attr.log_buf = (unsigned long)log;
        attr.log_size = log_size;
        attr.log_level = 1;
        prog = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
        if (prog >= 0) close(prog);
        errno = saved;
        return -1;
    }
    if (prog < 0) return -1;
    int r = ioctl(fd, TUNSETSTEERINGEBPF, &prog);
    int saved = errno;
    close(prog);  // the TAP holds its own reference
    errno = saved;
    return r < 0 ? -1 : 0;
}
