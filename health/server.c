/* The health listener: start, stop, accepting under the connection limit,
 * and the one timer that cuts idle and lingering connections. */
#include "health/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "health/addr.h"
#include "health/server_impl.h"

#define SRV_BACKLOG   128
#define SRV_SPARE_MAX 32    /* closed connection structs kept for reuse */
#define SRV_FD_SCAN   65536 /* descriptors checked for being free, at most */

void pi_health_ring_init(struct pi_health_ring *r)
{
	r->prev = r->next = r;
}

int pi_health_ring_empty(const struct pi_health_ring *r)
{
	return r->next == r;
}

void pi_health_ring_push(struct pi_health_ring *head, struct pi_health_ring *r)
{
	r->prev = head->prev;
	r->next = head;
	head->prev->next = r;
	head->prev = r;
}

void pi_health_ring_del(struct pi_health_ring *r)
{
	r->prev->next = r->next;
	r->next->prev = r->prev;
	pi_health_ring_init(r);
}

static struct pi_health_conn *srv_conn_of(struct pi_health_ring *r)
{
	return PI_HEALTH_RING_ENTRY(r, struct pi_health_conn, timed);
}

void pi_health_srv_log(struct pi_health_server *s, int level, const char *msg, const char *key,
		       const char *value)
{
	const char *fields[] = {key, value, NULL};

	if (s->log)
		s->log(s->log_data, level, msg, key ? fields : fields + 2);
}

static void srv_free(struct pi_health_server *s)
{
	while (!pi_health_ring_empty(&s->spare)) {
		struct pi_health_conn *c = srv_conn_of(s->spare.next);
		pi_health_ring_del(&c->timed);
		free(c);
	}
	pi_health_report_free(&s->report);
	free(s);
}

void pi_health_srv_unref(struct pi_health_server *s)
{
	if (--s->handles == 0 && s->stopped)
		srv_free(s);
}

static void srv_on_handle_closed(uv_handle_t *h)
{
	pi_health_srv_unref(h->data);
}

/* ---- deadlines: the lists are in deadline order, since every deadline
 * on one list is "now + the same delay" when set ---- */

static void srv_on_conn_timer(uv_timer_t *t);

static void srv_arm(struct pi_health_server *s, uint64_t due)
{
	uint64_t now = uv_now(s->loop);

	if (s->timer_due && s->timer_due <= due)
		return;
	s->timer_due = due;
	uv_timer_start(&s->conn_timer, srv_on_conn_timer, due > now ? due - now : 0, 0);
}

static struct pi_health_ring *srv_list_of(struct pi_health_server *s, struct pi_health_conn *c)
{
	if (c->state == PI_CONN_LINGER)
		return &s->lingering;
	return c->served ? &s->open : &s->fresh;
}

void pi_health_srv_deadline(struct pi_health_server *s, struct pi_health_conn *c, uint64_t ms)
{
	pi_health_ring_del(&c->timed);
	c->deadline = uv_now(s->loop) + ms;
	pi_health_ring_push(srv_list_of(s, c), &c->timed);
	srv_arm(s, c->deadline);
}

/* Closes the connections at the front of l whose deadline has passed;
 * returns the next deadline on l, or 0. */
static uint64_t srv_expire(struct pi_health_ring *l, uint64_t now)
{
	while (!pi_health_ring_empty(l)) {
		struct pi_health_conn *c = srv_conn_of(l->next);
		if (c->deadline > now)
			return c->deadline;
		pi_health_conn_cut(c);
	}
	return 0;
}

static void srv_on_conn_timer(uv_timer_t *t)
{
	struct pi_health_server *s = t->data;
	uint64_t now = uv_now(s->loop), next = 0;
	uint64_t due[] = {srv_expire(&s->fresh, now), srv_expire(&s->open, now),
			  srv_expire(&s->lingering, now)};

	s->timer_due = 0;
	for (size_t i = 0; i < sizeof(due) / sizeof(due[0]); i++)
		if (due[i] && (!next || due[i] < next))
			next = due[i];
	if (next)
		srv_arm(s, next);
}

/* Logs msg at most once a minute; *at holds when it last did. */
static void srv_log_rarely(struct pi_health_server *s, uint64_t *at, const char *msg,
			   const char *key, const char *value)
{
	uint64_t now = uv_now(s->loop);

	if (*at != 0 && now - *at < 60000)
		return;
	*at = now ? now : 1;
	pi_health_srv_log(s, PI_HEALTH_LOG_WARN, msg, key, value);
}

/* ---- accepting ---- */

static void srv_accept_next(struct pi_health_server *s);
static void srv_on_connection(uv_stream_t *listener, int status);

void pi_health_srv_release(struct pi_health_server *s, struct pi_health_conn *c)
{
	if (s->nspare < SRV_SPARE_MAX && !s->stopped) {
		pi_health_ring_push(&s->spare, &c->timed);
		s->nspare++;
	} else {
		free(c);
	}
	if (s->accept_pending && !s->stopped)
		srv_accept_next(s);
	pi_health_srv_unref(s);
}

/* uv_accept; when it fails libuv leaves the listener paused, so listen
 * again to resume it (listen(2) on a listening socket only resets the
 * backlog). */
static int srv_take_accepted(struct pi_health_server *s, uv_tcp_t *t)
{
	int r = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)t);

	if (r < 0)
		uv_listen((uv_stream_t *)&s->listener, SRV_BACKLOG, srv_on_connection);
	return r;
}

static struct pi_health_conn *srv_new_conn(struct pi_health_server *s)
{
	struct pi_health_conn *c;

	if (pi_health_ring_empty(&s->spare))
		return malloc(sizeof(*c));
	c = srv_conn_of(s->spare.next);
	pi_health_ring_del(&c->timed);
	s->nspare--;
	return c;
}

static int srv_conn_accept(struct pi_health_server *s)
{
	struct pi_health_conn *c = srv_new_conn(s);

	if (!c)
		return -ENOMEM;
	if (pi_health_conn_open(s, c) < 0) {
		free(c); /* uv_tcp_init does not fail on Linux; no handle is open here */
		return -ENOMEM;
	}
	s->nconns++;
	s->handles++;
	if (srv_take_accepted(s, &c->tcp) < 0) {
		pi_health_conn_close(c);
		return 0;
	}
	pi_health_conn_start(c);
	return 0;
}

static void srv_on_reject_closed(uv_handle_t *h)
{
	struct pi_health_server *s = h->data;

	s->reject_busy[(uv_tcp_t *)h - s->rejects] = 0;
	if (s->accept_pending && !s->stopped)
		srv_accept_next(s);
	pi_health_srv_unref(s);
}

/* The oldest idle connection of l, or NULL. */
static struct pi_health_conn *srv_oldest_idle(struct pi_health_ring *l)
{
	for (struct pi_health_ring *r = l->next; r != l; r = r->next)
		if (pi_health_conn_idle(srv_conn_of(r)))
			return srv_conn_of(r);
	return NULL;
}

/* At the limit, room for a new connection: the oldest idle one is cut,
 * preferring one that never sent a request, so that idle clients cannot
 * lock the health check out. 1 when one was cut. */
static int srv_make_room(struct pi_health_server *s)
{
	struct pi_health_conn *c = srv_oldest_idle(&s->fresh);
	char limit[16];

	if (!c)
		c = srv_oldest_idle(&s->open);
	snprintf(limit, sizeof(limit), "%d", s->max_conns);
	if (!c) {
		srv_log_rarely(s, &s->refuse_logged_at,
			       "health connection limit reached, none idle: refused a connection",
			       "limit", limit);
		return 0;
	}
	srv_log_rarely(s, &s->evict_logged_at,
		       "health connection limit reached: closed the oldest idle connection",
		       "limit", limit);
	pi_health_conn_cut(c);
	return 1;
}

/* Takes the connection libuv holds: as a connection while under the limit
 * or when an idle one makes room, else accepted into a reject handle and
 * closed. With every reject handle still closing, it stays pending: libuv
 * stops watching the listener until a close callback accepts it. */
static void srv_accept_next(struct pi_health_server *s)
{
	s->accept_pending = 0;
	if ((s->nconns < s->max_conns || srv_make_room(s)) && srv_conn_accept(s) == 0)
		return;
	for (size_t i = 0; i < sizeof(s->rejects) / sizeof(s->rejects[0]); i++) {
		if (s->reject_busy[i])
			continue;
		uv_tcp_t *t = &s->rejects[i];
		if (uv_tcp_init(s->loop, t) < 0)
			break;
		t->data = s;
		s->reject_busy[i] = 1;
		s->handles++;
		srv_take_accepted(s, t);
		uv_close((uv_handle_t *)t, srv_on_reject_closed);
		return;
	}
	s->accept_pending = 1;
}

static void srv_on_connection(uv_stream_t *listener, int status)
{
	struct pi_health_server *s = listener->data;

	if (status < 0) {
		/* EMFILE and the like repeat for every connection. */
		srv_log_rarely(s, &s->accept_error_at, "health listener cannot accept", "error",
			       uv_strerror(status));
		return;
	}
	srv_accept_next(s);
}

/* ---- start and stop ---- */

/* How many connections the descriptors allow: those RLIMIT_NOFILE leaves
 * free now, less the reserve, at most PI_HEALTH_MAX_CONNS and at least 1.
 * Run out of descriptors, libuv 1.50 never reports EMFILE: it accepts and
 * closes each connection with a spare one, silently; our limit comes first
 * and is logged. Counted with F_GETFD, which opens nothing (a concurrent
 * lookup must not meet a descriptor taken for the count). */
static int srv_fd_limit(int reserve)
{
	long want = PI_HEALTH_MAX_CONNS + (long)reserve, room = 0, end;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= (rlim_t)SRV_FD_SCAN + want)
		return PI_HEALTH_MAX_CONNS;
	end = (long)rl.rlim_cur;
	for (long fd = 0; fd < end && room < want; fd++)
		room += fcntl((int)fd, F_GETFD) < 0 && errno == EBADF;
	room -= reserve;
	return room < 1 ? 1 : room > PI_HEALTH_MAX_CONNS ? PI_HEALTH_MAX_CONNS : (int)room;
}

__attribute__((format(printf, 4, 5))) static int srv_fail(char *err, size_t errlen, int code,
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

static int srv_copy(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

/* Checks and copies the options into a new server (not yet listening). */
static int srv_configure(const struct pi_health_server_opts *o, struct pi_health_server **out,
			 char *err, size_t errlen)
{
	const char *probe = o->probe ? o->probe : "";
	struct pi_health_server *s;

	if (!o->view)
		return srv_fail(err, errlen, -EINVAL, "health server: no view");
	if (!o->path || o->path[0] != '/')
		return srv_fail(err, errlen, -EINVAL, "health.path must start with /");
	if (!(s = calloc(1, sizeof(*s))))
		return srv_fail(err, errlen, -ENOMEM, "health server: out of memory");
	*out = s;
	if (srv_copy(s->path, sizeof(s->path), o->path) < 0 ||
	    srv_copy(s->probe, sizeof(s->probe), probe) < 0 ||
	    srv_copy(s->version, sizeof(s->version), o->version ? o->version : "") < 0)
		return srv_fail(err, errlen, -ENAMETOOLONG,
				"health.path, probe or version too long");
	if (probe[0] && pi_health_parse_addr(probe, &s->probe_addr) < 0)
		return srv_fail(err, errlen, -EINVAL,
				"health.probe %s: not HOST:PORT or [IPv6]:PORT", probe);
	s->has_probe = probe[0] != '\0';
	/* "/health" and "/health/" both give "/health/live". */
	size_t plen = strlen(s->path);
	if (plen > 0 && s->path[plen - 1] == '/')
		plen--;
	snprintf(s->live, sizeof(s->live), "%.*s/live", (int)plen, s->path);
	s->view = o->view;
	s->log = o->log;
	s->log_data = o->log_data;
	pi_health_ring_init(&s->fresh);
	pi_health_ring_init(&s->open);
	pi_health_ring_init(&s->lingering);
	pi_health_ring_init(&s->waiters);
	pi_health_ring_init(&s->spare);
	pi_health_report_init(&s->report, s->view, s->version, s->probe);
	pi_health_fixed_init(s);
	return 0;
}

int pi_health_server_start(uv_loop_t *loop, const struct pi_health_server_opts *o,
			   struct pi_health_server **out, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct pi_health_server *s = NULL;
	int r;

	if (pi_health_parse_addr(o->listen, &ss) < 0)
		return srv_fail(err, errlen, -EINVAL,
				"health.listen %s: not HOST:PORT or [IPv6]:PORT",
				o->listen ? o->listen : "(null)");
	if ((r = srv_configure(o, &s, err, errlen)) < 0) {
		free(s);
		return r;
	}
	s->loop = loop;
	if ((r = uv_tcp_init(loop, &s->listener)) < 0) {
		free(s);
		return srv_fail(err, errlen, r, "health listener: %s", uv_strerror(r));
	}
	s->listener.data = s;
	s->handles = 1;
	r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&ss, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, SRV_BACKLOG, srv_on_connection);
	if (r < 0) {
		/* Freed by the close callback when the loop next runs. */
		s->stopped = 1;
		uv_close((uv_handle_t *)&s->listener, srv_on_handle_closed);
		return srv_fail(err, errlen, r, "health.listen %s: %s", o->listen, uv_strerror(r));
	}
	uv_timer_init(loop, &s->probe_timer);
	uv_timer_init(loop, &s->conn_timer);
	s->probe_timer.data = s->conn_timer.data = s;
	s->handles += 2;
	if ((s->max_conns = srv_fd_limit(o->fd_reserve > 0 ? o->fd_reserve : 0)) <
	    PI_HEALTH_MAX_CONNS) {
		char limit[16];
		snprintf(limit, sizeof(limit), "%d", s->max_conns);
		pi_health_srv_log(s, PI_HEALTH_LOG_WARN,
				  "health connection limit lowered to fit RLIMIT_NOFILE", "limit",
				  limit);
	}
	pi_health_srv_log(s, PI_HEALTH_LOG_DEBUG, "health endpoint listening", "listen", o->listen);
	*out = s;
	return 0;
}

int pi_health_server_port(const struct pi_health_server *s)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	int r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);

	return r < 0 ? r : pi_health_addr_port(&ss);
}

void pi_health_server_stop(struct pi_health_server *s)
{
	s->stopped = 1;
	while (!pi_health_ring_empty(&s->fresh))
		pi_health_conn_cut(srv_conn_of(s->fresh.next));
	while (!pi_health_ring_empty(&s->open))
		pi_health_conn_cut(srv_conn_of(s->open.next));
	while (!pi_health_ring_empty(&s->lingering))
		pi_health_conn_cut(srv_conn_of(s->lingering.next));
	pi_health_probe_stop(s);
	uv_close((uv_handle_t *)&s->conn_timer, srv_on_handle_closed);
	uv_close((uv_handle_t *)&s->probe_timer, srv_on_handle_closed);
	uv_close((uv_handle_t *)&s->listener, srv_on_handle_closed);
}
