/* The upstream policy: rounds, backoff, when a failure counts, and which
 * address set is applied. Lookups themselves are init/resolver.c's. */
#include "init/upstream.h"
#include "envsubst/templates.h"
#include "init/log.h"
#include "init/resolver.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS	 5000
#define LOG_SHOWN	 32 /* addresses written per set in a log line */

enum ups_mode { M_IDLE, M_WAIT, M_ROUND, M_RECHECK };

struct ups_host {
	uint64_t id; /* names this host's lookups; never reused */
	char var[PI_HEALTH_NAME_MAX];
	char value[PI_HEALTH_NAME_MAX];
	char name[256]; /* the value without IPv6 brackets */
	int literal;	/* an IP address: resolved, never looked up */
	int busy;	/* a lookup is in flight */
	int in_round;	/* takes part in the round running now */
	int done;	/* answered in this round (resolved, in a wait) */
	int ever;	/* resolved at least once */
	int reported;	/* shown as not resolving, and logged so */
	int fails;	/* failed lookups in a row */
	int adopt;	/* added at a reload: nginx loaded its first set */
	int applied_known;
	int loading_known; /* loading holds the set nginx was sent a reload with */
	uint64_t backoff, due; /* a wait's next retry, in uv_now time */
	time_t checked;
	char error[192];
	struct pi_addrset current, applied, loading;
};

struct pi_upstreams {
	uv_loop_t *loop;
	struct pi_health_view *view;
	void *data;
	struct pi_resolver *resolver;
	struct ups_host **hosts;
	size_t n;
	struct pi_health_upstream *pub; /* view->upstreams, n entries */
	enum ups_mode mode;
	int started;  /* a wait or round has run: new hosts are looked up */
	int rejected; /* the last reload attempt was rejected */
	int overrun;  /* this recheck round outlasted every_ms (logged) */
	pi_upstreams_done_cb done_cb;
	pi_upstreams_change_cb change_cb;
	uint64_t every_ms;
	uint64_t next_id;
	uv_timer_t deadline, every, retry;
	int open_handles;
	int closing;
};

static void ups_start_lookup(struct pi_upstreams *u, struct ups_host *h);
static void ups_on_every(uv_timer_t *t);

/* ---- the view ---- */

static const struct pi_addrset *ups_shown(const struct ups_host *h)
{
	return h->applied_known ? &h->applied : &h->current;
}

static int ups_stale(const struct ups_host *h)
{
	return h->applied_known && h->current.n > 0 && !pi_addrset_equal(&h->current, &h->applied);
}

static void ups_note(const struct pi_upstreams *u, const struct ups_host *h, char *out, size_t len)
{
	const struct pi_addrset *s = ups_shown(h);
	size_t used = 0;

	out[0] = '\0';
	if (s->n > PI_HEALTH_MAX_ADDRS)
		used = (size_t)snprintf(out, len, "%zu addresses, the first %d shown", s->n,
					PI_HEALTH_MAX_ADDRS);
	if (ups_stale(h) && used < len)
		snprintf(out + used, len - used, "%s%zu new addresses not loaded by nginx yet (%s)",
			 used ? "; " : "", h->current.n,
			 u->rejected ? "the reload was rejected; retried at each recheck"
				     : "reload pending");
}

static void ups_publish(struct pi_upstreams *u, size_t i)
{
	const struct ups_host *h = u->hosts[i];
	struct pi_health_upstream *p = &u->pub[i];
	const struct pi_addrset *s = ups_shown(h);

	pi_health_upstream_name(p, h->var, h->value);
	p->resolved = h->literal || (h->ever && !h->reported);
	p->checked = h->checked;
	p->n_addrs = s->n;
	for (size_t k = 0; k < s->n && k < PI_HEALTH_MAX_ADDRS; k++)
		memcpy(p->addrs[k], s->a[k], sizeof(p->addrs[k]));
	snprintf(p->error, sizeof(p->error), "%s", p->resolved ? "" : h->error);
	ups_note(u, h, p->note, sizeof(p->note));
}

static void ups_publish_all(struct pi_upstreams *u)
{
	for (size_t i = 0; i < u->n; i++)
		ups_publish(u, i);
}

static void ups_publish_host(struct pi_upstreams *u, const struct ups_host *h)
{
	for (size_t i = 0; i < u->n; i++)
		if (u->hosts[i] == h)
			ups_publish(u, i);
}

/* ---- rounds ---- */

static void ups_finish(struct pi_upstreams *u, int ok)
{
	pi_upstreams_done_cb cb = u->done_cb;

	u->mode = M_IDLE;
	u->done_cb = NULL;
	uv_timer_stop(&u->deadline);
	uv_timer_stop(&u->retry);
	if (cb)
		cb(u, ok, u->data);
}

static void ups_round_end(struct pi_upstreams *u)
{
	int all_ok = 1, stale = 0;

	if (u->mode == M_IDLE || u->closing)
		return;
	for (size_t i = 0; i < u->n; i++) {
		const struct ups_host *h = u->hosts[i];
		if (h->in_round && !h->done)
			return;
		all_ok &= h->literal || (h->ever && !h->reported);
		stale |= ups_stale(h);
	}
	if (u->mode != M_RECHECK) {
		ups_finish(u, all_ok);
		return;
	}
	u->mode = M_IDLE;
	if (!stale && !u->rejected)
		return;
	if (!stale) {
		/* The sets came back to the ones nginx runs with: the
		 * rejected reload is not needed any more. */
		u->rejected = 0;
		ups_publish_all(u);
	}
	if (u->change_cb)
		u->change_cb(u, stale, u->data);
}

/* The earliest retry of a wait, if any is due later. */
static void ups_arm_retry(struct pi_upstreams *u);

static void ups_on_retry(uv_timer_t *t)
{
	struct pi_upstreams *u = t->data;
	uint64_t now = uv_now(u->loop);

	for (size_t i = 0; i < u->n && u->mode == M_WAIT; i++) {
		struct ups_host *h = u->hosts[i];
		if (h->in_round && !h->done && !h->busy && h->due && h->due <= now) {
			h->due = 0;
			ups_start_lookup(u, h);
		}
	}
	ups_arm_retry(u);
}

static void ups_arm_retry(struct pi_upstreams *u)
{
	uint64_t first = 0, now = uv_now(u->loop);

	if (u->mode != M_WAIT || u->closing)
		return;
	for (size_t i = 0; i < u->n; i++) {
		const struct ups_host *h = u->hosts[i];
		if (h->in_round && !h->done && !h->busy && h->due && (!first || h->due < first))
			first = h->due;
	}
	if (first)
		uv_timer_start(&u->retry, ups_on_retry, first > now ? first - now : 0, 0);
}

/* ---- results ---- */

static const char *ups_gai_text(int gai)
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

static void ups_failed(struct pi_upstreams *u, struct ups_host *h, const char *why,
		       const char *diag)
{
	int was_reported = h->reported;

	h->fails++;
	if (diag && *diag)
		snprintf(h->error, sizeof(h->error), "%s (%s)", why, diag);
	else
		snprintf(h->error, sizeof(h->error), "%s", why);
	if (!h->ever || u->mode == M_WAIT || u->mode == M_ROUND) {
		h->reported = 1;
		if (!was_reported)
			PI_LOG(PI_WARN, "upstream host does not resolve", PI_STR("var", h->var),
			       PI_STR("host", h->value), PI_STR("error", h->error));
	} else if (h->fails >= PI_UPSTREAMS_FAILS_TO_WARN) {
		h->reported = 1;
		if (!was_reported)
			PI_LOG(PI_WARN,
			       "upstream host stopped resolving; nginx keeps its last addresses",
			       PI_STR("var", h->var), PI_STR("host", h->value),
			       PI_INT("failures", h->fails), PI_STR("error", h->error));
	} else {
		PI_LOG(PI_DEBUG, "upstream lookup failed; reported after several in a row",
		       PI_INT("after", PI_UPSTREAMS_FAILS_TO_WARN), PI_STR("var", h->var),
		       PI_STR("host", h->value), PI_INT("failures", h->fails),
		       PI_STR("error", h->error));
	}
	if (u->mode == M_WAIT && h->in_round) {
		h->due = uv_now(u->loop) + h->backoff;
		h->backoff = h->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : h->backoff * 2;
		return;
	}
	h->done = 1;
}

static void ups_resolved(struct pi_upstreams *u, struct ups_host *h, struct pi_addrset *set)
{
	char before[1024], after[1024];

	pi_addrset_join(set, LOG_SHOWN, after, sizeof(after));
	if (h->reported)
		PI_LOG(PI_INFO, "upstream host resolves", PI_STR("var", h->var),
		       PI_STR("host", h->value), PI_STR("addresses", after));
	else if (!h->ever)
		PI_LOG(PI_DEBUG, "upstream host resolves", PI_STR("var", h->var),
		       PI_STR("host", h->value), PI_STR("addresses", after));
	if (h->current.n > 0 && !pi_addrset_equal(&h->current, set))
		PI_LOG(
		    PI_INFO, "upstream addresses changed", PI_STR("var", h->var),
		    PI_STR("host", h->value),
		    PI_STR("old", pi_addrset_join(&h->current, LOG_SHOWN, before, sizeof(before))),
		    PI_STR("new", after), PI_UINT("count", set->n));
	pi_addrset_move(&h->current, set);
	if (h->adopt && !h->applied_known && pi_addrset_copy(&h->applied, &h->current) == 0)
		h->applied_known = 1;
	h->ever = 1;
	h->reported = 0;
	h->fails = 0;
	h->error[0] = '\0';
	h->done = 1;
}

static struct ups_host *ups_find(struct pi_upstreams *u, uint64_t id)
{
	for (size_t i = 0; i < u->n; i++)
		if (u->hosts[i]->id == id)
			return u->hosts[i];
	return NULL;
}

static void ups_on_lookup(void *data, uint64_t id, struct pi_lookup_result *r)
{
	struct pi_upstreams *u = data;
	struct ups_host *h = ups_find(u, id);

	if (!h)
		return; /* removed at a reload while its lookup ran */
	h->busy = 0;
	h->checked = time(NULL);
	/* Half a set whose other half went unanswered keeps the addresses
	 * known of that half: one lost AAAA answer is no change of address
	 * (nor two reloads, one to drop them and one to take them back). */
	if (r->gai == 0 && r->missing && pi_addrset_add_family(&r->set, &h->current, r->missing) < 0)
		r->gai = EAI_MEMORY;
	/* Part of a large set, cut to fit one answer, when the whole could
	 * not be had: a part of the known set is no change (each part
	 * would be one, and a reload); new addresses are. */
	if (r->gai == 0 && r->maybe_cut && pi_addrset_subset(&r->set, &h->current) &&
	    pi_addrset_copy(&r->set, &h->current) < 0)
		r->gai = EAI_MEMORY;
	if (r->gai == 0)
		ups_resolved(u, h, &r->set);
	else
		ups_failed(u, h, ups_gai_text(r->gai), r->diag);
	ups_publish_host(u, h);
	ups_arm_retry(u);
	ups_round_end(u);
}

/* Starts h's lookup (the resolver queues it while every thread is
 * taken); a lookup that cannot start counts as a failure. The caller
 * checks for the end of the round. */
static void ups_start_lookup(struct pi_upstreams *u, struct ups_host *h)
{
	if (h->busy || u->closing)
		return;
	if (h->literal) {
		h->checked = time(NULL);
		h->done = 1;
		return;
	}
	int rc = pi_resolver_start(u->resolver, h->id, h->name);
	if (rc == 0) {
		h->busy = 1;
		return;
	}
	h->checked = time(NULL);
	ups_failed(u, h,
		   rc == -EAGAIN ? "cannot start a lookup thread" : strerror(-rc),
		   NULL);
	ups_publish_host(u, h);
}

static void ups_start_round(struct pi_upstreams *u, enum ups_mode mode)
{
	u->mode = mode;
	u->started = 1;
	for (size_t i = 0; i < u->n; i++) {
		struct ups_host *h = u->hosts[i];
		h->in_round = 1;
		h->done = 0;
		h->due = 0;
		h->backoff = BACKOFF_FIRST_MS;
	}
	/* All lookups go out at once, each on its own thread. A host whose
	 * lookup from an earlier round still runs answers this one. */
	for (size_t i = 0; i < u->n && u->mode == mode; i++)
		ups_start_lookup(u, u->hosts[i]);
	ups_arm_retry(u);
	ups_round_end(u);
}

/* ---- hosts ---- */

static void ups_host_free(struct ups_host *h)
{
	if (!h)
		return;
	pi_addrset_free(&h->current);
	pi_addrset_free(&h->loading);
	pi_addrset_free(&h->applied);
	free(h);
}

static struct ups_host *ups_host_new(struct pi_upstreams *u, const char *var, const char *value)
{
	struct ups_host *h = calloc(1, sizeof(*h));
	unsigned char bin[16];
	size_t len = strlen(value);

	if (!h)
		return NULL;
	h->id = ++u->next_id;
	snprintf(h->var, sizeof(h->var), "%s", var);
	snprintf(h->value, sizeof(h->value), "%s", value);
	if (len >= 2 && value[0] == '[' && value[len - 1] == ']')
		snprintf(h->name, sizeof(h->name), "%.*s", (int)(len - 2), value + 1);
	else
		snprintf(h->name, sizeof(h->name), "%s", value);
	int fam = inet_pton(AF_INET, h->name, bin) == 1	   ? AF_INET
		  : inet_pton(AF_INET6, h->name, bin) == 1 ? AF_INET6
							   : 0;
	if (fam) {
		if (pi_addrset_add(&h->current, fam, bin) < 0) {
			free(h);
			return NULL;
		}
		h->literal = h->ever = 1;
	}
	h->backoff = BACKOFF_FIRST_MS;
	return h;
}

/* Whether kept, s cut to PI_HEALTH_NAME_MAX - 1 bytes, came from s: a
 * longer name matches itself at every reload instead of being dropped and
 * added again (its state and address tracking lost each time). */
static int ups_same(const char *kept, const char *s)
{
	size_t n = strlen(kept);

	return strncmp(kept, s, n) == 0 && (s[n] == '\0' || n == PI_HEALTH_NAME_MAX - 1);
}

/* The old host of that variable and value not yet taken, or -1. */
static long ups_match(const struct pi_upstreams *u, const char *taken, const char *var,
		      const char *value)
{
	for (size_t j = 0; j < u->n; j++) {
		const struct ups_host *h = u->hosts[j];
		if (!taken[j] && ups_same(h->var, var) && ups_same(h->value, value))
			return (long)j;
	}
	return -1;
}

/* Frees the old hosts nobody took (removed at this reload). */
static void ups_drop_untaken(struct pi_upstreams *u, const char *taken, int log)
{
	for (size_t j = 0; j < u->n; j++) {
		struct ups_host *h = u->hosts[j];
		if (taken[j])
			continue;
		if (log)
			PI_LOG(PI_INFO, "upstream host removed", PI_STR("var", h->var),
			       PI_STR("host", h->value));
		ups_host_free(h);
	}
}

/* Swaps in the new host list and its view entries; looks the new ones up. */
static void ups_install(struct pi_upstreams *u, struct ups_host **hosts, const char *isnew,
			struct pi_health_upstream *pub, size_t n, int log)
{
	free(u->hosts);
	free(u->pub);
	u->hosts = hosts;
	u->pub = pub;
	u->n = n;
	u->view->upstreams = pub;
	u->view->n_upstreams = n;
	ups_publish_all(u);
	for (size_t i = 0; i < n; i++) {
		if (!isnew[i])
			continue;
		if (log)
			PI_LOG(PI_INFO, "upstream host added", PI_STR("var", hosts[i]->var),
			       PI_STR("host", hosts[i]->value));
		if (u->started && u->mode != M_WAIT)
			ups_start_lookup(u, hosts[i]);
	}
	ups_publish_all(u);
}

int pi_upstreams_sync(struct pi_upstreams *u, const struct pi_templates *t, int log)
{
	size_t n = pi_templates_nhosts(t);
	struct ups_host **hosts = calloc(n ? n : 1, sizeof(*hosts));
	struct pi_health_upstream *pub = calloc(n ? n : 1, sizeof(*pub));
	char *isnew = calloc(n ? n : 1, 1), *taken = calloc(u->n ? u->n : 1, 1);
	int rc = -ENOMEM;

	if (!hosts || !pub || !isnew || !taken)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *var, *value;
		pi_templates_host(t, i, &var, &value);
		long j = ups_match(u, taken, var, value);
		if (j >= 0) {
			hosts[i] = u->hosts[j];
			taken[j] = 1;
			continue;
		}
		if (!(hosts[i] = ups_host_new(u, var, value)))
			goto out;
		hosts[i]->adopt = u->started;
		isnew[i] = 1;
	}
	ups_drop_untaken(u, taken, log);
	ups_install(u, hosts, isnew, pub, n, log);
	hosts = NULL;
	pub = NULL;
	if (u->every_ms && u->n && !uv_is_active((uv_handle_t *)&u->every))
		uv_timer_start(&u->every, ups_on_every, u->every_ms, u->every_ms);
	rc = 0;
	ups_round_end(u); /* removing the last slow host may end a round */
out:
	for (size_t i = 0; hosts && i < n; i++)
		if (isnew && isnew[i])
			ups_host_free(hosts[i]);
	free(hosts);
	free(pub);
	free(isnew);
	free(taken);
	return rc;
}

/* ---- the public calls ---- */

int pi_upstreams_new(uv_loop_t *loop, struct pi_health_view *view, void *data,
		     struct pi_upstreams **out)
{
	struct pi_upstreams *u = calloc(1, sizeof(*u));
	uv_timer_t *timers[3];
	int rc;

	if (!u)
		return -ENOMEM;
	timers[0] = &u->deadline, timers[1] = &u->every, timers[2] = &u->retry;
	u->loop = loop;
	u->view = view;
	u->data = data;
	if ((rc = pi_resolver_new(loop, ups_on_lookup, u, &u->resolver)) < 0) {
		free(u);
		return rc;
	}
	/* uv_timer_init cannot fail on a live loop (it only fills the struct). */
	for (int i = 0; i < 3; i++) {
		uv_timer_init(loop, timers[i]);
		timers[i]->data = u;
	}
	u->open_handles = 3;
	view->upstreams = NULL;
	view->n_upstreams = 0;
	*out = u;
	return 0;
}

static void ups_on_deadline(uv_timer_t *t)
{
	ups_finish(t->data, 0);
}

int pi_upstreams_wait(struct pi_upstreams *u, uint64_t wait_ms, pi_upstreams_done_cb cb)
{
	if (u->mode != M_IDLE)
		return -EBUSY;
	u->done_cb = cb;
	/* The loop's clock is as old as its last turn (or its start): the
	 * deadline counts from now. */
	uv_update_time(u->loop);
	uv_timer_start(&u->deadline, ups_on_deadline, wait_ms, 0);
	ups_start_round(u, M_WAIT);
	return 0;
}

int pi_upstreams_round(struct pi_upstreams *u, pi_upstreams_done_cb cb)
{
	if (u->mode != M_IDLE)
		return -EBUSY;
	u->done_cb = cb;
	ups_start_round(u, M_ROUND);
	return 0;
}

static void ups_on_every(uv_timer_t *t)
{
	struct pi_upstreams *u = t->data;
	char slow[512];
	size_t len = 0;

	if (u->mode == M_IDLE) {
		u->overrun = 0;
		ups_start_round(u, M_RECHECK);
		return;
	}
	/* A round still running (a slow resolver) is not stacked upon; the
	 * other hosts' rechecks wait for it, so say which host holds them,
	 * once per round. */
	if (u->mode != M_RECHECK || u->overrun)
		return;
	u->overrun = 1;
	slow[0] = '\0';
	for (size_t i = 0; i < u->n && len < sizeof(slow); i++) {
		const struct ups_host *h = u->hosts[i];
		if (h->in_round && !h->done) {
			int w = snprintf(slow + len, sizeof(slow) - len, "%s%s", len ? " " : "",
					 h->var);
			if (w > 0)
				len += (size_t)w;
		}
	}
	PI_LOG(PI_WARN, "an upstream recheck outlasts upstreams.recheck; the next waits for it",
	       PI_UINT("recheck_ms", (unsigned long long)u->every_ms), PI_STR("waiting_for", slow));
}

int pi_upstreams_recheck(struct pi_upstreams *u, uint64_t every_ms, pi_upstreams_change_cb cb)
{
	/* The child runs: a host a reload adds is looked up at once, even
	 * when the start had no host to wait for (no wait ever ran). */
	u->started = 1;
	u->change_cb = cb;
	u->every_ms = every_ms;
	if (every_ms == 0 || u->n == 0)
		return 0;
	return uv_timer_start(&u->every, ups_on_every, every_ms, every_ms);
}

void pi_upstreams_loading(struct pi_upstreams *u)
{
	for (size_t i = 0; u && i < u->n; i++) {
		struct ups_host *h = u->hosts[i];
		h->loading_known =
		    h->current.n > 0 && pi_addrset_copy(&h->loading, &h->current) == 0;
	}
}

void pi_upstreams_applied(struct pi_upstreams *u, int ok)
{
	if (!u)
		return;
	u->rejected = !ok;
	for (size_t i = 0; i < u->n; i++) {
		struct ups_host *h = u->hosts[i];
		/* The sets the reload was sent with, not ones seen since; a
		 * host not resolving then or now keeps the set nginx had. */
		const struct pi_addrset *set = h->loading_known ? &h->loading : &h->current;
		if (ok && set->n > 0 && pi_addrset_copy(&h->applied, set) == 0)
			h->applied_known = 1;
		h->loading_known = 0;
		pi_addrset_free(&h->loading);
	}
	ups_publish_all(u);
}

int pi_upstreams_stale(const struct pi_upstreams *u)
{
	for (size_t i = 0; u && i < u->n; i++)
		if (ups_stale(u->hosts[i]))
			return 1;
	return 0;
}

const struct pi_addrset *pi_upstreams_current(const struct pi_upstreams *u, size_t i)
{
	return &u->hosts[i]->current;
}

size_t pi_upstreams_unresolved(const struct pi_upstreams *u, char *out, size_t len)
{
	size_t used = 0, n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < u->n; i++) {
		const struct pi_health_upstream *p = &u->pub[i];
		if (p->resolved)
			continue;
		n++;
		if (used < len)
			used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "",
						 p->var);
	}
	return n;
}

static void ups_on_close(uv_handle_t *h)
{
	struct pi_upstreams *u = h->data;

	if (--u->open_handles == 0)
		free(u);
}

void pi_upstreams_close(struct pi_upstreams *u)
{
	if (!u || u->closing)
		return;
	u->closing = 1;
	u->done_cb = NULL;
	u->change_cb = NULL;
	pi_resolver_close(u->resolver);
	u->resolver = NULL;
	for (size_t i = 0; i < u->n; i++)
		ups_host_free(u->hosts[i]);
	free(u->hosts);
	free(u->pub);
	u->hosts = NULL;
	u->pub = NULL;
	u->n = 0;
	u->view->upstreams = NULL;
	u->view->n_upstreams = 0;
	uv_close((uv_handle_t *)&u->deadline, ups_on_close);
	uv_close((uv_handle_t *)&u->every, ups_on_close);
	uv_close((uv_handle_t *)&u->retry, ups_on_close);
}
