#define _GNU_SOURCE
#include "CFerryLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <linux/sockios.h>

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
int cferry_tap_set_queue(int fd, int flags) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = (short)flags;
    return ioctl(fd, TUNSETQUEUE, &ifr);
}

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

int cferry_if_get_hwaddr(int sock, const char *name, uint8_t out[6]) {
    struct ifreq ifr;
    set_name(&ifr, name);
    int r = ioctl(sock, SIOCGIFHWADDR, &ifr);
    if (r == 0) memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
    return r;
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
