/*
 * util/ipaddr: IP addresses and networks as 16 bytes, and the client address behind trusted
 * proxies (X-Forwarded-For). Pure code: no I/O, no allocation, no logging.
 *
 * Every address is kept in IPv6 form, an IPv4 one as its IPv4-mapped address (::ffff:a.b.c.d),
 * so one comparison serves both families and an IPv4 client seen on an IPv6 socket matches the
 * IPv4 networks. Text is parsed by inet_pton() only (no zones, no brackets, no ports).
 */
#ifndef WXLOGIN_UTIL_IPADDR_H
#define WXLOGIN_UTIL_IPADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* Text of an address, NUL included (INET6_ADDRSTRLEN). */
#define IPADDR_TEXT_MAX 46

struct ipaddr {
    uint8_t b[16];
};

/* A network: the addresses whose first bits bits (of the 16-byte form) are addr's. */
struct ipaddr_net {
    struct ipaddr addr;
    unsigned bits; /* 0..128; an IPv4 /n is 96 + n */
};

/* Parses len bytes of text (an IPv4 dotted quad or an IPv6 address). False when it is not. */
bool ipaddr_parse(const char *s, size_t len, struct ipaddr *out);
/* The address of an AF_INET or AF_INET6 socket address; false for other families. */
bool ipaddr_from_sockaddr(const struct sockaddr *sa, struct ipaddr *out);
/* True for an IPv4(-mapped) address. */
bool ipaddr_is_v4(const struct ipaddr *a);
/* The address as text: dotted quad for IPv4, RFC 5952 for IPv6. */
void ipaddr_format(const struct ipaddr *a, char out[IPADDR_TEXT_MAX]);

/*
 * Parses "ADDR/BITS" or a bare ADDR (a single host) of len bytes: BITS 0–32 for IPv4, 0–128 for
 * IPv6. An address with bits set past the prefix ("10.0.0.1/8") is refused: it is a typo for
 * the network or for the host, and trust must not be guessed.
 */
bool ipaddr_net_parse(const char *s, size_t len, struct ipaddr_net *out);
/*
 * Parses a list of networks separated by commas and/or blanks into out (cap entries), *n set to
 * how many. Returns 0, or -1 with *bad and *bad_len naming the first entry that is not a network
 * (or the first one past cap).
 */
int ipaddr_net_list_parse(const char *s, struct ipaddr_net *out, size_t cap, size_t *n,
                          const char **bad, size_t *bad_len);
/* True when a is in one of the n networks. */
bool ipaddr_in(const struct ipaddr *a, const struct ipaddr_net *nets, size_t n);

/*
 * The client of a request that came from peer, given its X-Forwarded-For header lines in order
 * (nvalues of them; none: the peer). The standard algorithm (nginx's real_ip_recursive): when
 * peer is not trusted, the client is peer and the header is not looked at (anyone can send
 * one). Otherwise the addresses of the header, read from the right (the last proxy's entry
 * first), are skipped while they are trusted too; the first that is not is the client, and when
 * every one is, the leftmost. A header with an entry that is not an address (empty, "unknown",
 * with a port...) proves nothing: the client is then peer, and the result is false (true
 * otherwise).
 */
bool ipaddr_forwarded(const struct ipaddr *peer, const struct ipaddr_net *trusted, size_t ntrusted,
                      const char *const *values, size_t nvalues, struct ipaddr *client);

#endif
