/* What the files of the health listener share (internal to health/):
 *
 *   server.c       the listener: start, stop, accept, the connection limit,
 *                  the one timer that cuts idle and lingering connections
 *   conn.c         one connection: read, parse, answer, write, close
 *   route.c        which answer a request gets, and the fixed answers
 *   nginx_probe.c  the TCP connect to nginx behind /health's nginx:listen
 *   report.c       the /health document and its cache (report.h)
 *
 * Everything runs on one libuv loop: no locking anywhere. */
#ifndef PI_HEALTH_SERVER_IMPL_H
#define PI_HEALTH_SERVER_IMPL_H

#include <stdint.h>
#include <uv.h>

#include "health/http.h"
#include "health/log.h"
#include "health/report.h"
#include "health/server.h"

#define PI_HEALTH_FIRST_MS 2000 /* to send the first request head, from accept */
#define PI_HEALTH_IDLE_MS                                                                          \
	10000 /* to complete a request head, from the previous one or its response */
#define PI_HEALTH_LINGER_MS  2000 /* draining after a closing response */
#define PI_HEALTH_MAX_CONNS  256
#define PI_HEALTH_SNDBUF     (64 << 10) /* SO_SNDBUF of a connection (the kernel doubles it) */
#define PI_HEALTH_IN_SMALL   256	/* input bytes held in the connection itself */
#define PI_HEALTH_BATCH_IOVS 48		/* output pieces gathered before one write */

/* A circular doubly-linked list, as libuv's queue: O(1) removal from
 * whichever list a connection is on when it closes. */
struct pi_health_ring {
	struct pi_health_ring *prev, *next;
};

#define PI_HEALTH_RING_ENTRY(r, type, member) ((type *)(void *)((char *)(r)-offsetof(type, member)))

void pi_health_ring_init(struct pi_health_ring *r);
int pi_health_ring_empty(const struct pi_health_ring *r);
void pi_health_ring_push(struct pi_health_ring *head, struct pi_health_ring *r);
/* Safe on a node that is on no list (linked to itself). */
void pi_health_ring_del(struct pi_health_ring *r);

enum pi_health_conn_state { PI_CONN_OPEN, PI_CONN_LINGER, PI_CONN_CLOSED };
enum pi_health_probe_state { PI_PROBE_IDLE, PI_PROBE_CONNECTING, PI_PROBE_CLOSING };

/* One accepted connection. Idle ones cost sizeof(struct pi_health_conn):
 * the input starts in `small` and moves to an 8 KiB buffer only when a
 * head does not fit; output is written from the answers themselves, and
 * copied (into `pending`) only when the socket does not take it whole. */
struct pi_health_conn {
	uv_tcp_t tcp;
	uv_shutdown_t sreq;
	struct pi_health_server *srv;
	struct pi_health_ring timed;	   /* on srv->fresh, open or lingering, by deadline */
	struct pi_health_ring wait;	   /* on srv->waiters while a request waits for the probe */
	uint64_t deadline;		   /* loop time when the connection is cut */
	struct pi_health_pending *pending; /* output being written by uv_write */
	char *in;			   /* small, or an 8 KiB allocation */
	uint32_t in_len, in_cap, scanned;
	uint8_t state, reading, last, eof, nodelay;
	uint8_t linger; /* the closing response leaves input unread: drain */
	uint8_t served; /* a whole request head came: on srv->open, not srv->fresh */
	char small[PI_HEALTH_IN_SMALL];
};

/* A response, written as up to three pieces that it does not own. */
struct pi_health_answer {
	const char *head; /* status line and headers up to "Connection: " */
	size_t head_len;
	const char *body;
	size_t body_len;
	const char *keep_alive; /* NULL, or the whole answer with "keep-alive" in one piece */
	size_t keep_alive_len;
};

struct pi_health_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_timer_t conn_timer; /* the earliest deadline of the three deadline lists */
	uint64_t timer_due;    /* 0 while conn_timer is stopped */
	uv_timer_t probe_timer;
	uv_tcp_t probe_tcp;
	uv_connect_t probe_req;
	uv_tcp_t rejects[8]; /* connections over the limit, closed at once */
	unsigned char reject_busy[8];
	int accept_pending; /* libuv holds an accepted fd and pauses the listener */
	const struct pi_health_view *view;
	pi_health_log_cb *log;
	void *log_data;
	/* Deadline lists: connections yet to send a whole head (fresh), the
	 * others (open), those draining after a closing answer (lingering). */
	struct pi_health_ring fresh, open, lingering, waiters, spare;
	int nconns;    /* connections not closing: their descriptors are open */
	int max_conns; /* PI_HEALTH_MAX_CONNS, or what RLIMIT_NOFILE leaves */
	int nspare;
	int handles; /* open handles and connections; freed at 0 once stopped */
	int stopped, oom_logged;
	int has_probe, probe_state, probe_have, probe_result;
	uint64_t probe_at;
	uint64_t accept_error_at, evict_logged_at, refuse_logged_at; /* once a minute */
	struct sockaddr_storage probe_addr;
	char path[256], live[262], probe[64], version[64];
	struct pi_health_report report;
	/* The answers that never change: head (to "Connection: ") and body. */
	struct pi_health_fixed {
		char head[192];
		size_t head_len;
		const char *body;
	} fixed[6];
	/* Output of the connection being answered, gathered for one write. */
	uv_buf_t batch[PI_HEALTH_BATCH_IOVS];
	size_t n_batch, batch_bytes;
};

/* server.c */
void pi_health_srv_unref(struct pi_health_server *s);
void pi_health_srv_log(struct pi_health_server *s, int level, const char *msg, const char *key,
		       const char *value);
/* Puts c on its deadline list (fresh, open or lingering) at `ms` from now. */
void pi_health_srv_deadline(struct pi_health_server *s, struct pi_health_conn *c, uint64_t ms);
/* A closed connection's struct: kept for the next accept, or freed. */
void pi_health_srv_release(struct pi_health_server *s, struct pi_health_conn *c);

/* conn.c */
/* Sets c up on an accepted-to-be handle; 0 or a negative libuv error. */
int pi_health_conn_open(struct pi_health_server *s, struct pi_health_conn *c);
/* Starts reading once libuv accepted the connection into c->tcp. */
void pi_health_conn_start(struct pi_health_conn *c);
/* Answers what the input holds and writes it. */
void pi_health_conn_process(struct pi_health_conn *c);
void pi_health_conn_close(struct pi_health_conn *c);
/* Closes c as a cut (a deadline, the limit, a stop): with a reset when
 * output is still queued, so the kernel drops it at once. */
void pi_health_conn_cut(struct pi_health_conn *c);
/* 1 when c is open with nothing in progress: no partial head, no request
 * waiting, no output queued. */
int pi_health_conn_idle(const struct pi_health_conn *c);

/* route.c */
enum pi_health_route { PI_ROUTE_HEALTH, PI_ROUTE_LIVE, PI_ROUTE_NOT_FOUND, PI_ROUTE_METHOD };
/* Formats the fixed answers into s->fixed. */
void pi_health_fixed_init(struct pi_health_server *s);
enum pi_health_route pi_health_route(const struct pi_health_server *s,
				     const struct pi_http_request *req);
/* The fixed answer of a route other than PI_ROUTE_HEALTH. */
void pi_health_fixed_answer(const struct pi_health_server *s, enum pi_health_route rt,
			    struct pi_health_answer *a);
/* The answer to a malformed request (400) or an over-long head (431). */
void pi_health_error_answer(const struct pi_health_server *s, int status,
			    struct pi_health_answer *a);

/* nginx_probe.c */
/* 1 when /health must wait for a fresh connect to nginx. */
int pi_health_probe_stale(const struct pi_health_server *s);
/* Starts a connect when the result is due for renewal (or absent) and none
 * is in flight; the result in hand may still be fresh enough to answer. */
void pi_health_probe_refresh(struct pi_health_server *s);
/* Closes the probe's handle if a connect is in flight (at stop). */
void pi_health_probe_stop(struct pi_health_server *s);

#endif
