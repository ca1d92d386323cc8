/*
 * tests/alloc/failalloc: allocation-failure injection for wxlogin (curl's torture mode is the
 * model). Linked only into the test binary $(B)/wxlogin-failalloc, with `ld --wrap` on the
 * allocating functions below: the linker sends wxlogin's own calls to them (and only those: a
 * reference from a shared library — libmicrohttpd, libcurl, jansson, OpenSSL — is not rewritten)
 * to __wrap_<name> here, which fails the Nth call after the test armed it and passes the others
 * to __real_<name>. So exactly the ENOMEM branches of our code run, one at a time, whatever the
 * sanitizer: under ASan __real_malloc is ASan's, and LeakSanitizer reports what a failure path
 * leaked when the server exits.
 *
 * The test controls it through a file named by WXLOGIN_FAILALLOC (see struct ctl), mapped
 * shared: it sets fail_at and armed, sends one request, clears armed, and reads whether the Nth
 * call was reached (hit), where (site: the call's return address as an offset in the
 * executable, for addr2line) and which function (fn). Without the variable every wrapper is a
 * plain call.
 */
#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The control page, as the test (tests/e2e/test_alloc_failure.py) lays it out: int64 slots. */
struct ctl {
    _Atomic int64_t magic;   /* CTL_MAGIC once mapped: the test knows the build has the hook */
    _Atomic int64_t armed;   /* counting only while non-zero */
    _Atomic int64_t fail_at; /* the call to fail, from 1 */
    _Atomic int64_t count;   /* calls counted since armed */
    _Atomic int64_t hit;     /* 1 once the fail_at-th call was failed */
    _Atomic int64_t site;    /* its return address, relative to the executable's start */
    _Atomic int64_t fn;      /* which function (enum fa_fn) */
};

#define CTL_MAGIC 0x77786661696cLL /* "wxfail" */

enum fa_fn {
    FA_MALLOC = 1,
    FA_CALLOC,
    FA_REALLOC,
    FA_STRDUP,
    FA_ALIGNED_ALLOC,
    FA_ASPRINTF,
    FA_JSON_LOADB,
    FA_JSON_DUMPS,
    FA_JSON_PACK,
    FA_JSON_STRING,
    FA_JSON_ARRAY,
    FA_JSON_ARRAY_APPEND_NEW,
    FA_EVP_MD_CTX_NEW,
    FA_EVP_CIPHER_CTX_NEW,
    FA_CURL_EASY_INIT,
    FA_CURL_SLIST_APPEND,
    FA_CURL_URL,
    FA_MHD_CREATE_RESPONSE,
    FA_MHD_ADD_RESPONSE_HEADER,
};

extern const char __executable_start[];
static struct ctl *ctl;

__attribute__((constructor)) static void fa_init(void)
{
    const char *path = getenv("WXLOGIN_FAILALLOC");
    if (path == NULL || *path == '\0')
        return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return;
    ctl = p;
    atomic_store(&ctl->magic, CTL_MAGIC);
}

/* True when this call is the one to fail. */
static bool fa_fail(enum fa_fn fn, const void *ra)
{
    if (ctl == NULL || atomic_load(&ctl->armed) == 0)
        return false;
    int64_t n = atomic_fetch_add(&ctl->count, 1) + 1;
    if (n != atomic_load(&ctl->fail_at))
        return false;
    atomic_store(&ctl->site, (int64_t)((uintptr_t)ra - (uintptr_t)__executable_start));
    atomic_store(&ctl->fn, fn);
    atomic_store(&ctl->hit, 1);
    return true;
}

#define RA __builtin_return_address(0)

/* ---- libc ---- */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__real_aligned_alloc(size_t align, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_asprintf(char **out, const char *fmt, ...);

void *__wrap_malloc(size_t n)
{
    return fa_fail(FA_MALLOC, RA) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fa_fail(FA_CALLOC, RA) ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return fa_fail(FA_REALLOC, RA) ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return fa_fail(FA_STRDUP, RA) ? NULL : __real_strdup(s);
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    return fa_fail(FA_ALIGNED_ALLOC, RA) ? NULL : __real_aligned_alloc(align, n);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
    if (fa_fail(FA_ASPRINTF, RA))
        return -1; /* *out is then undefined, as glibc documents */
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(out, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- jansson ---- */
json_t *__real_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);
char *__real_json_dumps(const json_t *j, size_t flags);
json_t *__real_json_string(const char *s);
json_t *__real_json_array(void);
int __real_json_array_append_new(json_t *a, json_t *v);
json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);
char *__wrap_json_dumps(const json_t *j, size_t flags);
json_t *__wrap_json_pack(const char *fmt, ...);
json_t *__wrap_json_string(const char *s);
json_t *__wrap_json_array(void);
int __wrap_json_array_append_new(json_t *a, json_t *v);

json_t *__wrap_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
    if (fa_fail(FA_JSON_LOADB, RA)) {
        if (err != NULL) {
            memset(err, 0, sizeof(*err));
            snprintf(err->text, sizeof(err->text), "out of memory");
            /* where jansson keeps the code json_error_code() reads */
            err->text[JSON_ERROR_TEXT_LENGTH - 1] = (char)json_error_out_of_memory;
        }
        return NULL;
    }
    return __real_json_loadb(buf, len, flags, err);
}

char *__wrap_json_dumps(const json_t *j, size_t flags)
{
    return fa_fail(FA_JSON_DUMPS, RA) ? NULL : __real_json_dumps(j, flags);
}

json_t *__wrap_json_pack(const char *fmt, ...)
{
    bool fail = fa_fail(FA_JSON_PACK, RA);
    va_list ap;
    va_start(ap, fmt);
    json_t *r = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    if (fail) {
        /* Packed then dropped: what a failing json_pack does with its "o" arguments (stolen
         * whatever the outcome), so a failure here leaks only what the caller would. */
        json_decref(r);
        return NULL;
    }
    return r;
}

json_t *__wrap_json_string(const char *s)
{
    return fa_fail(FA_JSON_STRING, RA) ? NULL : __real_json_string(s);
}

json_t *__wrap_json_array(void)
{
    return fa_fail(FA_JSON_ARRAY, RA) ? NULL : __real_json_array();
}

int __wrap_json_array_append_new(json_t *a, json_t *v)
{
    if (fa_fail(FA_JSON_ARRAY_APPEND_NEW, RA)) {
        json_decref(v); /* the reference is stolen whatever the outcome */
        return -1;
    }
    return __real_json_array_append_new(a, v);
}

/* ---- OpenSSL ---- */
EVP_MD_CTX *__real_EVP_MD_CTX_new(void);
EVP_CIPHER_CTX *__real_EVP_CIPHER_CTX_new(void);
EVP_MD_CTX *__wrap_EVP_MD_CTX_new(void);
EVP_CIPHER_CTX *__wrap_EVP_CIPHER_CTX_new(void);

EVP_MD_CTX *__wrap_EVP_MD_CTX_new(void)
{
    return fa_fail(FA_EVP_MD_CTX_NEW, RA) ? NULL : __real_EVP_MD_CTX_new();
}

EVP_CIPHER_CTX *__wrap_EVP_CIPHER_CTX_new(void)
{
    return fa_fail(FA_EVP_CIPHER_CTX_NEW, RA) ? NULL : __real_EVP_CIPHER_CTX_new();
}

/* ---- libcurl ---- */
CURL *__real_curl_easy_init(void);
struct curl_slist *__real_curl_slist_append(struct curl_slist *l, const char *s);
CURLU *__real_curl_url(void);
CURL *__wrap_curl_easy_init(void);
struct curl_slist *__wrap_curl_slist_append(struct curl_slist *l, const char *s);
CURLU *__wrap_curl_url(void);

CURL *__wrap_curl_easy_init(void)
{
    return fa_fail(FA_CURL_EASY_INIT, RA) ? NULL : __real_curl_easy_init();
}

struct curl_slist *__wrap_curl_slist_append(struct curl_slist *l, const char *s)
{
    return fa_fail(FA_CURL_SLIST_APPEND, RA) ? NULL : __real_curl_slist_append(l, s);
}

CURLU *__wrap_curl_url(void)
{
    return fa_fail(FA_CURL_URL, RA) ? NULL : __real_curl_url();
}

/* ---- libmicrohttpd ---- */
struct MHD_Response *__real_MHD_create_response_from_buffer(size_t size, void *buf,
                                                            enum MHD_ResponseMemoryMode mode);
enum MHD_Result __real_MHD_add_response_header(struct MHD_Response *r, const char *h,
                                               const char *v);
struct MHD_Response *__wrap_MHD_create_response_from_buffer(size_t size, void *buf,
                                                            enum MHD_ResponseMemoryMode mode);
enum MHD_Result __wrap_MHD_add_response_header(struct MHD_Response *r, const char *h,
                                               const char *v);

struct MHD_Response *__wrap_MHD_create_response_from_buffer(size_t size, void *buf,
                                                            enum MHD_ResponseMemoryMode mode)
{
    if (fa_fail(FA_MHD_CREATE_RESPONSE, RA))
        return NULL;
    return __real_MHD_create_response_from_buffer(size, buf, mode);
}

enum MHD_Result __wrap_MHD_add_response_header(struct MHD_Response *r, const char *h, const char *v)
{
    return fa_fail(FA_MHD_ADD_RESPONSE_HEADER, RA) ? MHD_NO
                                                   : __real_MHD_add_response_header(r, h, v);
}
