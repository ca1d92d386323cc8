#include "util/addr.h"

#include <netdb.h>
#include <stdlib.h>
#include <string.h>

int addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *start = s, *port;
    size_t hlen;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        start = s + 1;
        hlen = (size_t)(close - start);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        hlen = (size_t)(colon - s);
        /* An IPv6 address goes in brackets: ":::0" or "::1:80" would otherwise listen on a
         * guess at where the address ends. */
        if (memchr(s, ':', hlen) != NULL)
            return -1;
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(host) || *port == '\0' || strlen(port) > 5 ||
        strspn(port, "0123456789") != strlen(port) || strtol(port, NULL, 10) > 65535)
        return -1; /* getaddrinfo would take 65536 for port 0, 65537 for 1... */
    memcpy(host, start, hlen);
    host[hlen] = '\0';

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}
