/* LD_PRELOAD shim for the tests: the faults a disk or an operator make, in a real process.
   ENOSPC_PATH:   write(2) and its variants fail with ENOSPC (a full disk) on files whose path contains it,
                  after ENOSPC_AFTER such writes succeeded (default 0).
   KILL_WRITING:  the process is SIGKILLed in the middle of a write to a file whose path contains it (half
                  the bytes written), after KILL_AFTER such writes succeeded.
   KILL_RENAMING: the process is SIGKILLed as it renames a file or directory to a path ending with it, or,
                  if it has a '*', to a path that it matches as a glob (fnmatch: '*' matches '/' too). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fnmatch.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int full_writes, kill_writes;

static int matches(int fd, const char *pattern, int *count, const char *after) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = pattern ? readlink(link, path, sizeof path - 1) : -1;
    if (n < 0) return 0;
    path[n] = 0;
    return strstr(path, pattern) && __atomic_fetch_add(count, 1, __ATOMIC_SEQ_CST) >= (after ? atoi(after) : 0);
}

/* -1 with errno ENOSPC if this write must fail; kills the process if it must die here; else 0 */
static int fault(int fd, const void *buf, size_t count) {
    if (matches(fd, getenv("KILL_WRITING"), &kill_writes, getenv("KILL_AFTER"))) {
        if (buf) syscall(1 /* SYS_write */, fd, buf, count / 2);
        kill(getpid(), SIGKILL);
    }
    if (matches(fd, getenv("ENOSPC_PATH"), &full_writes, getenv("ENOSPC_AFTER"))) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

#define REAL(ret, name, params) static ret (*real) params; if (!real) real = (ret (*) params) dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(ssize_t, write, (int, const void *, size_t));
    return fault(fd, buf, count) ? -1 : real(fd, buf, count);
}
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(ssize_t, pwrite, (int, const void *, size_t, off_t));
    return fault(fd, NULL, 0) ? -1 : real(fd, buf, count, offset);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL(ssize_t, pwrite64, (int, const void *, size_t, off_t));
    return fault(fd, NULL, 0) ? -1 : real(fd, buf, count, offset);
}
ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(ssize_t, writev, (int, const struct iovec *, int));
    return fault(fd, NULL, 0) ? -1 : real(fd, iov, iovcnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset) {
    REAL(ssize_t, pwritev, (int, const struct iovec *, int, off_t));
    return fault(fd, NULL, 0) ? -1 : real(fd, iov, iovcnt, offset);
}

static void kill_renaming(const char *new_path) {
    const char *suffix = getenv("KILL_RENAMING");
    size_t n = strlen(new_path), m = suffix ? strlen(suffix) : 0;
    if (suffix && strchr(suffix, '*') ? fnmatch(suffix, new_path, 0) == 0
                                      : suffix && n >= m && strcmp(new_path + n - m, suffix) == 0)
        kill(getpid(), SIGKILL);
}

int rename(const char *old_path, const char *new_path) {
    REAL(int, rename, (const char *, const char *));
    kill_renaming(new_path);
    return real(old_path, new_path);
}
int renameat(int old_dir, const char *old_path, int new_dir, const char *new_path) {
    REAL(int, renameat, (int, const char *, int, const char *));
    kill_renaming(new_path);
    return real(old_dir, old_path, new_dir, new_path);
}
