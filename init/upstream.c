#include "init/upstream.h"
#include "init/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

enum mode { M_IDLE, M_WAIT, M_ROUND, M_RECHECK };

struct host {
	struct pi_upstreams *u;
	struct pi_health_upstream *slot;
	uv_work_t req;
	/* Set by the worker thread, read once it is done. */
	int gai;		/* getaddrinfo's result */
	struct addrinfo *res;
	char diag[128]; /* what the nameserver answered, after a failure */
	uv_timer_t retry;
	char name[256]; /* the host without IPv6 brackets */
	int literal;	/* an IP address: counts as resolved, never looked up */
	int busy;	/* a lookup is in flight */
	int logged;	/* its current failure was logged */
	int done;	/* resolved in this wait, or answered in this round */
	uint64_t backoff;
};

struct pi_upstreams {
	uv_loop_t *loop;
	struct host *hosts;
	size_t n;
	void *data;
	enum mode mode;
	pi_upstreams_done_cb done_cb;
	pi_upstreams_change_cb change_cb;
	uv_timer_t deadline; /* end of a wait */
	uv_timer_t every;    /* recheck interval */
	int changed;	     /* some host's set changed in this round */
	int closing;
	size_t refs; /* lookups in flight + handles not yet closed */
};

static void start_lookup(struct host *h);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Collects the unique addresses of res, sorted, so that two lookups that
 * return the same set in another order compare equal. */
static size_t collect(const struct addrinfo *res, char out[][48], size_t max)
{
	size_t n = 0;

	for (const struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
		char buf[48];
		if (ai->ai_family == AF_INET)
			uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, buf, sizeof(buf));
		else if (ai->ai_family == AF_INET6)
			uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, buf, sizeof(buf));
		else
			continue;
		int dup = 0;
		for (size_t i = 0; i < n && !dup; i++)
			dup = strcmp(out[i], buf) == 0;
		if (!dup)
			memcpy(out[n++], buf, sizeof(buf));
	}
	qsort(out, n, sizeof(out[0]), cmp_str);
	return n;
}

static void join(const char addrs[][48], size_t n, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "", addrs[i]);
}

static void maybe_free(struct pi_upstreams *u)
{
	if (u->closing && u->refs == 0) {
		free(u->hosts);
		free(u);
	}
}

static void on_close(uv_handle_t *h)
{
	struct pi_upstreams *u = h->data;
	u->refs--;
	maybe_free(u);
}

static void on_host_close(uv_handle_t *handle)
{
	struct host *h = handle->data;
	struct pi_upstreams *u = h->u;
	u->refs--;
	maybe_free(u);
}

static void finish(struct pi_upstreams *u, int ok)
{
	pi_upstreams_done_cb cb = u->done_cb;

	u->mode = M_IDLE;
	u->done_cb = NULL;
	uv_timer_stop(&u->deadline);
	for (size_t i = 0; i < u->n; i++)
		uv_timer_stop(&u->hosts[i].retry);
	if (cb)
		cb(u, ok, u->data);
}

static void check_round_end(struct pi_upstreams *u)
{
	int all_ok = 1;

	for (size_t i = 0; i < u->n; i++) {
		if (!u->hosts[i].done)
			return;
		all_ok &= u->hosts[i].slot->resolved;
	}
	if (u->mode == M_RECHECK) {
		u->mode = M_IDLE;
		if (u->changed && u->change_cb)
			u->change_cb(u, u->data);
	} else if (u->mode == M_WAIT || u->mode == M_ROUND) {
		finish(u, all_ok);
	}
}

static void on_retry(uv_timer_t *t)
{
	start_lookup(t->data);
}

/* The first nameserver of /etc/resolv.conf; 0 when there is none. */
static int first_nameserver(struct sockaddr_storage *ss, char *text, size_t len)
{
	char line[256], addr[64];
	FILE *f = fopen("/etc/resolv.conf", "re");
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
		if (sscanf(line, " nameserver %63s", addr) != 1)
			continue;
		memset(ss, 0, sizeof(*ss));
		if (inet_pton(AF_INET, addr, &v4->sin_addr) == 1) {
			v4->sin_family = AF_INET;
			v4->sin_port = htons(53);
			found = 1;
		} else if (inet_pton(AF_INET6, addr, &v6->sin6_addr) == 1) {
			v6->sin6_family = AF_INET6;
			v6->sin6_port = htons(53);
			found = 1;
		}
	}
	fclose(f);
	if (found)
		snprintf(text, len, "%s", addr);
	return found;
}

/* getaddrinfo cannot tell a refusing server from an absent one (musl
 * ignores a REFUSED answer and times out), so after a temporary failure
 * the worker asks the first nameserver itself, one A query with a 1 s
 * deadline, and keeps what it answered for the log and /health. It runs
 * in a worker thread, where blocking is fine. */
static void diagnose(struct host *h)
{
	static const char *const rcodes[] = {"NOERROR", "FORMERR", "SERVFAIL",
					      "NXDOMAIN", "NOTIMP",  "REFUSED"};
	unsigned char q[300], a[512];
	struct sockaddr_storage ss;
	char server[64];
	size_t n = 12;

	if (!first_nameserver(&ss, server, sizeof(server)))
		return;
	memset(q, 0, n);
	q[0] = 0x70, q[1] = 0x69; /* id */
	q[2] = 0x01;		  /* recursion desired */
	q[5] = 1;		  /* one question */
	for (const char *p = h->name; *p;) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l == 0 || l > 63 || n + l + 6 > sizeof(q))
			return;
		q[n++] = (unsigned char)l;
		memcpy(q + n, p, l);
		n += l;
		p += l + (dot ? 1 : 0);
	}
	q[n++] = 0;
	q[n++] = 0, q[n++] = 1; /* type A */
	q[n++] = 0, q[n++] = 1; /* class IN */

	int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
					       : sizeof(struct sockaddr_in6);
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t got = -1;
	if (sendto(fd, q, n, 0, (struct sockaddr *)&ss, sl) == (ssize_t)n &&
	    poll(&pfd, 1, 1000) == 1)
		got = recv(fd, a, sizeof(a), 0);
	close(fd);
	if (got < 0) {
		snprintf(h->diag, sizeof(h->diag), "nameserver %s does not answer", server);
		return;
	}
	if (got < 12 || a[0] != q[0] || a[1] != q[1])
		return;
	int rcode = a[3] & 15;
	if (rcode != 0 && rcode != 3)
		snprintf(h->diag, sizeof(h->diag), "nameserver %s answered %s", server,
			 rcode < 6 ? rcodes[rcode] : "with an error");
}

static void lookup_work(uv_work_t *w)
{
	static const struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct host *h = w->data;

	h->gai = getaddrinfo(h->name, NULL, &hints, &h->res);
	if (h->gai == EAI_AGAIN || h->gai == EAI_FAIL)
		diagnose(h);
}

static const char *lookup_error(int gai)
{
	switch (gai) {
	case EAI_NONAME:
		return "name does not resolve";
	case EAI_AGAIN:
		return "temporary failure in name resolution";
	case EAI_FAIL:
		return "non-recoverable failure in name resolution";
	case EAI_MEMORY:
		return "out of memory";
	default:
		return gai_strerror(gai);
	}
}

static void on_resolved(uv_work_t *req, int cancelled)
{
	struct host *h = req->data;
	struct pi_upstreams *u = h->u;
	struct pi_health_upstream *s = h->slot;
	char addrs[PI_HEALTH_MAX_ADDRS][48];
	size_t n = 0;
	int status = cancelled ? EAI_AGAIN : h->gai;

	h->busy = 0;
	u->refs--;
	if (status == 0)
		n = collect(h->res, addrs, PI_HEALTH_MAX_ADDRS);
	if (h->res)
		freeaddrinfo(h->res);
	h->res = NULL;
	if (u->closing) {
		maybe_free(u);
		return;
	}
	s->checked = time(NULL);
	if (status == 0 && n == 0)
		status = EAI_NONAME;

	if (status != 0) {
		int was = s->resolved;
		s->resolved = 0;
		if (h->diag[0])
			snprintf(s->error, sizeof(s->error), "%s (%s)", lookup_error(status),
				 h->diag);
		else
			snprintf(s->error, sizeof(s->error), "%s", lookup_error(status));
		if (!h->logged) {
			if (was && u->mode == M_RECHECK)
				PI_LOG(PI_WARN,
				       "upstream host stopped resolving; nginx keeps its last "
				       "addresses",
				       PI_STR("var", s->var), PI_STR("host", s->host),
				       PI_STR("error", s->error));
			else
				PI_LOG(PI_WARN, "upstream host does not resolve",
				       PI_STR("var", s->var), PI_STR("host", s->host),
				       PI_STR("error", s->error));
			h->logged = 1;
		}
		if (u->mode == M_WAIT) {
			uv_timer_start(&h->retry, on_retry, h->backoff, 0);
			h->backoff = h->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : h->backoff * 2;
			return;
		}
		h->done = 1;
		check_round_end(u);
		return;
	}

	char before[PI_HEALTH_MAX_ADDRS * 48], after[PI_HEALTH_MAX_ADDRS * 48];
	join((const char(*)[48])s->addrs, s->n_addrs, before, sizeof(before));
	join((const char(*)[48])addrs, n, after, sizeof(after));
	int differs = s->n_addrs > 0 && strcmp(before, after) != 0;
	if (h->logged || (!s->resolved && s->n_addrs == 0))
		PI_LOG(h->logged ? PI_INFO : PI_DEBUG, "upstream host resolves",
		       PI_STR("var", s->var), PI_STR("host", s->host), PI_STR("addresses", after));
	if (differs) {
		PI_LOG(PI_INFO, "upstream addresses changed", PI_STR("var", s->var),
		       PI_STR("host", s->host), PI_STR("old", before), PI_STR("new", after));
		u->changed = 1;
	}
	memcpy(s->addrs, addrs, sizeof(addrs[0]) * n);
	s->n_addrs = n;
	s->resolved = 1;
	s->error[0] = '\0';
	h->logged = 0;
	h->done = 1;
	check_round_end(u);
}

static void start_lookup(struct host *h)
{
	struct pi_upstreams *u = h->u;

	if (h->busy || u->closing)
		return;
	if (h->literal) {
		h->slot->checked = time(NULL);
		h->done = 1;
		check_round_end(u);
		return;
	}
	h->req.data = h;
	h->res = NULL;
	h->gai = EAI_AGAIN;
	h->diag[0] = '\0';
	h->busy = 1;
	u->refs++;
	if (uv_queue_work(u->loop, &h->req, lookup_work, on_resolved) < 0) {
		/* Not even queued: report it like a failed lookup. */
		on_resolved(&h->req, 0);
		return;
	}
}

int pi_upstreams_new(uv_loop_t *loop, struct pi_health_upstream *slots, size_t n, void *data,
		     struct pi_upstreams **out)
{
	struct pi_upstreams *u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->hosts = calloc(n ? n : 1, sizeof(*u->hosts));
	if (!u->hosts) {
		free(u);
		return -ENOMEM;
	}
	u->loop = loop;
	u->n = n;
	u->data = data;
	/* libuv sizes its threadpool once, at the first queued work (which is
	 * ours): one thread per host makes every lookup run at the same time
	 * (SPEC §4). The child gets the environment main() was given, so this
	 * never reaches nginx. A value set by the user stands. */
	char threads[16];
	snprintf(threads, sizeof(threads), "%zu", n < 4 ? 4 : n > 64 ? 64 : n);
	setenv("UV_THREADPOOL_SIZE", threads, 0);
	uv_timer_init(loop, &u->deadline);
	uv_timer_init(loop, &u->every);
	u->deadline.data = u->every.data = u;
	u->refs = 2;
	for (size_t i = 0; i < n; i++) {
		struct host *h = &u->hosts[i];
		const char *v = slots[i].host;
		size_t len = strlen(v);
		unsigned char bin[16];
		h->u = u;
		h->slot = &slots[i];
		if (len >= 2 && v[0] == '[' && v[len - 1] == ']')
			snprintf(h->name, sizeof(h->name), "%.*s", (int)(len - 2), v + 1);
		else
			snprintf(h->name, sizeof(h->name), "%s", v);
		if (inet_pton(AF_INET, h->name, bin) == 1 || inet_pton(AF_INET6, h->name, bin) == 1) {
			h->literal = 1;
			slots[i].resolved = 1;
			slots[i].n_addrs = 1;
			snprintf(slots[i].addrs[0], sizeof(slots[i].addrs[0]), "%.47s", h->name);
		}
		uv_timer_init(loop, &h->retry);
		h->retry.data = h;
		u->refs++;
	}
	*out = u;
	return 0;
}

static void on_deadline(uv_timer_t *t)
{
	struct pi_upstreams *u = t->data;
	finish(u, 0);
}

static void start_round(struct pi_upstreams *u, enum mode mode)
{
	u->mode = mode;
	u->changed = 0;
	for (size_t i = 0; i < u->n; i++) {
		u->hosts[i].done = 0;
		u->hosts[i].backoff = BACKOFF_FIRST_MS;
	}
	if (u->n == 0) {
		check_round_end(u);
		return;
	}
	/* All lookups go out at once; the threadpool runs them side by side. */
	for (size_t i = 0; i < u->n && u->mode == mode; i++)
		start_lookup(&u->hosts[i]);
}

int pi_upstreams_wait(struct pi_upstreams *u, uint64_t wait_ms, pi_upstreams_done_cb cb)
{
	if (u->mode != M_IDLE)
		return -EBUSY;
	u->done_cb = cb;
	uv_timer_start(&u->deadline, on_deadline, wait_ms, 0);
	start_round(u, M_WAIT);
	return 0;
}

int pi_upstreams_round(struct pi_upstreams *u, pi_upstreams_done_cb cb)
{
	if (u->mode != M_IDLE)
		return -EBUSY;
	u->done_cb = cb;
	start_round(u, M_ROUND);
	return 0;
}

static void on_every(uv_timer_t *t)
{
	struct pi_upstreams *u = t->data;
	/* A round still running (a slow resolver) is not stacked upon. */
	if (u->mode == M_IDLE)
		start_round(u, M_RECHECK);
}

int pi_upstreams_recheck(struct pi_upstreams *u, uint64_t every_ms, pi_upstreams_change_cb cb)
{
	u->change_cb = cb;
	if (every_ms == 0 || u->n == 0)
		return 0;
	return uv_timer_start(&u->every, on_every, every_ms, every_ms);
}

void pi_upstreams_close(struct pi_upstreams *u)
{
	if (!u || u->closing)
		return;
	u->closing = 1;
	u->done_cb = NULL;
	u->change_cb = NULL;
	for (size_t i = 0; i < u->n; i++) {
		if (u->hosts[i].busy)
			uv_cancel((uv_req_t *)&u->hosts[i].req);
		uv_close((uv_handle_t *)&u->hosts[i].retry, on_host_close);
	}
	uv_close((uv_handle_t *)&u->deadline, on_close);
	uv_close((uv_handle_t *)&u->every, on_close);
}
