/* Client addresses: X-Forwarded-For values and trusted_proxies networks (util/ipaddr). */
#include "fuzz.h"
#include "util/ipaddr.h"

/* The host bits past a network's prefix are zero. */
static bool prefix_only(const struct ipaddr_net *n)
{
    for (unsigned i = n->bits; i < 128; i++)
        if (n->addr.b[i / 8] & (0x80u >> (i % 8)))
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    if (s == NULL)
        return 0;

    /* An accepted address formats to text that parses to the same address, and formats alike. */
    struct ipaddr a, again;
    if (ipaddr_parse(s, size, &a)) {
        char t[IPADDR_TEXT_MAX], t2[IPADDR_TEXT_MAX];
        ipaddr_format(&a, t);
        FUZZ_CHECK(ipaddr_parse(t, strlen(t), &again));
        FUZZ_CHECK(memcmp(&a, &again, sizeof(a)) == 0);
        ipaddr_format(&again, t2);
        FUZZ_CHECK(strcmp(t, t2) == 0);
    }

    /* An accepted network has its prefix only, and "addr/bits" of it parses back to it. */
    struct ipaddr_net n, n2;
    if (ipaddr_net_parse(s, size, &n)) {
        FUZZ_CHECK(n.bits <= 128 && prefix_only(&n));
        FUZZ_CHECK(!ipaddr_is_v4(&n.addr) || n.bits >= 96);
        char t[IPADDR_TEXT_MAX + 8];
        ipaddr_format(&n.addr, t);
        size_t l = strlen(t);
        snprintf(t + l, sizeof(t) - l, "/%u", ipaddr_is_v4(&n.addr) ? n.bits - 96 : n.bits);
        FUZZ_CHECK(ipaddr_net_parse(t, strlen(t), &n2));
        FUZZ_CHECK(memcmp(&n, &n2, sizeof(n)) == 0);
        FUZZ_CHECK(ipaddr_in(&n.addr, &n, 1));
    }

    /* A list: never more than cap entries, and a refusal names text inside the input. */
    struct ipaddr_net nets[4];
    size_t nn = 99, bad_len = 0;
    const char *bad = NULL;
    if (ipaddr_net_list_parse(s, nets, 4, &nn, &bad, &bad_len) == 0) {
        FUZZ_CHECK(nn <= 4);
        for (size_t i = 0; i < nn; i++)
            FUZZ_CHECK(nets[i].bits <= 128 && prefix_only(&nets[i]));
    } else {
        FUZZ_CHECK(bad != NULL && bad >= s && bad + bad_len <= s + size);
    }

    /* X-Forwarded-For: the input's lines are the header's values, from a trusted peer. The
     * client is the peer, or one of the header's addresses; false means the peer. */
    static const char trusted_text[] = "10.0.0.0/8 127.0.0.1 ::1 fd00::/8";
    struct ipaddr_net trusted[8];
    size_t ntrusted = 0;
    const char *tb;
    size_t tbl;
    FUZZ_CHECK(ipaddr_net_list_parse(trusted_text, trusted, 8, &ntrusted, &tb, &tbl) == 0);
    const char *values[8];
    size_t nvalues = 0;
    for (char *p = s, *nl; p != NULL && nvalues < 8; p = nl) {
        nl = strchr(p, '\n');
        if (nl != NULL)
            *nl++ = '\0';
        values[nvalues++] = p;
    }
    struct ipaddr peer, client;
    FUZZ_CHECK(ipaddr_parse("10.1.2.3", 8, &peer));
    bool ok = ipaddr_forwarded(&peer, trusted, ntrusted, values, nvalues, &client);
    if (!ok) {
        FUZZ_CHECK(memcmp(&client, &peer, sizeof(peer)) == 0);
    } else if (memcmp(&client, &peer, sizeof(peer)) != 0) {
        /* then its text is in the header */
        char t[IPADDR_TEXT_MAX];
        ipaddr_format(&client, t);
        struct ipaddr c2;
        FUZZ_CHECK(ipaddr_parse(t, strlen(t), &c2) && memcmp(&c2, &client, sizeof(c2)) == 0);
    }
    free(s);
    return 0;
}
