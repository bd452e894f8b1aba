#define _GNU_SOURCE
#include "CFerryLinux.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

int cferry_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL); }
int cferry_set_thread_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL); }
int cferry_set_parent_death_signal(int signal) { return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL); }
int cferry_set_keep_capabilities(int on) { return prctl(PR_SET_KEEPCAPS, (unsigned long)on, 0UL, 0UL, 0UL); }
int cferry_set_group_ids(gid_t gid) { return setresgid(gid, gid, gid); }
int cferry_set_user_ids(uid_t uid) { return setresuid(uid, uid, uid); }
int cferry_open_directory_path(const char *path) { return open(path, O_PATH | O_DIRECTORY | O_CLOEXEC); }

int cferry_spawn_socket_remover(int directory, const char *name) {
    struct stat was;
    if (fstatat(directory, name, &was, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    if (!S_ISSOCK(was.st_mode)) {
        errno = ENOTSOCK;
        return -1;
    }
    char path[256];
    size_t length = strlen(name);
    if (length >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(path, name, length + 1);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(fds[0]);
        close(fds[1]);
        errno = saved;
        return -1;
    }
    if (pid > 0) {
        close(fds[0]);
        return pid;  // fds[1] stays open until this process ends
    }
    // The child: only async-signal-safe calls from here (the parent may have had threads).
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    int ignored[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT};
    for (unsigned i = 0; i < sizeof ignored / sizeof ignored[0]; i++) sigaction(ignored[i], &ignore, NULL);
    // No descriptor of the parent's (TAP, sockets, capture, logs) but these two, as 0 and 1.
    int pipe_read = fcntl(fds[0], F_DUPFD, 16), dir = fcntl(directory, F_DUPFD, 16);
    if (pipe_read < 0 || dir < 0 || dup2(pipe_read, 0) < 0 || dup2(dir, 1) < 0) _exit(1);
    syscall(SYS_close_range, 2U, ~0U, 0U);
    // Nothing but its own uid's ownership of the directory is needed to remove the file.
    prctl(PR_SET_NO_NEW_PRIVS, 1UL, 0UL, 0UL, 0UL);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2];
    memset(none, 0, sizeof none);
    syscall(SYS_capset, &header, none);
    char byte;
    for (;;) {
        ssize_t n = read(0, &byte, 1);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) break;
    }
    struct stat now;
    if (fstatat(1, path, &now, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(now.st_mode) && now.st_dev == was.st_dev
        && now.st_ino == was.st_ino) {
        unlinkat(1, path, 0);
    }
    _exit(0);
}
