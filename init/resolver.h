/* Lookups of upstream host names off the loop (SPEC §4): each lookup runs
 * on a detached thread of its own and posts its result back to the loop
 * through a uv_async_t. Nothing here is a uv_work_t, so no lookup can keep
 * uv_run from returning: pi_resolver_close returns at once, and a thread
 * still blocked in getaddrinfo (a silent nameserver with `timeout:20`)
 * frees its own memory when it finally returns, or dies with the process. */
#ifndef PI_RESOLVER_H
#define PI_RESOLVER_H

#include <stdint.h>
#include <uv.h>

#include "init/addrset.h"

#define PI_RESOLVER_MAX_THREADS 64 /* lookups in flight at once */

struct pi_resolver;

struct pi_lookup_result {
	int gai;	       /* 0, or getaddrinfo's EAI_* code */
	struct pi_addrset set; /* the addresses when gai is 0 (never empty then) */
	/* 0, or AF_INET6 (AF_INET) when the set came without an answer to
	 * the AAAA (A) question: those addresses are unknown, not gone. */
	int missing;
	/* 1 when the set is one answer's worth of many addresses and the
	 * whole set could not be had (asked with EDNS0, then TCP): it may be
	 * a part, cut to fit, and another part next time. */
	int maybe_cut;
	char diag[128]; /* what a nameserver did, after a failure; or "" */
};

/* Called on the loop thread once per started lookup, unless the resolver
 * was closed first. r is valid during the call only; the callee may take
 * r->set with pi_addrset_move, whatever is left is freed afterwards. */
typedef void (*pi_resolver_cb)(void *data, uint64_t id, struct pi_lookup_result *r);

/* Returns 0 or a negative errno (the resolver is not made then). */
int pi_resolver_new(uv_loop_t *loop, pi_resolver_cb cb, void *data, struct pi_resolver **out);

/* Starts looking up name (copied) for the caller's id: at once, or, with
 * PI_RESOLVER_MAX_THREADS lookups in flight (or no thread to be made while
 * some run), when a thread ends, in the order asked (a lookup that then
 * finds no thread at all reports EAI_AGAIN through cb). Returns 0, -EAGAIN
 * when no thread could be made and none runs, -ENAMETOOLONG, -ENOMEM; cb
 * is not called for a failed start. */
int pi_resolver_start(struct pi_resolver *r, uint64_t id, const char *name);

/* Drops every result still to come and closes the async handle; returns
 * at once. The memory goes when the handle is closed and the last thread
 * has returned. NULL is allowed. */
void pi_resolver_close(struct pi_resolver *r);

#endif
