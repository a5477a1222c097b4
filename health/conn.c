/* One connection of the health listener: reads request heads, answers
 * every complete one in order (pipelining), writes the answers straight
 * from where they live (the cached report, the fixed answers) and closes
 * or keeps the connection. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "health/server_impl.h"

/* Output that the socket did not take at once, written by uv_write. */
struct pi_health_pending {
	uv_write_t req;
	struct pi_health_conn *c;
	char data[];
};

static void conn_on_closed(uv_handle_t *h)
{
	struct pi_health_conn *c = h->data;

	if (c->in != c->small)
		free(c->in);
	c->in = c->small;
	pi_health_srv_release(c->srv, c);
}

void pi_health_conn_close(struct pi_health_conn *c)
{
	if (c->state == PI_CONN_CLOSED)
		return;
	c->state = PI_CONN_CLOSED;
	c->srv->nconns--; /* uv_close closes the descriptor at once */
	pi_health_ring_del(&c->timed);
	pi_health_ring_del(&c->wait);
	uv_close((uv_handle_t *)&c->tcp, conn_on_closed);
}

/* Whether the kernel still holds output the client has not acknowledged.
 * Closing then, any byte the client sends afterwards (a stray CRLF, which
 * HTTP allows after a request) would make the kernel reset the connection
 * and drop that output. */
static int conn_unacked(struct pi_health_conn *c)
{
	uv_os_fd_t fd;
	int n = 0;

	return uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, TIOCOUTQ, &n) == 0 && n > 0;
}

void pi_health_conn_cut(struct pi_health_conn *c)
{
	static const struct linger reset = {1, 0};
	uv_os_fd_t fd;

	/* Closed the ordinary way, a socket whose client does not read stays
	 * in the kernel as an orphan holding its unsent output for minutes;
	 * with SO_LINGER 0 the close resets the connection and drops it.
	 * (uv_tcp_close_reset refuses a socket that is shutting down.) */
	if (c->state != PI_CONN_CLOSED && (c->pending || conn_unacked(c)) &&
	    uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	pi_health_conn_close(c);
}

/* The input buffer moves from `small` to PI_HTTP_HEAD_MAX bytes only when
 * a head does not fit. */
static int conn_grow_input(struct pi_health_conn *c)
{
	char *big;

	if (c->in != c->small)
		return 0;
	if (!(big = malloc(PI_HTTP_HEAD_MAX)))
		return -ENOMEM;
	memcpy(big, c->small, c->in_len);
	c->in = big;
	c->in_cap = PI_HTTP_HEAD_MAX;
	return 0;
}

static void conn_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct pi_health_conn *c = h->data;

	(void)hint;
	/* While lingering, what arrives is thrown away. */
	if (c->state == PI_CONN_LINGER)
		c->in_len = 0;
	if (c->in_len == c->in_cap && conn_grow_input(c) < 0) {
		*buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: closed */
		return;
	}
	*buf = uv_buf_init(c->in + c->in_len, c->in_cap - c->in_len);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

/* Reads only while there is room and a use for the bytes, so a client that
 * pipelines without reading answers is held by TCP flow control. */
static void conn_update_read(struct pi_health_conn *c)
{
	int want = c->state == PI_CONN_LINGER || (c->state == PI_CONN_OPEN && !c->last && !c->eof &&
						  c->in_len < PI_HTTP_HEAD_MAX);

	if (want == c->reading)
		return;
	if (want && uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) < 0) {
		pi_health_conn_close(c);
		return;
	}
	if (!want)
		uv_read_stop((uv_stream_t *)&c->tcp);
	c->reading = (uint8_t)want;
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
	if (status < 0)
		pi_health_conn_close(req->data);
}

/* The closing response is out. With nothing left unread and all of it
 * acknowledged it closes at once, as nginx does; otherwise it half-closes
 * and drains for a while, so the client reads the answer instead of a
 * reset. */
static void conn_finish(struct pi_health_conn *c)
{
	if (c->eof || (!c->linger && !conn_unacked(c)) ||
	    uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, conn_on_shutdown) < 0) {
		pi_health_conn_close(c);
		return;
	}
	c->state = PI_CONN_LINGER;
	pi_health_srv_deadline(c->srv, c, PI_HEALTH_LINGER_MS);
	conn_update_read(c);
}

/* Everything queued is out. Returns 1 when the connection may answer
 * more requests. */
static int conn_written(struct pi_health_conn *c)
{
	if (c->last) {
		conn_finish(c);
		return 0;
	}
	pi_health_srv_deadline(c->srv, c, PI_HEALTH_IDLE_MS);
	return 1;
}

static void conn_on_written(uv_write_t *req, int status)
{
	struct pi_health_pending *p = req->data;
	struct pi_health_conn *c = p->c;

	free(p);
	c->pending = NULL;
	if (status < 0 || c->state != PI_CONN_OPEN) {
		pi_health_conn_close(c);
		return;
	}
	if (conn_written(c))
		pi_health_conn_process(c);
}

/* Copies what the socket did not take (the batch after its first `sent`
 * bytes) and hands it to uv_write. */
static int conn_write_rest(struct pi_health_conn *c, size_t sent)
{
	struct pi_health_server *s = c->srv;
	struct pi_health_pending *p = malloc(sizeof(*p) + s->batch_bytes - sent);
	size_t len = 0;
	uv_buf_t b;

	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < s->n_batch; i++) {
		size_t n = s->batch[i].len, skip = sent < n ? sent : n;
		memcpy(p->data + len, s->batch[i].base + skip, n - skip);
		len += n - skip;
		sent -= skip;
	}
	p->c = c;
	p->req.data = p;
	b = uv_buf_init(p->data, (unsigned)len);
	if (uv_write(&p->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_written) < 0) {
		free(p);
		return -EIO;
	}
	c->pending = p;
	return 0;
}

/* Writes the gathered answers: straight to the socket when it takes them
 * all, which costs libuv no write request, poll change or loop turn.
 * Always empties the batch. Returns 1 when everything went out at once and
 * the connection may answer more requests. */
static int conn_flush(struct pi_health_conn *c)
{
	struct pi_health_server *s = c->srv;
	size_t bytes = s->batch_bytes, nbufs = s->n_batch;
	int n = 0;

	s->n_batch = s->batch_bytes = 0;
	if (nbufs == 0 || c->state != PI_CONN_OPEN)
		return 0;
	/* Nagle only delays a second write; the first needs no syscall. */
	if (c->nodelay == 1 && uv_tcp_nodelay(&c->tcp, 1) == 0)
		c->nodelay = 2;
	n = uv_try_write((uv_stream_t *)&c->tcp, s->batch, (unsigned)nbufs);
	if (c->nodelay == 0)
		c->nodelay = 1;
	if (n == UV_EAGAIN)
		n = 0;
	if (n >= 0 && (size_t)n == bytes)
		return conn_written(c);
	s->n_batch = nbufs; /* conn_write_rest reads it */
	s->batch_bytes = bytes;
	if (n < 0 || conn_write_rest(c, (size_t)n) < 0)
		pi_health_conn_close(c);
	s->n_batch = s->batch_bytes = 0;
	return 0;
}

static void conn_batch(struct pi_health_server *s, const char *p, size_t n)
{
	s->batch[s->n_batch++] = uv_buf_init((char *)p, (unsigned)n);
	s->batch_bytes += n;
}

static void conn_add_answer(struct pi_health_conn *c, const struct pi_health_answer *a,
			    int head_only, int keep_alive)
{
	static const char ka[] = PI_HEALTH_KEEP_ALIVE, cl[] = "close\r\n\r\n";
	struct pi_health_server *s = c->srv;

	if (keep_alive && !head_only && a->keep_alive) {
		conn_batch(s, a->keep_alive, a->keep_alive_len);
		return;
	}
	conn_batch(s, a->head, a->head_len);
	conn_batch(s, keep_alive ? ka : cl, keep_alive ? sizeof(ka) - 1 : sizeof(cl) - 1);
	if (!head_only && a->body_len)
		conn_batch(s, a->body, a->body_len);
}

/* Whether the unparsed input may hold a whole head: an empty line, or a
 * bare LF the parser will reject. Scanning only new bytes keeps a client
 * that sends a head byte by byte from costing a parse per byte. */
static int conn_head_ready(struct pi_health_conn *c)
{
	for (size_t i = c->scanned; i < c->in_len; i++) {
		if (c->in[i] != '\n')
			continue;
		if (i == 0 || c->in[i - 1] != '\r' ||
		    (i >= 3 && memcmp(c->in + i - 3, "\r\n\r\n", 4) == 0)) {
			c->scanned = (uint32_t)i + 1;
			return 1;
		}
	}
	c->scanned = c->in_len;
	return 0;
}

/* The /health answer, or 0 when the request must wait: for the probe
 * (c is then on s->waiters), or for the batch to go out before the
 * report it points into is rendered again. */
static int conn_health_answer(struct pi_health_conn *c, struct pi_health_answer *a)
{
	struct pi_health_server *s = c->srv;

	pi_health_probe_refresh(s);
	if (pi_health_probe_stale(s)) {
		c->scanned = 0; /* so the head is found again on wake-up */
		pi_health_ring_push(&s->waiters, &c->wait);
		return 0;
	}
	if (!pi_health_report_fresh(&s->report, s->probe_result)) {
		if (s->n_batch) {
			c->scanned = 0; /* answered after the flush, from the start */
			return 0;
		}
		if (pi_health_report_render(&s->report, s->probe_result) < 0 && !s->oom_logged) {
			s->oom_logged = 1;
			pi_health_srv_log(s, PI_HEALTH_LOG_ERROR, "health report: out of memory",
					  NULL, NULL);
		}
	}
	a->head = s->report.head;
	a->head_len = s->report.head_len;
	a->body = s->report.body;
	a->body_len = s->report.body_len;
	a->keep_alive = s->report.keep_alive;
	a->keep_alive_len = s->report.keep_alive_len;
	return 1;
}

/* Parses the next request and gathers its answer. Returns 1 when another
 * request may follow, 0 to stop for now. */
static int conn_answer_one(struct pi_health_conn *c)
{
	struct pi_health_server *s = c->srv;
	struct pi_http_request req;
	struct pi_health_answer a;
	int full = c->in_len == PI_HTTP_HEAD_MAX;
	int n = (conn_head_ready(c) || full) ? pi_http_parse_request(c->in, c->in_len, &req) : -2;

	if (n == -2 && !full)
		return 0;
	if (n < 0) {
		pi_health_error_answer(s, n == -2 ? 431 : 400, &a);
		conn_add_answer(c, &a, 0, 0);
		c->last = c->linger = 1;
		return 0;
	}
	if (!c->served) {
		/* The short deadline of a first head is over: now the idle one. */
		c->served = 1;
		pi_health_srv_deadline(s, c, PI_HEALTH_IDLE_MS);
	}
	enum pi_health_route rt = pi_health_route(s, &req);
	if (rt != PI_ROUTE_HEALTH)
		pi_health_fixed_answer(s, rt, &a);
	else if (!conn_health_answer(c, &a))
		return 0;
	int keep = req.keep_alive && !req.has_body;
	conn_add_answer(c, &a, req.method.len == 4 && memcmp(req.method.p, "HEAD", 4) == 0, keep);
	c->in_len -= (uint32_t)n;
	memmove(c->in, c->in + n, c->in_len);
	c->scanned = 0;
	if (!keep) {
		c->last = 1;
		c->linger = req.has_body || c->in_len > 0;
	}
	return !keep ? 0 : 1;
}

/* Gathers, in order, the answers to the complete requests in the input
 * until one must wait or the batch is full: of pieces, or of bytes, since
 * what the socket does not take is copied (48 large reports would be
 * megabytes per connection). */
static void conn_answer(struct pi_health_conn *c)
{
	while (c->state == PI_CONN_OPEN && !c->pending && !c->last &&
	       pi_health_ring_empty(&c->wait) && c->in_len > 0 &&
	       c->srv->n_batch + 3 <= PI_HEALTH_BATCH_IOVS &&
	       c->srv->batch_bytes < PI_HEALTH_SNDBUF && conn_answer_one(c))
		;
}

void pi_health_conn_process(struct pi_health_conn *c)
{
	do
		conn_answer(c);
	while (conn_flush(c));
	if (c->state == PI_CONN_OPEN && c->eof && !c->pending && pi_health_ring_empty(&c->wait))
		pi_health_conn_close(c);
	else if (c->state != PI_CONN_CLOSED)
		conn_update_read(c);
}

static void conn_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
	struct pi_health_conn *c = st->data;

	(void)buf; /* always c->in + c->in_len, from conn_on_alloc */
	if (nread == 0)
		return;
	if (c->state != PI_CONN_OPEN || (nread < 0 && nread != UV_EOF)) {
		if (nread < 0)
			pi_health_conn_close(c);
		return;
	}
	if (nread == UV_EOF) {
		c->eof = 1;
		conn_update_read(c);
	} else {
		c->in_len += (uint32_t)nread;
	}
	pi_health_conn_process(c);
}

int pi_health_conn_open(struct pi_health_server *s, struct pi_health_conn *c)
{
	int r = uv_tcp_init(s->loop, &c->tcp);

	if (r < 0)
		return r;
	c->srv = s;
	c->tcp.data = c->sreq.data = c;
	c->pending = NULL;
	c->in = c->small;
	c->in_cap = sizeof(c->small);
	c->in_len = c->scanned = 0;
	c->state = PI_CONN_OPEN;
	c->reading = c->last = c->eof = c->nodelay = c->linger = c->served = 0;
	pi_health_ring_init(&c->timed);
	pi_health_ring_init(&c->wait);
	return 0;
}

void pi_health_conn_start(struct pi_health_conn *c)
{
	int sndbuf = PI_HEALTH_SNDBUF;
	uv_os_fd_t fd;

	/* Left to itself the kernel grows the send buffer of a client that
	 * pipelines without reading to tcp_wmem's maximum (4 MiB); capped, the
	 * socket stops taking answers early, a batch it did not take waits in
	 * `pending`, and nothing more is read or answered until it is out. */
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	pi_health_srv_deadline(c->srv, c, PI_HEALTH_FIRST_MS);
	conn_update_read(c);
}

int pi_health_conn_idle(const struct pi_health_conn *c)
{
	return c->state == PI_CONN_OPEN && c->in_len == 0 && !c->pending && !c->last &&
	       pi_health_ring_empty(&c->wait);
}
