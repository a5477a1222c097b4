/* The `peerprep-init health` command (SPEC §1): a small HTTP client for
 * container health checks. It needs no libuv and no config file, so it goes
 * from exec to exit in a few milliseconds. */
#ifndef PI_HEALTH_PROBE_H
#define PI_HEALTH_PROBE_H

#include <stddef.h>

#include "health/log.h"

/* The whole exchange's deadline without --timeout: below the 5 s an
 * orchestrator (Docker, ECS) gives a health check by default, so the
 * probe says why before it is killed. */
#define PI_HEALTH_PROBE_TIMEOUT_MS 3000

/* Runs `health [-c FILE] [--url URL] [--timeout DURATION]`. argv[0] is a
 * name and is skipped (pass the argv that starts at the word "health");
 * -c FILE is accepted and ignored, since the caller read the config to
 * build default_url. --url and --timeout also take the form --url=URL.
 * DURATION is seconds (decimals allowed) or a number with ms/s/m, for the
 * whole exchange.
 *
 * URL is http://HOST[:PORT][/PATH], HOST an IPv4 literal, [IPv6] or
 * localhost. Sends `GET PATH HTTP/1.0` and judges the answer strictly: a
 * whole status line `HTTP/1.x 200 ...` ending in CRLF, a whole head, and
 * the whole body its Content-Length announces (or every byte up to the
 * server's close without one). Returns 0 for that, printing nothing.
 * Otherwise reports exactly one event through log (level error; bad usage
 * or URL, connection refused, timed out after N, a malformed or cut
 * answer, HTTP 503 with the body's "status" and "output") and returns 1.
 * It never returns anything else: Docker reserves 2. */
int pi_health_probe_main(int argc, char **argv, const char *default_url, pi_health_log_cb *log,
			 void *log_data);

/* Builds the URL that reaches a listener: "http://127.0.0.1:8081/health"
 * from listen "127.0.0.1:8081" and path "/health". A wildcard listen
 * (0.0.0.0, [::]) is reached on loopback (127.0.0.1, [::1]); IPv6 is
 * bracketed. Returns 0, -EINVAL for a bad listen or a path not starting
 * with '/', or -ENAMETOOLONG when out (outlen bytes) is too small. */
int pi_health_url(const char *listen, const char *path, char *out, size_t outlen);

#endif
