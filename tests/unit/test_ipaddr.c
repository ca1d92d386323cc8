/*
 * Unit tests for util/ipaddr.h: addresses of both families in one form, networks (prefixes,
 * host bits, bounds), lists of them, and the X-Forwarded-For walk: untrusted peers ignored,
 * trusted hops skipped from the right, several header lines, malformed entries falling back to
 * the peer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "util/ipaddr.h"

static struct ipaddr addr(const char *s)
{
    struct ipaddr a;
    if (!ipaddr_parse(s, strlen(s), &a))
        fail_msg("'%s' does not parse", s);
    return a;
}

static void assert_addr_text(const struct ipaddr *a, const char *want)
{
    char t[IPADDR_TEXT_MAX];
    ipaddr_format(a, t);
    assert_string_equal(t, want);
}

static struct ipaddr_net net(const char *s)
{
    struct ipaddr_net n;
    if (!ipaddr_net_parse(s, strlen(s), &n))
        fail_msg("'%s' does not parse as a network", s);
    return n;
}

static bool net_ok(const char *s)
{
    struct ipaddr_net n;
    return ipaddr_net_parse(s, strlen(s), &n);
}

static void test_addresses_of_both_families(void **state)
{
    (void)state;
    struct ipaddr a = addr("203.0.113.9");
    assert_true(ipaddr_is_v4(&a));
    assert_addr_text(&a, "203.0.113.9");
    /* an IPv4 client on an IPv6 socket is the same address */
    struct ipaddr m = addr("::ffff:203.0.113.9");
    assert_memory_equal(&a, &m, sizeof(a));
    struct ipaddr b = addr("2001:DB8:0:0::1");
    assert_false(ipaddr_is_v4(&b));
    assert_addr_text(&b, "2001:db8::1");
    struct ipaddr lo = addr("::1");
    assert_addr_text(&lo, "::1");
}

static void test_what_is_not_an_address(void **state)
{
    (void)state;
    struct ipaddr a;
    const char *bad[] = {"",
                         "unknown",
                         "203.0.113",
                         "203.0.113.9.1",
                         "203.0.113.256",
                         "203.0.113.9:80",
                         "[2001:db8::1]",
                         "2001:db8::1%eth0",
                         " 203.0.113.9",
                         "203.0.113.9 ",
                         "0x7f.0.0.1",
                         "2001:db8::1/64"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ipaddr_parse(bad[i], strlen(bad[i]), &a))
            fail_msg("'%s' parsed as an address", bad[i]);
    /* only len bytes are read */
    assert_true(ipaddr_parse("10.0.0.1,junk", 8, &a));
    assert_addr_text(&a, "10.0.0.1");
    char longer[100];
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    assert_false(ipaddr_parse(longer, strlen(longer), &a));
}

static void test_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "198.51.100.7", &s4.sin_addr);
    struct ipaddr a;
    assert_true(ipaddr_from_sockaddr((struct sockaddr *)&s4, &a));
    assert_addr_text(&a, "198.51.100.7");
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
    assert_true(ipaddr_from_sockaddr((struct sockaddr *)&s6, &a));
    assert_addr_text(&a, "2001:db8::7");
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_false(ipaddr_from_sockaddr(&un, &a));
}

static void test_networks_match_their_prefix(void **state)
{
    (void)state;
    struct ipaddr_net n8 = net("10.0.0.0/8");
    assert_int_equal(n8.bits, 96 + 8);
    struct ipaddr in = addr("10.255.1.2"), out = addr("11.0.0.1");
    assert_true(ipaddr_in(&in, &n8, 1));
    assert_false(ipaddr_in(&out, &n8, 1));
    /* a prefix that is not a whole number of bytes */
    struct ipaddr_net n12 = net("172.16.0.0/12");
    struct ipaddr a = addr("172.31.255.255"), b = addr("172.32.0.0");
    assert_true(ipaddr_in(&a, &n12, 1));
    assert_false(ipaddr_in(&b, &n12, 1));
    /* a bare address is one host */
    struct ipaddr_net host = net("192.0.2.1");
    assert_int_equal(host.bits, 128);
    struct ipaddr h1 = addr("192.0.2.1"), h2 = addr("192.0.2.2");
    assert_true(ipaddr_in(&h1, &host, 1));
    assert_false(ipaddr_in(&h2, &host, 1));
    /* IPv6, and IPv4 networks never match an IPv6 address outside ::ffff:0:0/96 */
    struct ipaddr_net v6 = net("2001:db8::/32");
    struct ipaddr x = addr("2001:db8:ffff::1"), y = addr("2001:db9::1");
    assert_true(ipaddr_in(&x, &v6, 1));
    assert_false(ipaddr_in(&y, &v6, 1));
    struct ipaddr_net all4 = net("0.0.0.0/0");
    struct ipaddr z = addr("2001:db8::1"), w = addr("8.8.8.8");
    assert_false(ipaddr_in(&z, &all4, 1));
    assert_true(ipaddr_in(&w, &all4, 1));
    struct ipaddr_net all = net("::/0");
    assert_true(ipaddr_in(&z, &all, 1));
    assert_true(ipaddr_in(&w, &all, 1));
    struct ipaddr_net lo = net("::1/128");
    struct ipaddr l = addr("::1");
    assert_true(ipaddr_in(&l, &lo, 1));
    assert_false(ipaddr_in(&l, NULL, 0));
}

static void test_what_is_not_a_network(void **state)
{
    (void)state;
    assert_true(net_ok("10.0.0.0/0") == false); /* host bits past /0 */
    assert_true(net_ok("0.0.0.0/0"));
    assert_true(net_ok("10.0.0.0/32"));
    assert_true(net_ok("2001:db8::/128"));
    const char *bad[] = {
        "10.0.0.1/8", /* host bits set: a typo for /32 or for 10.0.0.0/8 */
        "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/",   "10.0.0.0/-1",  "10.0.0.0/+8",
        "10.0.0.0/ 8", "10.0.0.0/0008",  "10.0.0.0/8x", "10.0.0.0/0x8", "/8",
        "junk/8",      "2001:db8::1/32"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (net_ok(bad[i]))
            fail_msg("'%s' parsed as a network", bad[i]);
}

static void test_lists_of_networks(void **state)
{
    (void)state;
    struct ipaddr_net nets[4];
    size_t n = 99, bad_len = 0;
    const char *bad = NULL;
    assert_int_equal(ipaddr_net_list_parse("", nets, 4, &n, &bad, &bad_len), 0);
    assert_int_equal(n, 0);
    assert_int_equal(
        ipaddr_net_list_parse(" 10.0.0.0/8, ::1\t192.168.0.0/16 ,", nets, 4, &n, &bad, &bad_len),
        0);
    assert_int_equal(n, 3);
    struct ipaddr a = addr("192.168.3.4"), b = addr("::1"), c = addr("172.16.0.1");
    assert_true(ipaddr_in(&a, nets, n));
    assert_true(ipaddr_in(&b, nets, n));
    assert_false(ipaddr_in(&c, nets, n));
    const char *text = "10.0.0.0/8, 10.0.0.1/8, ::1";
    assert_int_equal(ipaddr_net_list_parse(text, nets, 4, &n, &bad, &bad_len), -1);
    assert_ptr_equal(bad, text + 12);
    assert_int_equal(bad_len, 10);
    /* more than fit: the first one past is named */
    text = "10.0.0.0/8 11.0.0.0/8 12.0.0.0/8 13.0.0.0/8 14.0.0.0/8";
    assert_int_equal(ipaddr_net_list_parse(text, nets, 4, &n, &bad, &bad_len), -1);
    assert_ptr_equal(bad, strstr(text, "14."));
}

/* The client for peer and X-Forwarded-For lines, with trusted the networks in tlist. */
static bool forwarded(const char *tlist, const char *peer, const char *const *lines, size_t n,
                      char out[IPADDR_TEXT_MAX])
{
    struct ipaddr_net trusted[8];
    size_t nt, bad_len;
    const char *bad;
    assert_int_equal(ipaddr_net_list_parse(tlist, trusted, 8, &nt, &bad, &bad_len), 0);
    struct ipaddr p = addr(peer), c;
    memset(&c, 0xee, sizeof(c));
    bool ok = ipaddr_forwarded(&p, trusted, nt, lines, n, &c);
    ipaddr_format(&c, out);
    return ok;
}

#define XFF(...) ((const char *const[]){__VA_ARGS__})

static void assert_client(const char *tlist, const char *peer, const char *const *lines, size_t n,
                          bool ok, const char *want)
{
    char got[IPADDR_TEXT_MAX];
    bool r = forwarded(tlist, peer, lines, n, got);
    if (r != ok || strcmp(got, want) != 0)
        fail_msg("peer %s, trusted '%s', %zu line(s) '%s'...: got %s (%s), want %s (%s)", peer,
                 tlist, n, n ? lines[0] : "", got, r ? "ok" : "malformed", want,
                 ok ? "ok" : "malformed");
}

static void test_untrusted_peer_is_the_client_whatever_it_says(void **state)
{
    (void)state;
    /* no trusted proxies at all (the default) */
    assert_client("", "198.51.100.1", XFF("203.0.113.9"), 1, true, "198.51.100.1");
    /* a spoofed header from a peer that is not a proxy of ours */
    assert_client("10.0.0.0/8", "198.51.100.1", XFF("203.0.113.9, 10.0.0.1"), 1, true,
                  "198.51.100.1");
    /* not even looked at: malformed is fine */
    assert_client("10.0.0.0/8", "198.51.100.1", XFF("junk"), 1, true, "198.51.100.1");
}

static void test_trusted_peer_gives_the_forwarded_client(void **state)
{
    (void)state;
    assert_client("127.0.0.1", "127.0.0.1", XFF("203.0.113.9"), 1, true, "203.0.113.9");
    /* no header: the proxy itself is the client */
    assert_client("127.0.0.1", "127.0.0.1", NULL, 0, true, "127.0.0.1");
    /* whitespace around entries */
    assert_client("127.0.0.1", "127.0.0.1", XFF("  203.0.113.9\t"), 1, true, "203.0.113.9");
    /* IPv6 clients and proxies */
    assert_client("::1", "::1", XFF("2001:db8::5"), 1, true, "2001:db8::5");
    assert_client("2001:db8:1::/48", "2001:db8:1::1", XFF("198.51.100.4"), 1, true, "198.51.100.4");
}

static void test_rightmost_untrusted_entry_wins(void **state)
{
    (void)state;
    /* the client wrote the left part; our proxies appended the rest */
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1",
                  XFF("1.1.1.1, 203.0.113.9, 10.0.0.2, 10.0.0.3"), 1, true, "203.0.113.9");
    /* a spoofed leftmost entry does not matter, even a malformed one */
    assert_client("127.0.0.1", "127.0.0.1", XFF("evil, 203.0.113.9"), 1, true, "203.0.113.9");
    /* every hop trusted: the leftmost is as far as anyone can tell */
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1", XFF("10.0.0.7, 10.0.0.8"), 1, true,
                  "10.0.0.7");
}

static void test_several_header_lines_read_as_one_list(void **state)
{
    (void)state;
    /* the last line is the nearest proxy's */
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1", XFF("1.1.1.1", "203.0.113.9, 10.0.0.2"), 2,
                  true, "203.0.113.9");
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1", XFF("203.0.113.9", "10.0.0.2"), 2, true,
                  "203.0.113.9");
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1", XFF("198.51.100.1", "10.0.0.2", "10.0.0.3"),
                  3, true, "198.51.100.1");
}

static void test_malformed_walk_falls_back_to_the_peer(void **state)
{
    (void)state;
    const char *const bad[] = {"",
                               " ",
                               "unknown",
                               "203.0.113.9:4711",
                               "[2001:db8::1]",
                               "203.0.113.9,",
                               ", 203.0.113.9,",
                               "203.0.113.9;proto=https",
                               "_hidden",
                               "203.0.113.9 198.51.100.1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_client("127.0.0.1", "127.0.0.1", XFF(bad[i]), 1, false, "127.0.0.1");
    /* malformed behind a trusted hop is still in the walk */
    assert_client("10.0.0.0/8, 127.0.0.1", "127.0.0.1", XFF("203.0.113.9, junk, 10.0.0.2"), 1,
                  false, "127.0.0.1");
    /* on another line too */
    assert_client("127.0.0.1", "127.0.0.1", XFF("203.0.113.9", "junk"), 2, false, "127.0.0.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addresses_of_both_families),
        cmocka_unit_test(test_what_is_not_an_address),
        cmocka_unit_test(test_from_sockaddr),
        cmocka_unit_test(test_networks_match_their_prefix),
        cmocka_unit_test(test_what_is_not_a_network),
        cmocka_unit_test(test_lists_of_networks),
        cmocka_unit_test(test_untrusted_peer_is_the_client_whatever_it_says),
        cmocka_unit_test(test_trusted_peer_gives_the_forwarded_client),
        cmocka_unit_test(test_rightmost_untrusted_entry_wins),
        cmocka_unit_test(test_several_header_lines_read_as_one_list),
        cmocka_unit_test(test_malformed_walk_falls_back_to_the_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
