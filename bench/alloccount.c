/*
 * bench/alloccount.c: an LD_PRELOAD allocation counter for bench/run.py.
 *
 *   cc -O2 -shared -fPIC -o alloccount.so alloccount.c -ldl
 *   LD_PRELOAD=./alloccount.so build/wxlogin serve ...     then: kill -USR2 <pid>
 *
 * Counts every call to malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc
 * and pvalloc, from any thread (glibc's own strdup, fopen... call malloc, so they count too),
 * and passes each on to the real allocator. On SIGUSR2 it writes one line to stderr:
 *
 *   ALLOCCOUNT <calls so far>
 *
 * with write(2) only (async-signal-safe), followed by
 *
 *   ALLOCMHD <calls made on behalf of libmicrohttpd>
 *
 * run.py reads the lines from the service's log before and after N requests: (after - before) / N
 * is allocations per request. An allocation is libmicrohttpd's when the first frame of its
 * stack outside libc and this file is in libmicrohttpd (so its strdup()s count as its own):
 * what the service's own code allocates is the difference.
 *
 * dlsym() may itself allocate (calloc) while we look up the real functions: those few early calls
 * are served from a static buffer, which free() and realloc() recognise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);

static unsigned long long count, count_mhd;

/* Address ranges of the libraries the attribution needs (their PT_LOAD segments). */
struct range {
    uintptr_t lo, hi;
};
static struct range r_mhd, r_libc, r_self;
static _Thread_local int in_backtrace;

static int find_ranges(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    const char *name = info->dlpi_name != NULL ? info->dlpi_name : "";
    struct range *r = strstr(name, "libmicrohttpd") != NULL  ? &r_mhd
                      : strstr(name, "/libc.so") != NULL     ? &r_libc
                      : strstr(name, "alloccount.so") != NULL ? &r_self
                                                              : NULL;
    if (r == NULL)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (r->lo == 0 || lo < r->lo)
            r->lo = lo;
        if (hi > r->hi)
            r->hi = hi;
    }
    return 0;
}

static int in_range(const struct range *r, void *p)
{
    return (uintptr_t)p >= r->lo && (uintptr_t)p < r->hi;
}

/* Is the allocation being made for libmicrohttpd? The first frame outside this file and libc. */
static int for_mhd(void)
{
    void *frames[8];
    if (r_mhd.lo == 0 || in_backtrace)
        return 0;
    in_backtrace = 1; /* backtrace() may allocate the first time it runs */
    int n = backtrace(frames, 8);
    in_backtrace = 0;
    for (int i = 0; i < n; i++) {
        if (in_range(&r_self, frames[i]) || in_range(&r_libc, frames[i]))
            continue;
        return in_range(&r_mhd, frames[i]);
    }
    return 0;
}

static void counted(void)
{
    __atomic_fetch_add(&count, 1, __ATOMIC_RELAXED);
    if (for_mhd())
        __atomic_fetch_add(&count_mhd, 1, __ATOMIC_RELAXED);
}

/* ---- the bootstrap buffer: allocations made while dlsym() runs, never freed */

static _Alignas(16) unsigned char boot[16384];
static size_t boot_used;
static int initialising;

static int from_boot(const void *p)
{
    return (const unsigned char *)p >= boot && (const unsigned char *)p < boot + sizeof(boot);
}

/* 16 bytes before each block hold its size, for realloc. Zeroed: calloc can use it as is. */
static void *boot_alloc(size_t n)
{
    size_t need = 16 + ((n + 15) & ~(size_t)15);
    if (n > sizeof(boot) || need > sizeof(boot) - boot_used)
        return NULL;
    unsigned char *p = boot + boot_used;
    boot_used += need;
    memcpy(p, &n, sizeof(n));
    return p + 16;
}

static void init(void)
{
    if (real_malloc != NULL || initialising)
        return;
    initialising = 1; /* single-threaded: the first allocation happens long before any thread */
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    real_valloc = dlsym(RTLD_NEXT, "valloc");
    real_pvalloc = dlsym(RTLD_NEXT, "pvalloc");
    real_malloc = dlsym(RTLD_NEXT, "malloc"); /* last: non-NULL means everything is set */
    initialising = 0;
}

/* ---- the counted functions */

void *malloc(size_t n)
{
    init();
    if (real_malloc == NULL)
        return boot_alloc(n);
    counted();
    return real_malloc(n);
}

void *calloc(size_t k, size_t n)
{
    init();
    if (real_malloc == NULL) {
        if (n != 0 && k > SIZE_MAX / n)
            return NULL;
        return boot_alloc(k * n); /* the buffer is zeroed and never reused */
    }
    counted();
    return real_calloc(k, n);
}

void *realloc(void *p, size_t n)
{
    init();
    if (real_malloc == NULL || from_boot(p)) {
        void *q = real_malloc != NULL ? malloc(n) : boot_alloc(n);
        if (q != NULL && p != NULL) {
            size_t old;
            memcpy(&old, (unsigned char *)p - 16, sizeof(old));
            memcpy(q, p, old < n ? old : n);
        }
        return q;
    }
    counted();
    return real_realloc(p, n);
}

void free(void *p)
{
    if (p == NULL || from_boot(p))
        return;
    init();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    init();
    if (real_posix_memalign == NULL)
        return ENOMEM;
    counted();
    return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    init();
    if (real_aligned_alloc == NULL)
        return NULL;
    counted();
    return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
    init();
    if (real_memalign == NULL)
        return NULL;
    counted();
    return real_memalign(align, n);
}

void *valloc(size_t n)
{
    init();
    if (real_valloc == NULL)
        return NULL;
    counted();
    return real_valloc(n);
}

void *pvalloc(size_t n)
{
    init();
    if (real_pvalloc == NULL)
        return NULL;
    counted();
    return real_pvalloc(n);
}

/* ---- SIGUSR2: report the count */

static size_t put_line(char *buf, const char *label, unsigned long long v)
{
    char digits[24];
    size_t nd = 0, len = strlen(label);
    memcpy(buf, label, len);
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (nd > 0)
        buf[len++] = digits[--nd];
    buf[len++] = '\n';
    return len;
}

static void on_usr2(int sig)
{
    (void)sig;
    int saved = errno;
    char buf[96];
    /* The MHD count first: the total's line is what run.py waits for. */
    size_t len = put_line(buf, "ALLOCMHD ", __atomic_load_n(&count_mhd, __ATOMIC_RELAXED));
    len += put_line(buf + len, "ALLOCCOUNT ", __atomic_load_n(&count, __ATOMIC_RELAXED));
    ssize_t w = write(STDERR_FILENO, buf, len); /* one write: whole lines in the log */
    (void)w;
    errno = saved;
}

__attribute__((constructor)) static void alloccount_start(void)
{
    init();
    dl_iterate_phdr(find_ranges, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}
