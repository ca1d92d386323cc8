/*
 * util/ipaddr: addresses through inet_pton()/inet_ntop(), networks as a prefix of the 16-byte
 * form, and the X-Forwarded-For walk (see ipaddr.h).
 */
#include "util/ipaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void from_v4(const void *in4, struct ipaddr *out)
{
    memcpy(out->b, v4_prefix, sizeof(v4_prefix));
    memcpy(out->b + 12, in4, 4);
}

bool ipaddr_parse(const char *s, size_t len, struct ipaddr *out)
{
    char text[IPADDR_TEXT_MAX];
    if (len == 0 || len >= sizeof(text))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, text, &a4) == 1) {
        from_v4(&a4, out);
        return true;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, text, &a6) == 1) {
        memcpy(out->b, &a6, 16);
        return true;
    }
    return false;
}

bool ipaddr_from_sockaddr(const struct sockaddr *sa, struct ipaddr *out)
{
    if (sa->sa_family == AF_INET) {
        from_v4(&((const struct sockaddr_in *)(const void *)sa)->sin_addr, out);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out->b, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

bool ipaddr_is_v4(const struct ipaddr *a)
{
    return memcmp(a->b, v4_prefix, sizeof(v4_prefix)) == 0;
}

void ipaddr_format(const struct ipaddr *a, char out[IPADDR_TEXT_MAX])
{
    const char *r = ipaddr_is_v4(a) ? inet_ntop(AF_INET, a->b + 12, out, IPADDR_TEXT_MAX)
                                    : inet_ntop(AF_INET6, a->b, out, IPADDR_TEXT_MAX);
    if (r == NULL) /* cannot happen with these sizes */
        out[0] = '\0';
}

/* True when a and b agree on their first bits bits. */
static bool prefix_equal(const struct ipaddr *a, const struct ipaddr *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a->b, b->b, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a->b[whole] & mask) == (b->b[whole] & mask);
}

bool ipaddr_net_parse(const char *s, size_t len, struct ipaddr_net *out)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash != NULL ? (size_t)(slash - s) : len;
    struct ipaddr_net n;
    if (!ipaddr_parse(s, alen, &n.addr))
        return false;
    unsigned width = ipaddr_is_v4(&n.addr) ? 32 : 128;
    unsigned bits = width;
    if (slash != NULL) {
        /* 1 to 3 digits and nothing else (strtoul alone would take "+8", " 8", "0x8"). */
        const char *d = slash + 1;
        size_t dlen = len - alen - 1;
        char digits[4];
        if (dlen == 0 || dlen > 3)
            return false;
        for (size_t i = 0; i < dlen; i++)
            if (d[i] < '0' || d[i] > '9')
                return false;
        memcpy(digits, d, dlen);
        digits[dlen] = '\0';
        unsigned long v = strtoul(digits, NULL, 10);
        if (v > width)
            return false;
        bits = (unsigned)v;
    }
    n.bits = bits + (width == 32 ? 96 : 0);
    /* No bit set past the prefix: the network must be written as a network. */
    struct ipaddr masked = n.addr;
    for (unsigned i = n.bits; i < 128; i++)
        masked.b[i / 8] &= (uint8_t) ~(0x80 >> (i % 8));
    if (memcmp(&masked, &n.addr, sizeof(masked)) != 0)
        return false;
    *out = n;
    return true;
}

static bool list_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t';
}

int ipaddr_net_list_parse(const char *s, struct ipaddr_net *out, size_t cap, size_t *n,
                          const char **bad, size_t *bad_len)
{
    size_t count = 0;
    for (const char *p = s; *p != '\0';) {
        if (list_sep(*p)) {
            p++;
            continue;
        }
        size_t len = 0;
        while (p[len] != '\0' && !list_sep(p[len]))
            len++;
        if (count == cap || !ipaddr_net_parse(p, len, &out[count])) {
            *bad = p;
            *bad_len = len;
            return -1;
        }
        count++;
        p += len;
    }
    *n = count;
    return 0;
}

bool ipaddr_in(const struct ipaddr *a, const struct ipaddr_net *nets, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_equal(a, &nets[i].addr, nets[i].bits))
            return true;
    return false;
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

bool ipaddr_forwarded(const struct ipaddr *peer, const struct ipaddr_net *trusted, size_t ntrusted,
                      const char *const *values, size_t nvalues, struct ipaddr *client)
{
    *client = *peer;
    if (!ipaddr_in(peer, trusted, ntrusted))
        return true;
    struct ipaddr found = *peer;
    /* The last line's last entry was written by the proxy nearest to us: walk leftwards. */
    for (size_t v = nvalues; v-- > 0;) {
        const char *s = values[v];
        size_t end = strlen(s);
        for (;;) {
            size_t start = end;
            while (start > 0 && s[start - 1] != ',')
                start--;
            size_t a = start, b = end;
            while (a < b && ows(s[a]))
                a++;
            while (b > a && ows(s[b - 1]))
                b--;
            if (!ipaddr_parse(s + a, b - a, &found))
                return false; /* *client is the peer */
            if (!ipaddr_in(&found, trusted, ntrusted)) {
                *client = found;
                return true;
            }
            if (start == 0)
                break;
            end = start - 1; /* before the comma */
        }
    }
    /* Every hop is a trusted proxy: the leftmost is as far as anyone can tell. */
    *client = found;
    return true;
}
