#include "init/resolver.h"
#include "init/nameserver.h"
#include "init/signals.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESOLVER_STACK	(512 * 1024)
#define RESOLVER_ASK_MS 1000 /* the direct questions after a failure */
/* A 512-byte answer holds 16 AAAA records or 29 A records at most. */
#define RESOLVER_MAYBE_CUT 16

struct resolver_job {
	struct resolver_job *next;
	struct pi_resolver *r;
	uint64_t id;
	char name[256];
	struct pi_lookup_result res;
};

/* Shared by the loop and the lookup threads; mu guards everything below
 * it. refs counts the loop's side (until the async handle is closed) and
 * each thread in flight; whoever drops the last frees the struct. */
struct pi_resolver {
	uv_loop_t *loop;
	pi_resolver_cb cb;
	void *data;
	uv_async_t async;
	/* The loop's alone: lookups waiting for a thread, oldest first. */
	struct resolver_job *queue, *queue_tail;
	pthread_mutex_t mu;
	struct resolver_job *done; /* finished, newest first */
	size_t refs;
	size_t threads;
	int closed;
};

static int resolver_spawn(struct resolver_job *j);
static void resolver_run_queue(struct pi_resolver *r);

static void resolver_unref(struct pi_resolver *r)
{
	pthread_mutex_lock(&r->mu);
	int last = --r->refs == 0;
	pthread_mutex_unlock(&r->mu);
	if (last) {
		pthread_mutex_destroy(&r->mu);
		free(r);
	}
}

static void job_free(struct resolver_job *j)
{
	pi_addrset_free(&j->res.set);
	free(j);
}

/* getaddrinfo, then, when it failed, the nameservers asked one by one: a
 * positive answer from any of them counts (see init/nameserver.h). */
static void resolver_lookup(struct resolver_job *j)
{
	static const struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	struct pi_resolv_conf rc;

	j->res.gai = getaddrinfo(j->name, NULL, &hints, &res);
	if (j->res.gai == 0) {
		if (pi_addrset_from_addrinfo(&j->res.set, res) < 0)
			j->res.gai = EAI_MEMORY;
		else if (j->res.set.n == 0)
			j->res.gai = EAI_NONAME;
		freeaddrinfo(res);
	}
	if (j->res.gai == EAI_MEMORY || pi_ns_read_conf("/etc/resolv.conf", &rc) < 0)
		return; /* no nameserver to ask for more than getaddrinfo gave */
	j->res.maybe_cut = j->res.gai == 0 && j->res.set.n >= RESOLVER_MAYBE_CUT;
	if (j->res.gai == 0) {
		/* Many addresses: the answer may have been cut to what 512
		 * bytes hold; ask for the whole set. A whole answer wins. */
		struct pi_addrset whole;
		char ignored[8];
		int missing;
		if (!j->res.maybe_cut ||
		    pi_ns_lookup(&rc, j->name, RESOLVER_ASK_MS, &whole, &missing, ignored,
				 sizeof(ignored)) <= 0)
			return;
		/* A family the whole answer left unknown (unanswered, or an
		 * error such as a nameserver that always fails AAAA) is
		 * taken from getaddrinfo's set: the rest is whole. */
		if (!missing || pi_addrset_add_family(&whole, &j->res.set, missing) == 0) {
			j->res.maybe_cut = 0;
			if (whole.n > j->res.set.n)
				pi_addrset_move(&j->res.set, &whole);
		}
		pi_addrset_free(&whole);
		return;
	}
	/* With one nameserver its "no such name" is final; any other
	 * failure is worth a direct question, if only to name the cause. */
	if (rc.n_ns < 2 && j->res.gai != EAI_AGAIN && j->res.gai != EAI_FAIL)
		return;
	int got = pi_ns_lookup(&rc, j->name, RESOLVER_ASK_MS, &j->res.set, &j->res.missing,
			       j->res.diag, sizeof(j->res.diag));
	if (got > 0)
		j->res.gai = 0;
	else if (got == -ENOMEM)
		j->res.gai = EAI_MEMORY;
}

static void *resolver_thread(void *arg)
{
	struct resolver_job *j = arg;
	struct pi_resolver *r = j->r;

	resolver_lookup(j);
	pthread_mutex_lock(&r->mu);
	r->threads--;
	if (r->closed) {
		pthread_mutex_unlock(&r->mu);
		job_free(j);
	} else {
		j->next = r->done;
		r->done = j;
		/* Under mu: close sets closed under mu before uv_close, so the
		 * handle is never sent to once it is closing. */
		uv_async_send(&r->async);
		pthread_mutex_unlock(&r->mu);
	}
	resolver_unref(r);
	return NULL;
}

static void resolver_on_async(uv_async_t *a)
{
	struct pi_resolver *r = a->data;

	pthread_mutex_lock(&r->mu);
	struct resolver_job *list = r->done;
	r->done = NULL;
	pthread_mutex_unlock(&r->mu);
	/* Oldest first, and each job freed even if a callback closes r:
	 * closing only marks it, the memory stays until the handle closes. */
	struct resolver_job *rev = NULL;
	while (list) {
		struct resolver_job *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	while (rev) {
		struct resolver_job *next = rev->next;
		if (!r->closed)
			r->cb(r->data, rev->id, &rev->res);
		job_free(rev);
		rev = next;
	}
	resolver_run_queue(r); /* threads have ended: those waiting start */
}

int pi_resolver_new(uv_loop_t *loop, pi_resolver_cb cb, void *data, struct pi_resolver **out)
{
	struct pi_resolver *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return -ENOMEM;
	if ((rc = pthread_mutex_init(&r->mu, NULL)) != 0) {
		free(r);
		return -rc;
	}
	if ((rc = uv_async_init(loop, &r->async, resolver_on_async)) < 0) {
		pthread_mutex_destroy(&r->mu);
		free(r);
		return rc;
	}
	r->async.data = r;
	r->loop = loop;
	r->cb = cb;
	r->data = data;
	r->refs = 1;
	*out = r;
	return 0;
}

/* The thread starts with every signal but the faults blocked, so that no
 * signal meant for the init is ever delivered to a lookup thread. */
static int resolver_spawn(struct resolver_job *j)
{
	pthread_attr_t attr;
	pthread_t t;
	uint64_t old;
	int rc;

	if ((rc = pthread_attr_init(&attr)) != 0)
		return -rc;
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, RESOLVER_STACK);
	if ((rc = -pi_signals_thread_block(&old)) == 0) {
		rc = pthread_create(&t, &attr, resolver_thread, j);
		pi_signals_thread_restore(old);
	}
	pthread_attr_destroy(&attr);
	return -rc;
}

/* Runs j on a thread of its own. Returns 0, 1 when every thread is taken
 * (or none could be made while others run): j must wait for one to end,
 * or -EAGAIN when no thread could be made and none runs. */
static int resolver_try(struct pi_resolver *r, struct resolver_job *j)
{
	pthread_mutex_lock(&r->mu);
	int full = r->threads >= PI_RESOLVER_MAX_THREADS;
	if (!full) {
		r->refs++;
		r->threads++;
	}
	pthread_mutex_unlock(&r->mu);
	if (full)
		return 1;
	if (resolver_spawn(j) == 0)
		return 0;
	pthread_mutex_lock(&r->mu);
	r->refs--;
	int others = --r->threads > 0;
	pthread_mutex_unlock(&r->mu);
	return others ? 1 : -EAGAIN;
}

/* Starts the waiting lookups while threads are free. One that can start
 * on no thread at all ends as a failed lookup (it was accepted). */
static void resolver_run_queue(struct pi_resolver *r)
{
	while (r->queue && !r->closed) {
		struct resolver_job *j = r->queue;
		int rc = resolver_try(r, j);
		if (rc == 1)
			return;
		r->queue = j->next;
		if (rc < 0) {
			j->res.gai = EAI_AGAIN;
			snprintf(j->res.diag, sizeof(j->res.diag), "cannot start a lookup thread");
			r->cb(r->data, j->id, &j->res);
			job_free(j);
		}
	}
}

int pi_resolver_start(struct pi_resolver *r, uint64_t id, const char *name)
{
	size_t len = strlen(name);

	if (len >= sizeof(((struct resolver_job *)0)->name))
		return -ENAMETOOLONG;
	struct resolver_job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	memcpy(j->name, name, len + 1);
	j->id = id;
	j->r = r;
	int rc = r->queue ? 1 : resolver_try(r, j); /* in order behind those waiting */
	if (rc < 0) {
		free(j);
		return rc;
	}
	if (rc == 1) {
		if (r->queue)
			r->queue_tail->next = j;
		else
			r->queue = j;
		r->queue_tail = j;
	}
	return 0;
}

static void resolver_on_close(uv_handle_t *h)
{
	resolver_unref(h->data);
}

void pi_resolver_close(struct pi_resolver *r)
{
	if (!r || r->closed)
		return;
	pthread_mutex_lock(&r->mu);
	r->closed = 1;
	struct resolver_job *list = r->done;
	r->done = NULL;
	pthread_mutex_unlock(&r->mu);
	while (r->queue) {
		struct resolver_job *next = r->queue->next;
		job_free(r->queue);
		r->queue = next;
	}
	while (list) {
		struct resolver_job *next = list->next;
		job_free(list);
		list = next;
	}
	uv_close((uv_handle_t *)&r->async, resolver_on_close);
}
