/*
 * Listen addresses ("host:port", "[v6]:port"; util/addr). addr_parse resolves host names: here
 * getaddrinfo is replaced by one that resolves numeric hosts only (and "localhost"), so the
 * driver never waits on a resolver, and every accepted input is checked against its text.
 */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "util/addr.h"

typedef int gai_fn(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn *real;
    if (real == NULL)
        real = (gai_fn *)dlsym(RTLD_NEXT, "getaddrinfo");
    struct addrinfo h = *hints;
    if (node != NULL && strcmp(node, "localhost") != 0)
        h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    if (s == NULL)
        return 0;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    if (addr_parse(s, &ss, &len) == 0) {
        FUZZ_CHECK(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
        FUZZ_CHECK(len == (ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                   : sizeof(struct sockaddr_in6)));
        /* The port is the text after the last colon, a number a port can be. */
        const char *colon = strrchr(s, ':');
        FUZZ_CHECK(colon != NULL);
        char *end;
        unsigned long port = strtoul(colon + 1, &end, 10);
        FUZZ_CHECK(*end == '\0' && port <= 65535);
        unsigned got = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                     : ((struct sockaddr_in6 *)&ss)->sin6_port);
        FUZZ_CHECK(got == port);
        /* An IPv6 address is written in brackets ("::1:80" is not [::1]:80 or [::]:180). */
        FUZZ_CHECK(ss.ss_family == AF_INET || s[0] == '[');
    }
    free(s);
    return 0;
}
