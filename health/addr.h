/* Socket addresses written as text, shared by the health listener, the
 * `health` client and the config loader (which checks health.listen and
 * health.probe when it reads them). */
#ifndef PI_HEALTH_ADDR_H
#define PI_HEALTH_ADDR_H

#include <sys/socket.h>

/* Parses "A.B.C.D:PORT", "[IPv6]:PORT" or "localhost:PORT" (127.0.0.1)
 * into *ss. IP literals only: no name lookup, so it never blocks. PORT is
 * decimal 0-65535. Returns 0, or -EINVAL with *ss zeroed. */
int pi_health_parse_addr(const char *s, struct sockaddr_storage *ss);

/* The port of an AF_INET or AF_INET6 address, in host order. */
int pi_health_addr_port(const struct sockaddr_storage *ss);

#endif
