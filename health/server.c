#include "health/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "health/http.h"
#include "init/log.h"

#define IDLE_TIMEOUT_MS	 10000 /* to complete a request head, from accept or the last response */
#define PROBE_TIMEOUT_MS 1000  /* nginx must accept a connect within this */
#define PROBE_MAX_AGE_MS 1000  /* a probe result older than this is refreshed */
#define LINGER_MS	 2000  /* draining after a closing response */
#define MAX_CONNS	 256
#define N_REJECTS	 8 /* handles for connections over MAX_CONNS, closed at once */
#define OUT_MAX		 16384
#define HEAD_MAX	 256
#define BODY_MAX	 (OUT_MAX - 512) /* leaves room for the response head */
#define BACKLOG		 128

/* A circular doubly-linked list, as libuv's queue: O(1) removal from
 * whichever list a connection is on when it closes. */
struct ring {
	struct ring *prev, *next;
};

#define RING_ENTRY(r, type, member) ((type *)(void *)((char *)(r)-offsetof(type, member)))

static void ring_init(struct ring *r)
{
	r->prev = r->next = r;
}

static int ring_empty(const struct ring *r)
{
	return r->next == r;
}

static void ring_push(struct ring *head, struct ring *r)
{
	r->prev = head->prev;
	r->next = head;
	head->prev->next = r;
	head->prev = r;
}

/* Safe on a node that is on no list (linked to itself). */
static void ring_del(struct ring *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
	ring_init(r);
}

enum { P_IDLE, P_CONNECTING, P_CLOSING };
enum { C_OPEN, C_LINGER, C_CLOSED };
enum { L_PASS, L_WARN, L_FAIL };
enum route { R_HEALTH, R_LIVE, R_NOT_FOUND, R_METHOD };

struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	struct pi_health_server *srv;
	struct ring all;  /* on srv->conns until closed */
	struct ring wait; /* on srv->waiters while a request waits for the probe */
	int handles;	  /* open handles; the struct is freed when it reaches 0 */
	int state;
	int reading, writing;
	int last; /* the closing response is queued: parse nothing more */
	int eof;  /* the client sent FIN: answer what is buffered, then close */
	/* While open, the connection is cut at this loop time. The timer is
	 * not restarted per response: when it fires early it re-arms for the
	 * rest, so keep-alive traffic does not reorder the timer heap. */
	uint64_t deadline;
	size_t in_len, scanned, out_len;
	char in[PI_HTTP_HEAD_MAX];
	char out[OUT_MAX]; /* responses; owned by the kernel while writing */
};

struct pi_health_server {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_timer_t probe_timer;
	uv_tcp_t probe_tcp;
	uv_connect_t probe_req;
	uv_tcp_t rejects[N_REJECTS];
	unsigned char reject_busy[N_REJECTS];
	int accept_pending; /* libuv holds an accepted fd and pauses the listener */
	const struct pi_health_view *view;
	struct ring conns, waiters;
	int nconns;
	int handles; /* open handles and connections; freed at 0 once stopped */
	int stopped;
	int has_probe, probe_state, probe_have, probe_result;
	uint64_t probe_at, accept_error_at;
	struct sockaddr_storage probe_addr;
	int overflow_logged;
	char path[256], live[262], probe[64], version[64];
	/* The /health answer as last rendered (head up to "Connection: ", and
	 * body), and the inputs it was rendered from: the view's fields, its
	 * upstreams (cache_ups, cache_cap entries allocated) and the probe
	 * result. Every request compares them before copying the answer. */
	int cache_ok, cache_probe;
	struct pi_health_view cache_view;
	struct pi_health_upstream *cache_ups;
	size_t cache_cap, head_len, body_len;
	char head[HEAD_MAX];
	char body[BODY_MAX];
};

static void conn_process(struct conn *c);
static void accept_next(struct pi_health_server *s);

static void srv_unref(struct pi_health_server *s)
{
	if (--s->handles == 0 && s->stopped) {
		free(s->cache_ups);
		free(s);
	}
}

static void on_srv_handle_closed(uv_handle_t *h)
{
	srv_unref(h->data);
}

/* ---- JSON output ---- */

struct jbuf {
	char *p;
	size_t cap, len;
	int full; /* something did not fit: the whole body is discarded */
};

static void jput(struct jbuf *j, const char *s, size_t n)
{
	if (j->full || n > j->cap - j->len) {
		j->full = 1;
		return;
	}
	memcpy(j->p + j->len, s, n);
	j->len += n;
}

static void jputs(struct jbuf *j, const char *s)
{
	jput(j, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void jputf(struct jbuf *j, const char *fmt, ...)
{
	va_list ap;
	size_t room = j->cap - j->len;

	if (j->full)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(j->p + j->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room)
		j->full = 1;
	else
		j->len += (size_t)n;
}

/* String contents: quote, backslash, control bytes and every byte above
 * 0x7E are escaped, so the body is ASCII whatever the strings hold. */
static void jesc(struct jbuf *j, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			char e[2] = {'\\', (char)ch};
			jput(j, e, 2);
		} else if (ch < 0x20 || ch > 0x7e) {
			jputf(j, "\\u%04x", ch);
		} else {
			jput(j, (const char *)&ch, 1);
		}
	}
}

static void jstr(struct jbuf *j, const char *s, size_t n)
{
	jput(j, "\"", 1);
	jesc(j, s, n);
	jput(j, "\"", 1);
}

static void jtime(struct jbuf *j, time_t t)
{
	struct tm tm;
	char ts[32];

	if (t == 0 || !gmtime_r(&t, &tm) || !strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return;
	jputs(j, ",\"time\":\"");
	jputs(j, ts);
	jputs(j, "\"");
}

/* ---- the health report ---- */

static const char *const level_names[] = {"pass", "warn", "fail"};

/* The supervisor fills var and host before it starts the server; a NULL
 * still must not take PID 1 down. */
static const char *str(const char *s)
{
	return s ? s : "";
}

static int probe_failed(const struct pi_health_server *s)
{
	return s->has_probe && s->probe_result != 0;
}

static const char *probe_error(const struct pi_health_server *s)
{
	return s->probe_result == UV_ETIMEDOUT ? "timed out after 1s"
					       : uv_strerror(s->probe_result);
}

/* Note one reason; with why == NULL only the level is wanted. */
static void reason(struct jbuf *why, int *n, const char *a, size_t alen, const char *b)
{
	if (!why)
		return;
	if ((*n)++)
		jputs(why, "; ");
	jesc(why, a, alen);
	jesc(why, b, strlen(b));
}

/* The overall level, the worst of the checks. With why set, appends the
 * reasons (escaped, no quotes) for the top-level "output". */
static int assess(const struct pi_health_server *s, struct jbuf *why)
{
	const struct pi_health_view *v = s->view;
	int level = L_PASS, n = 0;

	if (v->stopping) {
		level = L_FAIL;
		reason(why, &n, "stopping", 8, "");
	}
	if (v->child_pid == 0) {
		level = L_FAIL;
		reason(why, &n, "nginx is not running", 20, "");
	}
	if (probe_failed(s)) {
		level = L_FAIL;
		reason(why, &n, "nginx:listen ", 13, probe_error(s));
	}
	for (size_t i = 0; i < v->n_upstreams; i++) {
		const struct pi_health_upstream *u = &v->upstreams[i];
		if (u->resolved)
			continue;
		if (level < L_WARN)
			level = L_WARN;
		reason(why, &n, str(u->var), strlen(str(u->var)), " does not resolve");
	}
	if (!v->reload_ok) {
		if (level < L_WARN)
			level = L_WARN;
		reason(why, &n, "config reload rejected", 22, "");
	}
	return level;
}

static void check_open(struct jbuf *j, const char *prefix, const char *name, int ok_level,
		       int first)
{
	jputs(j, first ? "\"" : ",\"");
	jputs(j, prefix);
	jesc(j, name, strlen(name));
	jputs(j, "\":[{\"status\":\"");
	jputs(j, level_names[ok_level]);
	jputs(j, "\"");
}

static void check_output(struct jbuf *j, const char *text, size_t n)
{
	jputs(j, ",\"output\":");
	jstr(j, text, n);
}

static void upstream_check(struct jbuf *j, const struct pi_health_upstream *u)
{
	size_t n_addrs = u->n_addrs < PI_HEALTH_MAX_ADDRS ? u->n_addrs : PI_HEALTH_MAX_ADDRS;

	check_open(j, "upstream:", str(u->var), u->resolved ? L_PASS : L_WARN, 0);
	jputs(j, ",\"componentId\":");
	jstr(j, str(u->host), strlen(str(u->host)));
	jputs(j, ",\"observedValue\":[");
	for (size_t k = 0; k < n_addrs; k++) {
		if (k)
			jputs(j, ",");
		jstr(j, u->addrs[k], strnlen(u->addrs[k], sizeof(u->addrs[k])));
	}
	jputs(j, "]");
	jtime(j, u->checked);
	if (!u->resolved) {
		size_t elen = strnlen(u->error, sizeof(u->error));
		if (elen)
			check_output(j, u->error, elen);
		else
			check_output(j, "not resolved yet", 16);
	}
	jputs(j, "}]");
}

/* Renders the /health body into j; returns the HTTP status. */
static int health_body(struct pi_health_server *s, struct jbuf *j)
{
	const struct pi_health_view *v = s->view;
	int level = assess(s, NULL);

	jputs(j, "{\"status\":\"");
	jputs(j, level_names[level]);
	jputs(j, "\",\"version\":");
	jstr(j, s->version, strlen(s->version));
	if (level != L_PASS) {
		jputs(j, ",\"output\":\"");
		assess(s, j);
		jputs(j, "\"");
	}
	jputs(j, ",\"checks\":{");

	check_open(j, "nginx:process", "", v->child_pid ? L_PASS : L_FAIL, 1);
	if (v->child_pid)
		jputf(j, ",\"observedValue\":%ld", (long)v->child_pid);
	else
		check_output(j, "not running", 11);
	jputs(j, "}]");

	if (s->has_probe) {
		check_open(j, "nginx:listen", "", probe_failed(s) ? L_FAIL : L_PASS, 0);
		jputs(j, ",\"componentId\":");
		jstr(j, s->probe, strlen(s->probe));
		if (probe_failed(s))
			check_output(j, probe_error(s), strlen(probe_error(s)));
		jputs(j, "}]");
	}

	for (size_t i = 0; i < v->n_upstreams; i++)
		upstream_check(j, &v->upstreams[i]);

	check_open(j, "config:reload", "", v->reload_ok ? L_PASS : L_WARN, 0);
	jtime(j, v->reload_time);
	if (!v->reload_ok)
		check_output(j, v->reload_error, strnlen(v->reload_error, sizeof(v->reload_error)));
	jputs(j, "}]}}\n");

	if (j->full) {
		/* Only a configuration with very many upstreams gets here; say so
		 * rather than send a cut-off document. */
		if (!s->overflow_logged)
			PI_LOG(PI_ERROR, "health report too large", PI_INT("limit", BODY_MAX));
		s->overflow_logged = 1;
		j->full = 0;
		j->len = 0;
		jputf(j, "{\"status\":\"fail\",\"output\":\"health report over %d bytes\"}\n",
		      BODY_MAX);
		return 500;
	}
	return level == L_FAIL ? 503 : 200;
}

/* ---- responses ---- */

static const char *status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Internal Server Error";
	}
}

struct response {
	const char *head; /* status line and headers up to "Connection: " */
	size_t head_len;
	const char *body;
	size_t body_len;
	int head_only, keep_alive;
};

/* Formats a response head up to "Connection: ", whose value depends on the
 * request, into p (room bytes). Returns its length or -ENOBUFS. */
static int format_head(char *p, size_t room, int status, const char *type, const char *extra,
		       size_t body_len)
{
	int n = snprintf(p, room,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Cache-Control: no-store\r\n%sConnection: ",
			 status, status_text(status), type, body_len, extra);

	return n < 0 || (size_t)n >= room ? -ENOBUFS : n;
}

/* Appends one response to c->out; -ENOBUFS when it does not fit behind
 * the responses already there. */
static int append_response(struct conn *c, const struct response *r)
{
	static const char ka[] = "keep-alive\r\n\r\n", cl[] = "close\r\n\r\n";
	const char *conn = r->keep_alive ? ka : cl;
	size_t conn_len = r->keep_alive ? sizeof(ka) - 1 : sizeof(cl) - 1;
	size_t body = r->head_only ? 0 : r->body_len;
	char *p = c->out + c->out_len;

	if (r->head_len + conn_len + body > sizeof(c->out) - c->out_len)
		return -ENOBUFS;
	memcpy(p, r->head, r->head_len);
	memcpy(p + r->head_len, conn, conn_len);
	if (body)
		memcpy(p + r->head_len + conn_len, r->body, body);
	c->out_len += r->head_len + conn_len + body;
	return 0;
}

/* Appends r under a head formatted for its body. */
static int append_formatted(struct conn *c, struct response *r, int status, const char *type,
			    const char *extra)
{
	char head[HEAD_MAX];
	int n = format_head(head, sizeof(head), status, type, extra, r->body_len);

	if (n < 0)
		return n;
	r->head = head;
	r->head_len = (size_t)n;
	return append_response(c, r);
}

static int append_text(struct conn *c, struct response *r, int status, const char *text,
		       const char *extra)
{
	r->body = text;
	r->body_len = strlen(text);
	return append_formatted(c, r, status, "text/plain; charset=utf-8", extra);
}

static int respond_error(struct conn *c, int status)
{
	struct response r = {0};

	return append_text(c, &r, status,
			   status == 431 ? "request head too large\n" : "malformed request\n", "");
}

static int span_eq(struct pi_http_span sp, const char *s)
{
	return sp.len == strlen(s) && memcmp(sp.p, s, sp.len) == 0;
}

static enum route route(const struct pi_health_server *s, const struct pi_http_request *req)
{
	struct pi_http_span p = pi_http_target_path(req->target);
	int health = span_eq(p, s->path);

	if (!health && !span_eq(p, s->live))
		return R_NOT_FOUND;
	if (!span_eq(req->method, "GET") && !span_eq(req->method, "HEAD"))
		return R_METHOD;
	return health ? R_HEALTH : R_LIVE;
}

/* ---- the cached /health answer ---- */

/* var and host are compared by pointer: the supervisor sets them once. The
 * other strings are compared up to their NUL, as they are rendered. */
static int upstream_same(const struct pi_health_upstream *a, const struct pi_health_upstream *b)
{
	if (strcmp(a->var, b->var) != 0 || strcmp(a->host, b->host) != 0 || a->resolved != b->resolved ||
	    a->checked != b->checked || a->n_addrs != b->n_addrs ||
	    strncmp(a->error, b->error, sizeof(a->error)) != 0)
		return 0;
	for (size_t k = 0; k < a->n_addrs && k < PI_HEALTH_MAX_ADDRS; k++)
		if (strncmp(a->addrs[k], b->addrs[k], sizeof(a->addrs[k])) != 0)
			return 0;
	return 1;
}

/* Whether the cached answer was rendered from what the view and the probe
 * say now. Checked on every request, so a change shows on the next one. */
static int cache_fresh(const struct pi_health_server *s)
{
	const struct pi_health_view *v = s->view, *c = &s->cache_view;

	if (!s->cache_ok || v->child_pid != c->child_pid || v->stopping != c->stopping ||
	    v->reload_ok != c->reload_ok || v->reload_time != c->reload_time ||
	    v->n_upstreams != c->n_upstreams || s->probe_result != s->cache_probe ||
	    strncmp(v->reload_error, c->reload_error, sizeof(v->reload_error)) != 0)
		return 0;
	for (size_t i = 0; i < v->n_upstreams; i++)
		if (!upstream_same(&v->upstreams[i], &s->cache_ups[i]))
			return 0;
	return 1;
}

/* Notes the inputs of the answer just rendered and marks it valid.
 * Without memory for the upstreams it stays invalid, and every request
 * renders afresh. */
static void cache_store(struct pi_health_server *s)
{
	const struct pi_health_view *v = s->view;

	if (v->n_upstreams > s->cache_cap) {
		struct pi_health_upstream *u =
		    realloc(s->cache_ups, v->n_upstreams * sizeof(*s->cache_ups));
		if (!u)
			return;
		s->cache_ups = u;
		s->cache_cap = v->n_upstreams;
	}
	s->cache_view = *v;
	if (v->n_upstreams)
		memcpy(s->cache_ups, v->upstreams, v->n_upstreams * sizeof(*s->cache_ups));
	s->cache_probe = s->probe_result;
	s->cache_ok = 1;
}

/* Points r at the /health answer, rendering it again if its inputs
 * changed. Returns 0 or -ENOBUFS (a head over HEAD_MAX, which no status
 * and body length make). */
static int health_answer(struct pi_health_server *s, struct response *r)
{
	if (!cache_fresh(s)) {
		struct jbuf j = {s->body, sizeof(s->body), 0, 0};
		int status = health_body(s, &j);
		int n = format_head(s->head, sizeof(s->head), status, "application/health+json", "",
				    j.len);

		s->cache_ok = 0;
		if (n < 0)
			return n;
		s->head_len = (size_t)n;
		s->body_len = j.len;
		cache_store(s);
	}
	r->head = s->head;
	r->head_len = s->head_len;
	r->body = s->body;
	r->body_len = s->body_len;
	return 0;
}

static int respond(struct conn *c, const struct pi_http_request *req, enum route rt)
{
	struct pi_health_server *s = c->srv;
	struct response r = {0};

	r.head_only = span_eq(req->method, "HEAD");
	r.keep_alive = req->keep_alive && !req->has_body;
	switch (rt) {
	case R_HEALTH:
		return health_answer(s, &r) < 0 ? -ENOBUFS : append_response(c, &r);
	case R_LIVE:
		r.body = s->view->child_pid ? "{\"status\":\"pass\"}\n" : "{\"status\":\"fail\"}\n";
		r.body_len = strlen(r.body);
		return append_formatted(c, &r, s->view->child_pid ? 200 : 503,
					"application/health+json", "");
	case R_NOT_FOUND:
		return append_text(c, &r, 404, "not found\n", "");
	case R_METHOD:
		return append_text(c, &r, 405, "method not allowed\n", "Allow: GET, HEAD\r\n");
	}
	return -EINVAL;
}

/* ---- the nginx probe ---- */

static int probe_stale(const struct pi_health_server *s)
{
	return s->has_probe &&
	       (!s->probe_have || uv_now(s->loop) - s->probe_at >= PROBE_MAX_AGE_MS);
}

/* Answers every request waiting for the probe. A request processed here
 * that finds the result stale again waits on s->waiters, not on the batch
 * being walked, so this always ends. */
static void wake_waiters(struct pi_health_server *s)
{
	struct ring batch;

	if (ring_empty(&s->waiters))
		return;
	batch.next = s->waiters.next;
	batch.prev = s->waiters.prev;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	ring_init(&s->waiters);
	while (!ring_empty(&batch)) {
		struct conn *c = RING_ENTRY(batch.next, struct conn, wait);
		ring_del(&c->wait);
		conn_process(c);
	}
}

static void probe_start(struct pi_health_server *s);

static void on_probe_closed(uv_handle_t *h)
{
	struct pi_health_server *s = h->data;

	s->probe_state = P_IDLE;
	/* Requests that came while the handle closed and found the result
	 * stale (the loop was busy for over a second) need a new probe. */
	if (!s->stopped && !ring_empty(&s->waiters)) {
		if (probe_stale(s))
			probe_start(s);
		if (!probe_stale(s))
			wake_waiters(s);
	}
	srv_unref(s);
}

static void probe_finish(struct pi_health_server *s, int result)
{
	s->probe_result = result;
	s->probe_have = 1;
	s->probe_at = uv_now(s->loop);
	uv_timer_stop(&s->probe_timer);
	s->probe_state = P_CLOSING;
	uv_close((uv_handle_t *)&s->probe_tcp, on_probe_closed);
}

static void on_probe_connect(uv_connect_t *req, int status)
{
	struct pi_health_server *s = req->data;

	if (s->probe_state != P_CONNECTING)
		return; /* timed out or stopped: the result is already known */
	probe_finish(s, status);
	wake_waiters(s);
}

static void on_probe_timeout(uv_timer_t *t)
{
	struct pi_health_server *s = t->data;

	if (s->probe_state != P_CONNECTING)
		return;
	probe_finish(s, UV_ETIMEDOUT);
	wake_waiters(s);
}

/* Starts a connect unless one is in flight or its handle is closing. When
 * the connect cannot even start, the result is known at once. */
static void probe_start(struct pi_health_server *s)
{
	int r;

	if (s->probe_state != P_IDLE || s->stopped)
		return;
	if ((r = uv_tcp_init(s->loop, &s->probe_tcp)) < 0) {
		s->probe_result = r;
		s->probe_have = 1;
		s->probe_at = uv_now(s->loop);
		return;
	}
	s->handles++;
	s->probe_tcp.data = s;
	s->probe_req.data = s;
	s->probe_state = P_CONNECTING;
	r = uv_tcp_connect(&s->probe_req, &s->probe_tcp, (const struct sockaddr *)&s->probe_addr,
			   on_probe_connect);
	if (r < 0) {
		probe_finish(s, r);
		return;
	}
	uv_timer_start(&s->probe_timer, on_probe_timeout, PROBE_TIMEOUT_MS, 0);
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct pi_health_server *s = c->srv;

	if (--c->handles > 0)
		return;
	free(c);
	s->nconns--;
	if (s->accept_pending && !s->stopped)
		accept_next(s);
	srv_unref(s);
}

static void conn_close(struct conn *c)
{
	if (c->state == C_CLOSED)
		return;
	c->state = C_CLOSED;
	ring_del(&c->all);
	ring_del(&c->wait);
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_conn_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	uint64_t now = uv_now(t->loop);

	if (c->state == C_OPEN && now < c->deadline) {
		uv_timer_start(t, on_conn_timeout, c->deadline - now, 0);
		return;
	}
	conn_close(c);
}

/* Starts the idle count again: from accept or from a response written. */
static void conn_idle_from_now(struct conn *c)
{
	c->deadline = uv_now(c->srv->loop) + IDLE_TIMEOUT_MS;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct conn *c = h->data;

	(void)hint;
	/* While lingering, what arrives is thrown away. */
	if (c->state == C_LINGER)
		c->in_len = 0;
	*buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Reads only while there is room and a use for the bytes, so a client that
 * pipelines without reading answers is held by TCP flow control. */
static void conn_update_read(struct conn *c)
{
	int want = c->state == C_LINGER ||
		   (c->state == C_OPEN && !c->last && !c->eof && c->in_len < sizeof(c->in));

	if (want == c->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
		conn_close(c);
		return;
	}
	if (!want)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = want;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	if (status < 0)
		conn_close(req->data);
}

/* After the closing response is written: half-close, then drain for a
 * while, so the client reads the answer before it sees the connection go. */
static void conn_linger(struct conn *c)
{
	if (c->eof || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
		conn_close(c);
		return;
	}
	c->state = C_LINGER;
	uv_timer_start(&c->timer, on_conn_timeout, LINGER_MS, 0);
	conn_update_read(c);
}

/* The queued responses are out. Returns 1 when the connection may answer
 * more requests. */
static int conn_written(struct conn *c)
{
	c->out_len = 0;
	if (c->last) {
		conn_linger(c);
		return 0;
	}
	conn_idle_from_now(c);
	return 1;
}

static void on_written(uv_write_t *req, int status)
{
	struct conn *c = req->data;

	c->writing = 0;
	if (status < 0 || c->state != C_OPEN) {
		conn_close(c);
		return;
	}
	if (conn_written(c))
		conn_process(c);
}

/* Writes the queued responses: straight to the socket when it takes them
 * all, which costs libuv no write request, poll change or extra loop turn;
 * what it does not take goes through uv_write. Returns 1 when everything
 * went out at once and the connection may answer more requests. */
static int conn_flush(struct conn *c)
{
	uv_buf_t b;
	int n;

	if (c->writing || c->out_len == 0 || c->state != C_OPEN)
		return 0;
	b = uv_buf_init(c->out, (unsigned)c->out_len);
	n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n == UV_EAGAIN)
		n = 0;
	if (n < 0) {
		conn_close(c);
		return 0;
	}
	if ((size_t)n == c->out_len)
		return conn_written(c);
	/* c->out stays untouched while writing: nothing is appended then. */
	b = uv_buf_init(c->out + n, (unsigned)(c->out_len - (size_t)n));
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
		conn_close(c);
		return 0;
	}
	c->writing = 1;
	return 0;
}

/* Whether the unparsed input may hold a whole head: an empty line, or a
 * bare LF the parser will reject. Scanning only new bytes keeps a client
 * that sends a head byte by byte from costing a parse per byte. */
static int head_ready(struct conn *c)
{
	for (size_t i = c->scanned; i < c->in_len; i++) {
		if (c->in[i] != '\n')
			continue;
		if (i == 0 || c->in[i - 1] != '\r' ||
		    (i >= 3 && memcmp(c->in + i - 3, "\r\n\r\n", 4) == 0)) {
			c->scanned = i + 1;
			return 1;
		}
	}
	c->scanned = c->in_len;
	return 0;
}

/* Answers, in order, every complete request in the input into c->out until
 * one must wait (for the probe, or for room in the output). */
static void conn_answer(struct conn *c)
{
	struct pi_health_server *s = c->srv;

	while (c->state == C_OPEN && !c->writing && !c->last && ring_empty(&c->wait) &&
	       c->in_len > 0) {
		struct pi_http_request req;
		int full = c->in_len == sizeof(c->in);
		int n =
		    (head_ready(c) || full) ? pi_http_parse_request(c->in, c->in_len, &req) : -2;

		if (n == -2 && !full)
			break;
		if (n < 0) {
			if (respond_error(c, n == -2 ? 431 : 400) < 0)
				break; /* answered after the queued responses are out */
			c->last = 1;
			break;
		}
		enum route rt = route(s, &req);
		if (rt == R_HEALTH && probe_stale(s)) {
			probe_start(s);
			if (probe_stale(s)) {
				c->scanned = 0; /* so the head is found again on wake-up */
				ring_push(&s->waiters, &c->wait);
				break;
			}
		}
		if (respond(c, &req, rt) < 0)
			break;
		c->in_len -= (size_t)n;
		memmove(c->in, c->in + n, c->in_len);
		c->scanned = 0;
		if (!req.keep_alive || req.has_body)
			c->last = 1;
	}
}

/* Answers what the input holds and writes it, again while the socket takes
 * every answer at once and requests remain. */
static void conn_process(struct conn *c)
{
	do
		conn_answer(c);
	while (conn_flush(c));
	if (c->state == C_OPEN && c->eof && !c->writing && ring_empty(&c->wait))
		conn_close(c);
	else if (c->state != C_CLOSED)
		conn_update_read(c);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = st->data;

	(void)buf; /* always c->in + c->in_len, from on_alloc */
	if (nread == 0)
		return;
	if (c->state != C_OPEN || (nread < 0 && nread != UV_EOF)) {
		if (nread < 0)
			conn_close(c);
		return;
	}
	if (nread == UV_EOF) {
		c->eof = 1;
		conn_update_read(c);
	} else {
		c->in_len += (size_t)nread;
	}
	conn_process(c);
}

static void on_connection(uv_stream_t *listener, int status);

/* uv_accept; when it fails libuv leaves the listener paused, so listen
 * again to resume it (listen(2) on a listening socket only resets the
 * backlog). */
static int take_accepted(struct pi_health_server *s, uv_tcp_t *t)
{
	int r = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);

	if (r < 0)
		uv_listen((uv_stream_t *)&s->listener, BACKLOG, on_connection);
	return r;
}

static int conn_accept(struct pi_health_server *s)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	if (uv_tcp_init(s->loop, &c->tcp) < 0 || uv_timer_init(s->loop, &c->timer) < 0) {
		free(c); /* neither fails on Linux; no handle is left open here */
		return -ENOMEM;
	}
	c->srv = s;
	c->handles = 2;
	c->tcp.data = c->timer.data = c->wreq.data = c->sreq.data = c;
	ring_init(&c->wait);
	ring_push(&s->conns, &c->all);
	s->nconns++;
	s->handles++;
	if (take_accepted(s, &c->tcp) < 0) {
		conn_close(c);
		return 0;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	conn_idle_from_now(c);
	uv_timer_start(&c->timer, on_conn_timeout, IDLE_TIMEOUT_MS, 0);
	conn_update_read(c);
	return 0;
}

static void on_reject_closed(uv_handle_t *h)
{
	struct pi_health_server *s = h->data;

	s->reject_busy[(uv_tcp_t *)h - s->rejects] = 0;
	if (s->accept_pending && !s->stopped)
		accept_next(s);
	srv_unref(s);
}

/* Takes the connection libuv holds: as a connection while under the limit,
 * else accepted into a reject handle and closed. With every reject handle
 * still closing, it stays pending: libuv stops watching the listener until
 * a close callback accepts it. */
static void accept_next(struct pi_health_server *s)
{
	s->accept_pending = 0;
	if (s->nconns < MAX_CONNS && conn_accept(s) == 0)
		return;
	for (int i = 0; i < N_REJECTS; i++) {
		if (s->reject_busy[i])
			continue;
		uv_tcp_t *t = &s->rejects[i];
		if (uv_tcp_init(s->loop, t) < 0)
			break;
		t->data = s;
		s->reject_busy[i] = 1;
		s->handles++;
		take_accepted(s, t);
		uv_close((uv_handle_t *)t, on_reject_closed);
		return;
	}
	s->accept_pending = 1;
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct pi_health_server *s = listener->data;

	if (status < 0) {
		/* EMFILE and the like repeat for every connection; say it once a minute. */
		uint64_t now = uv_now(s->loop);
		if (s->accept_error_at == 0 || now - s->accept_error_at >= 60000) {
			s->accept_error_at = now ? now : 1;
			PI_LOG(PI_WARN, "health listener cannot accept",
			       PI_STR("error", uv_strerror(status)));
		}
		return;
	}
	accept_next(s);
}

/* ---- start and stop ---- */

int pi_health_parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN];
	const char *h = s, *colon;
	size_t hlen;
	unsigned long port = 0;
	int v6 = 0;

	memset(ss, 0, sizeof(*ss));
	if (!s)
		return -EINVAL;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		v6 = 1;
	} else {
		colon = strchr(s, ':');
		if (!colon || strchr(colon + 1, ':'))
			return -EINVAL;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	const char *p = colon + 1;
	if (*p == '\0' || strlen(p) > 5)
		return -EINVAL;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port > 65535)
		return -EINVAL;
	if (!v6 && strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -EINVAL;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -EINVAL;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
	}
	return 0;
}

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
						      const char *fmt, ...)
{
	va_list ap;

	if (errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

static int copy(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

int pi_health_server_start(uv_loop_t *loop, const struct pi_health_server_opts *o,
			   struct pi_health_server **out, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct pi_health_server *s;
	const char *probe = o->probe ? o->probe : "";
	const char *version = o->version ? o->version : "";
	int r;

	if (pi_health_parse_addr(o->listen, &ss) < 0)
		return fail(err, errlen, -EINVAL, "health.listen %s: not HOST:PORT or [IPv6]:PORT",
			    o->listen ? o->listen : "(null)");
	if (!o->view)
		return fail(err, errlen, -EINVAL, "health server: no view");
	if (!o->path || o->path[0] != '/')
		return fail(err, errlen, -EINVAL, "health.path must start with /");
	if (!(s = calloc(1, sizeof(*s))))
		return fail(err, errlen, -ENOMEM, "health server: out of memory");
	if (copy(s->path, sizeof(s->path), o->path) < 0 ||
	    copy(s->probe, sizeof(s->probe), probe) < 0 ||
	    copy(s->version, sizeof(s->version), version) < 0) {
		free(s);
		return fail(err, errlen, -ENAMETOOLONG, "health.path, probe or version too long");
	}
	/* "/health" and "/health/" both give "/health/live". */
	size_t plen = strlen(s->path);
	if (plen > 0 && s->path[plen - 1] == '/')
		plen--;
	snprintf(s->live, sizeof(s->live), "%.*s/live", (int)plen, s->path);
	if (probe[0]) {
		if (pi_health_parse_addr(probe, &s->probe_addr) < 0) {
			free(s);
			return fail(err, errlen, -EINVAL,
				    "health.probe %s: not HOST:PORT or [IPv6]:PORT", probe);
		}
		s->has_probe = 1;
	}
	s->loop = loop;
	s->view = o->view;
	ring_init(&s->conns);
	ring_init(&s->waiters);

	if ((r = uv_tcp_init(loop, &s->listener)) < 0) {
		free(s);
		return fail(err, errlen, r, "health listener: %s", uv_strerror(r));
	}
	s->listener.data = s;
	s->handles = 1;
	r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, BACKLOG, on_connection);
	if (r < 0) {
		/* Freed by the close callback when the loop next runs. */
		s->stopped = 1;
		uv_close((uv_handle_t *)&s->listener, on_srv_handle_closed);
		return fail(err, errlen, r, "health.listen %s: %s", o->listen, uv_strerror(r));
	}
	uv_timer_init(loop, &s->probe_timer);
	s->probe_timer.data = s;
	s->handles++;
	PI_LOG(PI_DEBUG, "health endpoint listening", PI_STR("listen", o->listen),
	       PI_STR("path", s->path));
	*out = s;
	return 0;
}

int pi_health_server_port(const struct pi_health_server *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	int r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);

	if (r < 0)
		return r;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void pi_health_server_stop(struct pi_health_server *s)
{
	s->stopped = 1;
	while (!ring_empty(&s->conns))
		conn_close(RING_ENTRY(s->conns.next, struct conn, all));
	if (s->probe_state == P_CONNECTING) {
		s->probe_state = P_CLOSING;
		uv_close((uv_handle_t *)&s->probe_tcp, on_probe_closed);
	}
	uv_close((uv_handle_t *)&s->probe_timer, on_srv_handle_closed);
	uv_close((uv_handle_t *)&s->listener, on_srv_handle_closed);
}
