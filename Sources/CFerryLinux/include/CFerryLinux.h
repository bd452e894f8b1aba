// The C that Swift cannot reach on its own: the TUN/TAP ioctls and their structs, an
// mmsghdr mirror for sendmmsg/recvmmsg, the CMSG macros, and setns. Every function returns
// what the system call returned (-1 with errno set on failure); FerryLinux turns that into
// typed Swift. Keep this file small: it is the whole of Ferry's C.
#ifndef CFERRY_LINUX_H
#define CFERRY_LINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>   // before linux/if_tun.h, which uses _IOW
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

static const int CFERRY_IFF_TAP = IFF_TAP;
static const int CFERRY_IFF_NO_PI = IFF_NO_PI;
static const int CFERRY_IFF_VNET_HDR = IFF_VNET_HDR;
static const int CFERRY_IFF_MULTI_QUEUE = IFF_MULTI_QUEUE;
static const int CFERRY_IFNAMSIZ = IFNAMSIZ;

static const int CFERRY_SOL_UDP = 17;
static const int CFERRY_UDP_SEGMENT = 103;
static const int CFERRY_UDP_GRO = 104;
static const int CFERRY_IPV6_HDRINCL = 36;

/// Mirrors glibc's `struct mmsghdr` (Glibc's Swift module does not export it).
struct cferry_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// Opens /dev/net/tun and attaches to (or creates) the TAP `name` with `flags` (IFF_TAP etc.).
/// Writes the kernel's name for it into `out_name` (IFNAMSIZ bytes). Returns the fd or -1.
int cferry_tap_open(const char *name, int flags, char *out_name);
/// Attaches a steering program to a multi-queue TAP that puts each frame on a queue chosen by
/// its flow's addresses and ports alone. 0, or -1 with errno (and the verifier's log in `log`).
int cferry_tap_steer_by_flow(int fd, char *log, unsigned int log_size);
/// TUNSETPERSIST on `fd`.
int cferry_tap_set_persist(int fd, int persist);
/// TUNSETOFFLOAD, TUNSETVNETHDRSZ.
int cferry_tap_set_offload(int fd, unsigned int flags);
int cferry_tap_set_vnet_header_size(int fd, int size);

/// Interface set-up over an AF_INET control socket `sock`.
int cferry_if_get_mtu(int sock, const char *name, int *mtu);
int cferry_if_set_mtu(int sock, const char *name, int mtu);
int cferry_if_get_flags(int sock, const char *name, short *flags);
int cferry_if_set_flags(int sock, const char *name, short flags);
int cferry_if_get_hwaddr(int sock, const char *name, uint8_t out[6]);
int cferry_if_set_hwaddr(int sock, const char *name, const uint8_t address[6]);
/// The interface's hardware type (ARPHRD_*), or -1 with errno set.
int cferry_if_get_hwtype(int sock, const char *name);
/// SIOCBRADDIF: makes interface `ifindex` a port of `bridge`.
int cferry_bridge_add_if(int sock, const char *bridge, int ifindex);

int cferry_sendmmsg(int fd, struct cferry_mmsghdr *vec, unsigned int vlen, int flags);
int cferry_recvmmsg(int fd, struct cferry_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout);
int cferry_setns(int fd, int nstype);

/// prctl(PR_SET_NO_NEW_PRIVS, 1): no exec may gain privileges from now on.
int cferry_set_no_new_privs(void);
/// Names the calling thread (PR_SET_NAME: 15 bytes kept), as /proc/PID/task/TID/comm shows it.
int cferry_set_thread_name(const char *name);
/// prctl(PR_SET_PDEATHSIG, signal): the signal this process gets when its parent ends.
int cferry_set_parent_death_signal(int signal);
/// prctl(PR_SET_KEEPCAPS, on): whether a uid change away from 0 keeps the permitted capabilities.
int cferry_set_keep_capabilities(int on);
/// setresgid(gid, gid, gid) and setresuid(uid, uid, uid) (glibc: process-wide).
int cferry_set_group_ids(gid_t gid);
int cferry_set_user_ids(uid_t uid);
/// open(path, O_PATH | O_DIRECTORY | O_CLOEXEC).
int cferry_open_directory_path(const char *path);
/// Forks a child that outlives this process by a moment: it holds no descriptor but a pipe
/// whose other end only this process holds and `directory` (an O_PATH descriptor), drops every
/// capability, and when the pipe closes (this process ended, however) removes `name` in
/// `directory` if it is still the Unix socket it was at the call (same device and inode).
/// Returns the child's pid, or -1 with errno. For a process that gives up the right to write
/// that directory (`ferry run --user`).
int cferry_spawn_socket_remover(int directory, const char *name);

static inline size_t cferry_cmsg_space(size_t length) { return CMSG_SPACE(length); }
static inline size_t cferry_cmsg_len(size_t length) { return CMSG_LEN(length); }
static inline struct cmsghdr *cferry_cmsg_firsthdr(struct msghdr *m) { return CMSG_FIRSTHDR(m); }
static inline struct cmsghdr *cferry_cmsg_nxthdr(struct msghdr *m, struct cmsghdr *c) { return CMSG_NXTHDR(m, c); }
static inline unsigned char *cferry_cmsg_data(struct cmsghdr *c) { return CMSG_DATA(c); }

#endif
