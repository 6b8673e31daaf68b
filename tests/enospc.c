/* LD_PRELOAD shim for tests/test_faults.py: write(2) and its variants fail with ENOSPC (a full disk) on
   files whose path contains $ENOSPC_PATH, after $ENOSPC_AFTER such calls succeeded (default 0). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int writes;

static int disk_full(int fd) {
    const char *pattern = getenv("ENOSPC_PATH"), *after = getenv("ENOSPC_AFTER");
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = pattern ? readlink(link, path, sizeof path - 1) : -1;
    if (n < 0) return 0;
    path[n] = 0;
    if (!strstr(path, pattern) || __atomic_fetch_add(&writes, 1, __ATOMIC_SEQ_CST) < (after ? atoi(after) : 0))
        return 0;
    errno = ENOSPC;
    return 1;
}

#define FAILING(ret, name, params, args)                        \
    ret name params {                                           \
        static ret (*real) params;                              \
        if (!real) real = (ret (*) params) dlsym(RTLD_NEXT, #name); \
        return disk_full(fd) ? -1 : real args;                  \
    }

FAILING(ssize_t, write, (int fd, const void *buf, size_t count), (fd, buf, count))
FAILING(ssize_t, pwrite, (int fd, const void *buf, size_t count, off_t offset), (fd, buf, count, offset))
FAILING(ssize_t, pwrite64, (int fd, const void *buf, size_t count, off_t offset), (fd, buf, count, offset))
FAILING(ssize_t, writev, (int fd, const struct iovec *iov, int iovcnt), (fd, iov, iovcnt))
FAILING(ssize_t, pwritev, (int fd, const struct iovec *iov, int iovcnt, off_t offset), (fd, iov, iovcnt, offset))
