/* The health listener (SPEC §6): a libuv TCP server on the supervisor's
 * loop that answers GET/HEAD on the health path from a pi_health_view.
 *
 * Behaviour, in short: HTTP/1.1 keep-alive and pipelining (answered in
 * order), HTTP/1.0 (closed unless keep-alive is asked for); `path` answers
 * application/health+json with pass/warn (200) or fail (503); `path/live`
 * answers 200 while a child runs, else 503; other paths 404, other methods
 * 405, malformed 400, a head over 8 KiB 431 (both then close). A request
 * with a body is answered and the connection then closed. A connection is
 * closed when its first request head is not whole 2 s after accept, or a
 * later one 10 s after the previous head or its response (not reset by
 * each byte), or with a response it does not read for that long. At most
 * 256 connections (fewer when RLIMIT_NOFILE leaves fewer descriptors
 * beyond o->fd_reserve once the listener is up): a further one closes the
 * oldest idle connection (no request in progress; one that never sent a
 * request first), or when none is idle is accepted and closed at once;
 * both logged once a minute. After a closing response that leaves input
 * unread (a body, pipelined bytes, a malformed head), or part of it not
 * yet acknowledged by the client, the server half-closes and drains what
 * the client still sends for up to 2 s, so the client reads the answer
 * instead of a reset. Each connection's send buffer is capped (64 KiB
 * SO_SNDBUF): while the socket does not take the answers, nothing more is
 * answered or read. A connection cut (a deadline, a stop) with output
 * still queued is reset, so the kernel does not keep it as an orphan.
 *
 * The nginx probe: when `probe` is set, a /health request needs a TCP
 * connect to it no older than 1 s. With an older result the request waits
 * for a fresh connect (timeout 1 s); at most one connect is in flight, and
 * every request waiting for it is answered when it ends, so a flood of
 * requests makes at most one connect per second.
 *
 * The /health answer is rendered once and sent for each request while its
 * inputs stay the same: every request first compares every field it shows
 * and the probe result with what it was rendered from, so any change shows
 * on the very next answer (health/report.h). It grows to whatever the view
 * needs: every valid state fits.
 *
 * Responses go straight to the socket when it takes them whole (uv_write
 * only for what it does not), every complete request of one read in one
 * writev, from where the answers live (the cached report, fixed answers):
 * nothing is copied per request. After a closing response with nothing
 * left unread and all of it acknowledged the connection is closed at once,
 * as nginx does.
 *
 * Memory: an idle connection holds one small struct (its first 256 input
 * bytes included; a longer head moves to an 8 KiB buffer); closed structs
 * are kept for reuse (up to 32). The report grows with the view. Nothing
 * blocks the loop.
 *
 * Events the caller may want in its log (accept errors, running out of
 * memory) go to the log callback in the options; everything else is a
 * return value. */
#ifndef PI_HEALTH_SERVER_H
#define PI_HEALTH_SERVER_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "health/log.h"
#include "health/status.h"

struct pi_health_server;

struct pi_health_server_opts {
	const char *listen;  /* "HOST:PORT" or "[IPv6]:PORT"; port 0 picks one */
	const char *path;    /* "/health"; must start with '/' */
	const char *probe;   /* "HOST:PORT" nginx listens on, or "" for none */
	const char *version; /* reported as "version" */
	const struct pi_health_view *view;
	/* Descriptors the caller keeps free for itself: the connection limit
	 * is lowered below PI_HEALTH_MAX_CONNS when RLIMIT_NOFILE leaves fewer
	 * than that beyond these, so the limit comes before EMFILE. */
	int fd_reserve;
	pi_health_log_cb *log; /* NULL: nothing is logged */
	void *log_data;	       /* passed to log */
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

#endif
