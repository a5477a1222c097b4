/* Upstream hosts (SPEC §4): resolve every host variable concurrently, wait
 * for all of them with backoff, re-resolve them on a timer, and say when
 * nginx's addresses are stale.
 *
 * Three address sets per host: the one the last lookup gave (current),
 * the one nginx last loaded successfully (applied: the supervisor reports
 * each reload's outcome with pi_upstreams_applied), and what /health shows
 * (the applied set, with a note when a newer one waits for a reload). A
 * recheck after which some host's current set differs from its applied
 * set asks for a reload, and asks again after every later recheck until a
 * reload succeeds.
 *
 * The module owns the upstream entries of the health view it is given
 * (view->upstreams, view->n_upstreams): every string in them is a copy,
 * and the array is replaced only on the loop thread, between requests. */
#ifndef PI_UPSTREAM_H
#define PI_UPSTREAM_H

#include <stdint.h>
#include <uv.h>

#include "health/status.h"
#include "init/addrset.h"

struct pi_upstreams;
struct pi_templates;

/* A failing host counts as no longer resolving after this many failed
 * rechecks in a row (a flapping nameserver is not an outage). */
#define PI_UPSTREAMS_FAILS_TO_WARN 3

/* Called once when a wait or a single round ends: ok is 1 when every host
 * resolved, 0 when the deadline passed (wait) or some failed (round). */
typedef void (*pi_upstreams_done_cb)(struct pi_upstreams *u, int ok, void *data);
/* Called after a recheck round when some host's addresses differ from the
 * ones nginx last loaded (stale 1), and once with stale 0 when, after a
 * rejected reload, they are back to those: nothing waits any more. */
typedef void (*pi_upstreams_change_cb)(struct pi_upstreams *u, int stale, void *data);

/* Makes a module with no hosts that publishes into view (which must
 * outlive it). Returns 0 or a negative errno. */
int pi_upstreams_new(uv_loop_t *loop, struct pi_health_view *view, void *data,
		     struct pi_upstreams **out);

/* Makes the hosts those of t (pi_templates_host; copied). A host whose
 * variable and value are unchanged keeps its state; a new one is looked up
 * at once (unless a wait or round is running: then it waits for the next
 * one); a removed one disappears from the view, its lookup in flight is
 * ignored. Logs each host added or removed when `log` is set. Returns 0
 * or -ENOMEM (the hosts are unchanged then). */
int pi_upstreams_sync(struct pi_upstreams *u, const struct pi_templates *t, int log);

/* Resolves all hosts, retrying failures with backoff (100 ms doubling, at
 * most 5 s) until all resolved or wait_ms passed; then calls cb, at the
 * deadline whatever lookups are still in flight. Logs each host's failure
 * once and once more when it resolves. -EBUSY while a round runs. */
int pi_upstreams_wait(struct pi_upstreams *u, uint64_t wait_ms, pi_upstreams_done_cb cb);

/* Resolves every host once, no retries; then calls cb. */
int pi_upstreams_round(struct pi_upstreams *u, pi_upstreams_done_cb cb);

/* Re-resolves every every_ms (0: never); calls cb after a round that
 * leaves some host's current set unapplied. A host that stops resolving
 * keeps its addresses; after PI_UPSTREAMS_FAILS_TO_WARN failed rechecks in
 * a row it is marked unresolved in the view and logged once. */
int pi_upstreams_recheck(struct pi_upstreams *u, uint64_t every_ms, pi_upstreams_change_cb cb);

/* The supervisor's word on a reload (or the start) that made nginx load
 * its configuration: ok 1 when nginx now runs with the current sets, 0
 * when the attempt was rejected (the sets stay pending). */
void pi_upstreams_applied(struct pi_upstreams *u, int ok);

/* A reload is sent now: the sets it is sent with are the ones the next
 * pi_upstreams_applied(u, 1) marks as loaded (later changes stay stale). */
void pi_upstreams_loading(struct pi_upstreams *u);

/* 1 when some host's current set is not the one nginx runs with. */
int pi_upstreams_stale(const struct pi_upstreams *u);

/* Host i's current set (i as in view->upstreams); valid until the next
 * loop iteration. */
const struct pi_addrset *pi_upstreams_current(const struct pi_upstreams *u, size_t i);

/* Writes "VAR VAR" for every host not resolved now into out (its host
 * was logged with its error when it first failed); returns how many. */
size_t pi_upstreams_unresolved(const struct pi_upstreams *u, char *out, size_t len);

/* Stops timers and drops lookups in flight; returns at once and leaves
 * nothing that would keep the loop running. Clears the view's upstream
 * entries and frees them. NULL is allowed. */
void pi_upstreams_close(struct pi_upstreams *u);

#endif
