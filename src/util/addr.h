/*
 * util/addr: "host:port" and "[v6]:port" to a socket address (through getaddrinfo).
 */
#ifndef WXLOGIN_UTIL_ADDR_H
#define WXLOGIN_UTIL_ADDR_H

#include <sys/socket.h>

/* Resolves s into *ss. Returns 0, or -1 when s is not host:port or does not resolve (an IPv6
 * address must be in brackets). */
int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
