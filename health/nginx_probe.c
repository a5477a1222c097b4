/* The nginx probe: when the server has one, a /health request needs a TCP
 * connect to nginx no older than NP_MAX_AGE_MS. A request that finds the
 * result older than NP_REFRESH_MS starts a new connect and is answered from
 * the result it has, as long as that is within NP_MAX_AGE_MS: under a steady
 * stream of requests the result is renewed before it expires, and no request
 * waits for it. Only with no result, or one older than NP_MAX_AGE_MS, does
 * a request wait for a connect (timeout NP_TIMEOUT_MS). At most one connect
 * is in flight, and every request waiting for it is answered when it ends,
 * so a flood of requests makes at most one connect per NP_REFRESH_MS. */
#include "health/server_impl.h"

#define NP_TIMEOUT_MS 1000 /* nginx must accept a connect within this */
#define NP_MAX_AGE_MS 1000 /* a result older than this is never used */
#define NP_REFRESH_MS 500  /* a result older than this is renewed ahead of need */

static void np_start(struct pi_health_server *s);

static uint64_t np_age(const struct pi_health_server *s)
{
	return uv_now(s->loop) - s->probe_at;
}

int pi_health_probe_stale(const struct pi_health_server *s)
{
	return s->has_probe && (!s->probe_have || np_age(s) >= NP_MAX_AGE_MS);
}

void pi_health_probe_refresh(struct pi_health_server *s)
{
	if (s->has_probe && (!s->probe_have || np_age(s) >= NP_REFRESH_MS))
		np_start(s);
}

/* Answers every request waiting for the probe. A request processed here
 * that finds the result stale again waits on s->waiters, not on the batch
 * being walked, so this always ends. */
static void np_wake_waiters(struct pi_health_server *s)
{
	struct pi_health_ring batch;

	if (pi_health_ring_empty(&s->waiters))
		return;
	batch.next = s->waiters.next;
	batch.prev = s->waiters.prev;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	pi_health_ring_init(&s->waiters);
	while (!pi_health_ring_empty(&batch)) {
		struct pi_health_conn *c =
		    PI_HEALTH_RING_ENTRY(batch.next, struct pi_health_conn, wait);
		pi_health_ring_del(&c->wait);
		pi_health_conn_process(c);
	}
}

static void np_on_closed(uv_handle_t *h)
{
	struct pi_health_server *s = h->data;

	s->probe_state = PI_PROBE_IDLE;
	/* Requests that came while the handle closed and found the result
	 * stale (the loop was busy for over a second) need a new probe. */
	if (!s->stopped && !pi_health_ring_empty(&s->waiters)) {
		if (pi_health_probe_stale(s))
			np_start(s);
		if (!pi_health_probe_stale(s))
			np_wake_waiters(s);
	}
	pi_health_srv_unref(s);
}

static void np_finish(struct pi_health_server *s, int result)
{
	s->probe_result = result;
	s->probe_have = 1;
	s->probe_at = uv_now(s->loop);
	uv_timer_stop(&s->probe_timer);
	s->probe_state = PI_PROBE_CLOSING;
	uv_close((uv_handle_t *)&s->probe_tcp, np_on_closed);
}

static void np_on_connect(uv_connect_t *req, int status)
{
	struct pi_health_server *s = req->data;

	if (s->probe_state != PI_PROBE_CONNECTING)
		return; /* timed out or stopped: the result is already known */
	np_finish(s, status);
	np_wake_waiters(s);
}

static void np_on_timeout(uv_timer_t *t)
{
	struct pi_health_server *s = t->data;

	if (s->probe_state != PI_PROBE_CONNECTING)
		return;
	np_finish(s, UV_ETIMEDOUT);
	np_wake_waiters(s);
}

/* Starts a connect unless one is in flight. When it cannot even start,
 * the result is known at once. */
static void np_start(struct pi_health_server *s)
{
	int r;

	if (s->probe_state != PI_PROBE_IDLE || s->stopped)
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
	s->probe_state = PI_PROBE_CONNECTING;
	r = uv_tcp_connect(&s->probe_req, &s->probe_tcp, (const struct sockaddr *)&s->probe_addr,
			   np_on_connect);
	if (r < 0) {
		np_finish(s, r);
		return;
	}
	uv_timer_start(&s->probe_timer, np_on_timeout, NP_TIMEOUT_MS, 0);
}

void pi_health_probe_stop(struct pi_health_server *s)
{
	if (s->probe_state != PI_PROBE_CONNECTING)
		return;
	s->probe_state = PI_PROBE_CLOSING;
	uv_close((uv_handle_t *)&s->probe_tcp, np_on_closed);
}
