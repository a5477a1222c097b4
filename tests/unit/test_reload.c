/* The reload transaction (init/reload.c), driven without processes: every
 * ending of a reload is exactly one verdict, and nothing is left pending
 * or stuck. */
#include "init/reload.h"
#include "tap.h"

#include <stdlib.h>

enum {
	KILL = PI_RELOAD_DO_KILL,
	COMMIT = PI_RELOAD_DO_COMMIT,
	ROLLBACK = PI_RELOAD_DO_ROLLBACK,
	START = PI_RELOAD_DO_START
};

static void test_commit_needs_exit_and_eof(void)
{
	struct pi_reload r = {0};

	is_int(pi_reload_request(&r, PI_RELOAD_RERENDER), START, "idle: a request starts");
	is_int(pi_reload_test_exited(&r, 0), 0, "exit alone: no verdict (output still coming)");
	is_int(pi_reload_pipe_closed(&r), COMMIT, "exit 0 and end of file: commit");
	ok(r.busy && r.confirming, "committed: in flight until confirmed");
	is_int(pi_reload_confirmed(&r, 1), 0, "confirmed, nothing pending: nothing to do");
	ok(!r.busy, "idle after the verdict and its confirmation");

	is_int(pi_reload_request(&r, PI_RELOAD_RERENDER), START, "next request starts");
	is_int(pi_reload_pipe_closed(&r), 0, "end of file alone: no verdict");
	is_int(pi_reload_test_exited(&r, 1), ROLLBACK, "exit 1: rollback");
	is_int(r.why, PI_RELOAD_TEST_FAILED, "why: the test failed");
	is_int(r.why_code, 1, "with its code");
}

static void test_requests_merge_while_busy(void)
{
	struct pi_reload r = {0};

	pi_reload_request(&r, PI_RELOAD_ADDRESSES);
	is_int(pi_reload_request(&r, PI_RELOAD_RERENDER), 0, "busy: merged");
	is_int(pi_reload_request(&r, PI_RELOAD_ADDRESSES), 0, "busy: merged again");
	pi_reload_test_exited(&r, 7);
	is_int(pi_reload_pipe_closed(&r), ROLLBACK | START, "verdict, then the pending one");
	is_int(r.why_code, 7, "the verdict keeps the old test's code");
	is_int(r.kind, PI_RELOAD_RERENDER | PI_RELOAD_ADDRESSES, "one reload of both kinds");
	is_int(r.pending, 0, "nothing pending");
	ok(r.busy && !r.test_exited && !r.pipe_closed, "the new one starts clean");
}

static void test_deadline(void)
{
	struct pi_reload r = {0};

	pi_reload_request(&r, PI_RELOAD_RERENDER);
	pi_reload_test_exited(&r, 0); /* a grandchild holds the pipe */
	is_int(pi_reload_timeout(&r), KILL | ROLLBACK, "deadline: kill and roll back");
	is_int(r.why, PI_RELOAD_TIMED_OUT, "why: timed out");
	is_int(pi_reload_pipe_closed(&r), 0, "the killed test's end of file is ignored");
	is_int(pi_reload_timeout(&r), 0, "a late timer is ignored");

	pi_reload_request(&r, PI_RELOAD_RERENDER);
	pi_reload_request(&r, PI_RELOAD_ADDRESSES);
	is_int(pi_reload_timeout(&r), KILL | ROLLBACK | START, "deadline with one pending");
}

static void test_close(void)
{
	struct pi_reload r = {0};

	is_int(pi_reload_close(&r), 0, "closing while idle: nothing to undo");
	is_int(pi_reload_request(&r, PI_RELOAD_RERENDER), 0, "closed: no reload starts");

	struct pi_reload b = {0};
	pi_reload_request(&b, PI_RELOAD_RERENDER);
	pi_reload_request(&b, PI_RELOAD_ADDRESSES);
	is_int(pi_reload_close(&b), KILL | ROLLBACK,
	       "closing mid-test: kill and roll back, no start");
	is_int(b.why, PI_RELOAD_ABANDONED, "why: abandoned");
	is_int(b.pending, 0, "the pending reload is dropped");
	is_int(pi_reload_test_exited(&b, 0), 0, "the killed test's exit is ignored");
	is_int(pi_reload_close(&b), 0, "closing twice: nothing more");
}

static void test_prepare_failure(void)
{
	struct pi_reload r = {0};

	is_int(pi_reload_prepare_failed(&r), 0, "no transaction: ignored");
	pi_reload_request(&r, PI_RELOAD_RERENDER);
	pi_reload_request(&r, PI_RELOAD_ADDRESSES);
	is_int(pi_reload_prepare_failed(&r), ROLLBACK | START, "render failed: rollback, next");
	is_int(r.why, PI_RELOAD_PREPARE_FAILED, "why: preparation");
	is_int(r.kind, PI_RELOAD_ADDRESSES, "the address reload still runs");

	struct pi_reload m = {0};
	pi_reload_request(&m, PI_RELOAD_RERENDER);
	pi_reload_request(&m, PI_RELOAD_ADDRESSES);
	pi_reload_request(&m, PI_RELOAD_RERENDER);
	pi_reload_test_exited(&m, 0);
	is_int(pi_reload_pipe_closed(&m), COMMIT, "commit: the merged reload waits");
	is_int(pi_reload_confirmed(&m, 1), START, "merged reload starts once confirmed");
	is_int(m.kind, PI_RELOAD_RERENDER | PI_RELOAD_ADDRESSES, "of both kinds");
	is_int(pi_reload_prepare_failed(&m), ROLLBACK | START,
	       "its render fails: the address change is not dropped");
	is_int(m.kind, PI_RELOAD_ADDRESSES, "it runs alone, with the running files");
	is_int(pi_reload_prepare_failed(&m), ROLLBACK, "and is not retried for ever");
	ok(!m.busy && !m.pending, "idle");
}

static void test_confirmation(void)
{
	struct pi_reload r = {0};

	is_int(pi_reload_confirmed(&r, 1), 0, "no commit: a confirmation is ignored");
	pi_reload_request(&r, PI_RELOAD_RERENDER);
	is_int(pi_reload_confirmed(&r, 1), 0, "before the verdict: ignored");
	pi_reload_test_exited(&r, 0);
	is_int(pi_reload_pipe_closed(&r), COMMIT, "commit");
	is_int(pi_reload_request(&r, PI_RELOAD_ADDRESSES), 0, "asked for while confirmed: pending");
	is_int(pi_reload_request(&r, PI_RELOAD_RERENDER), 0, "... merged");
	is_int(pi_reload_timeout(&r), 0, "a late test deadline is ignored");
	is_int(pi_reload_prepare_failed(&r), 0, "so is a late failure");
	is_int(pi_reload_test_exited(&r, 1), 0, "and a late exit");
	pi_reload_drop_pending(&r, PI_RELOAD_ADDRESSES);
	is_int(r.pending, PI_RELOAD_RERENDER, "addresses settled by the confirmation dropped");
	is_int(pi_reload_confirmed(&r, 0), START, "not taken: the pending one starts");
	is_int(r.why, PI_RELOAD_NOT_TAKEN, "why: nginx did not take it");
	is_int(r.kind, PI_RELOAD_RERENDER, "of the kind left");
	is_int(pi_reload_confirmed(&r, 1), 0, "confirming twice: ignored");

	struct pi_reload c = {0};
	pi_reload_request(&c, PI_RELOAD_RERENDER);
	pi_reload_test_exited(&c, 0);
	pi_reload_pipe_closed(&c);
	pi_reload_request(&c, PI_RELOAD_ADDRESSES);
	is_int(pi_reload_close(&c), 0, "closing while confirmed: nothing to undo (SIGHUP sent)");
	ok(!c.busy && !c.confirming && !c.pending && c.closed, "idle, closed, nothing pending");
	is_int(pi_reload_confirmed(&c, 1), 0, "a confirmation after the close is ignored");
}

/* Any sequence of events: each START is followed by exactly one verdict
 * before the next START, KILL only comes with a verdict, a COMMIT stays in
 * flight until its confirmation (or the close), and the machine is busy
 * exactly between a START and the end of its transaction. */
static void test_random_sequences(void)
{
	unsigned seed = 12345;
	int bad = 0;

	for (int run = 0; run < 2000 && !bad; run++) {
		struct pi_reload r = {0};
		int open = 0, committed = 0;
		for (int step = 0; step < 40 && !bad; step++) {
			int act;
			seed = seed * 1103515245u + 12345u;
			switch ((seed >> 16) % 8) {
			case 0:
				act = pi_reload_request(&r, 1 + (int)((seed >> 8) & 1));
				break;
			case 1:
				act = pi_reload_test_exited(&r, (int)((seed >> 4) & 1));
				break;
			case 2:
				act = pi_reload_pipe_closed(&r);
				break;
			case 3:
				act = pi_reload_timeout(&r);
				break;
			case 4:
				act = pi_reload_prepare_failed(&r);
				break;
			case 5:
				act = (seed >> 20) % 8 == 0 ? pi_reload_close(&r) : 0;
				if ((seed >> 20) % 8 == 0 && committed) {
					bad |= act != 0;
					open = committed = 0;
				}
				break;
			case 6:
				act = pi_reload_confirmed(&r, (int)((seed >> 4) & 1));
				if (committed)
					open = committed = 0;
				else
					bad |= act != 0;
				break;
			default:
				act = pi_reload_request(&r, PI_RELOAD_RERENDER);
				break;
			}
			int verdicts = !!(act & COMMIT) + !!(act & ROLLBACK);
			if (verdicts > 1 || (verdicts && (!open || committed)) ||
			    ((act & KILL) && !verdicts) || ((act & COMMIT) && (act & START)))
				bad = 1;
			if (act & ROLLBACK)
				open = 0;
			if (act & COMMIT)
				committed = 1;
			if (act & START) {
				if (open || r.closed)
					bad = 1;
				open = 1;
			}
			if (open != r.busy || committed != r.confirming)
				bad = 1;
		}
	}
	ok(!bad, "2000 random sequences: one verdict per transaction, a commit in flight until "
		 "confirmed, busy exactly while open");
}

int main(void)
{
	test_commit_needs_exit_and_eof();
	test_requests_merge_while_busy();
	test_deadline();
	test_close();
	test_prepare_failure();
	test_confirmation();
	test_random_sequences();
	return done_testing();
}
