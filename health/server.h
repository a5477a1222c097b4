/* The health listener (SPEC §6): a libuv TCP server on the supervisor's
 * loop that answers GET/HEAD on the health path from a pi_health_view.
 *
 * Behaviour, in short: HTTP/1.1 keep-alive and pipelining (answered in
 * order), HTTP/1.0 (closed unless keep-alive is asked for); `path` answers
 * application/health+json with pass/warn (200) or fail (503); `path/live`
 * answers 200 while a child runs, else 503; other paths 404, other methods
 * 405, malformed 400, a head over 8 KiB 431 (both then close). A request
 * with a body is answered and the connection then closed. A connection is
 * closed after 10 s without completing a request head (counted from accept
 * or from the previous response, not reset by each byte) or with a response
 * it does not read. At most 256 connections; further ones are accepted and
 * closed at once. After a closing response the server half-closes and
 * drains what the client still sends for up to 2 s, so the client reads the
 * answer instead of a reset.
 *
 * The nginx probe: when `probe` is set, a /health request needs a TCP
 * connect to it no older than 1 s. With an older result the request waits
 * for a fresh connect (timeout 1 s); at most one connect is in flight, and
 * every request waiting for it is answered when it ends, so a flood of
 * requests makes at most one connect per second.
 *
 * The /health answer is rendered once and copied for each request while
 * its inputs stay the same: every request first compares the view's fields
 * and the probe result with the ones it was rendered from, so any change
 * shows on the very next answer.
 *
 * Responses go straight to the socket when it takes them whole (uv_write
 * only for what it does not), every complete request of one read in one
 * write.
 *
 * Memory: one allocation per accepted connection (its 8 KiB input and
 * 16 KiB output buffers), a copy of the upstream entries when their number
 * grows, none per request. Nothing blocks the loop. */
#ifndef PI_HEALTH_SERVER_H
#define PI_HEALTH_SERVER_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "health/status.h"

struct pi_health_server;

struct pi_health_server_opts {
	const char *listen;  /* "HOST:PORT" or "[IPv6]:PORT"; port 0 picks one */
	const char *path;    /* "/health"; must start with '/' */
	const char *probe;   /* "HOST:PORT" nginx listens on, or "" for none */
	const char *version; /* reported as "version" */
	const struct pi_health_view *view;
};

/* Binds and listens on o->listen. The strings in o are copied; o->view is
 * read on every request and must outlive the server.
 *
 * Returns 0 with *out set, or a negative errno (-EINVAL for a bad address,
 * path or probe, -ENAMETOOLONG for an over-long option, the bind or listen
 * error) with a one-line reason in err (errlen bytes, NUL-terminated) and
 * *out untouched. After a bind or listen failure the half-made listener is
 * closing: its memory is freed when the loop next runs. */
int pi_health_server_start(uv_loop_t *loop, const struct pi_health_server_opts *o,
			   struct pi_health_server **out, char *err, size_t errlen);

/* The port the listener is bound to (useful after port 0), or a negative
 * errno. */
int pi_health_server_port(const struct pi_health_server *s);

/* Closes the listener, the probe and every connection. Memory is freed from
 * close callbacks, so run the loop afterwards until it drains. Call once;
 * s must not be used afterwards. */
void pi_health_server_stop(struct pi_health_server *s);

/* Parses "A.B.C.D:PORT", "[IPv6]:PORT" or "localhost:PORT" (127.0.0.1)
 * into *ss. IP literals only: no name lookup, so it never blocks. PORT is
 * decimal 0-65535. Returns 0 or -EINVAL. */
int pi_health_parse_addr(const char *s, struct sockaddr_storage *ss);

#endif
