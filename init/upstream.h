/* Upstream hosts (SPEC §4): resolve every host variable concurrently on the
 * libuv loop, wait for all of them with backoff, and re-resolve them on a
 * timer, reporting when any host's set of addresses changes. */
#ifndef PI_UPSTREAM_H
#define PI_UPSTREAM_H

#include <stdint.h>
#include <uv.h>

#include "health/status.h"

struct pi_upstreams;

/* Called once when a wait or a single round ends: ok is 1 when every host
 * resolved, 0 when the deadline passed (wait) or some failed (round). */
typedef void (*pi_upstreams_done_cb)(struct pi_upstreams *u, int ok, void *data);
/* Called after a recheck round in which some host's addresses changed. */
typedef void (*pi_upstreams_change_cb)(struct pi_upstreams *u, void *data);

/* Prepares the hosts in slots[0..n): each slot's var and host must be set
 * and stay valid until pi_upstreams_close; the module writes the results
 * (resolved, addresses, error, time) into the slots, which the health
 * endpoint reads. Returns 0 or -ENOMEM. */
int pi_upstreams_new(uv_loop_t *loop, struct pi_health_upstream *slots, size_t n, void *data,
		     struct pi_upstreams **out);

/* Resolves all hosts, retrying failures with backoff (100 ms doubling, at
 * most 5 s) until all resolved or wait_ms passed; then calls cb. Logs each
 * host's failure once and once more when it resolves. */
int pi_upstreams_wait(struct pi_upstreams *u, uint64_t wait_ms, pi_upstreams_done_cb cb);

/* Resolves every host once, no retries; then calls cb. */
int pi_upstreams_round(struct pi_upstreams *u, pi_upstreams_done_cb cb);

/* Re-resolves every every_ms; calls cb after a round that changed any
 * host's address set. A host that stops resolving keeps its last
 * addresses, is marked unresolved and logged; it causes no change. */
int pi_upstreams_recheck(struct pi_upstreams *u, uint64_t every_ms, pi_upstreams_change_cb cb);

/* Stops timers; lookups in flight finish in the threadpool and are
 * dropped; memory is freed once the last of them returns. */
void pi_upstreams_close(struct pi_upstreams *u);

#endif
