/*
 * util/portfile: `--port-file FILE`, for scripts that start a server on port 0 (curl's test
 * servers' --portfile): once the listener is bound, its port is written to FILE.
 */
#ifndef WXLOGIN_UTIL_PORTFILE_H
#define WXLOGIN_UTIL_PORTFILE_H

/* Writes port and a newline to path atomically (a temporary file beside it, then rename()), so
 * a reader never sees it half written. Returns 0, or -1 with errno set. */
int portfile_write(const char *path, unsigned port);

#endif
