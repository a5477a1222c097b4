#include "init/reload.h"

/* The transaction in flight is over: starts the pending one if any. */
static int reload_next(struct pi_reload *r)
{
	int kind = r->pending;

	r->busy = 0;
	r->confirming = 0;
	r->pending = 0;
	return kind && !r->closed ? pi_reload_request(r, kind) : 0;
}

/* The test's verdict. A commit stays in flight until it is confirmed. */
static int reload_verdict(struct pi_reload *r, enum pi_reload_why why)
{
	r->why = why;
	r->why_code = r->test_code;
	if (why == PI_RELOAD_OK) {
		r->confirming = 1;
		return PI_RELOAD_DO_COMMIT;
	}
	return PI_RELOAD_DO_ROLLBACK | reload_next(r);
}

/* A transaction is in flight and has no verdict yet. */
static int reload_open(const struct pi_reload *r)
{
	return r->busy && !r->confirming;
}

static int reload_test_done(struct pi_reload *r)
{
	if (!r->test_exited || !r->pipe_closed)
		return 0;
	return reload_verdict(r, r->test_code == 0 ? PI_RELOAD_OK : PI_RELOAD_TEST_FAILED);
}

int pi_reload_request(struct pi_reload *r, int kind)
{
	if (r->closed)
		return 0;
	if (r->busy) {
		r->pending |= kind;
		return 0;
	}
	r->busy = 1;
	r->confirming = 0;
	r->kind = kind;
	r->test_exited = 0;
	r->test_code = 0;
	r->pipe_closed = 0;
	return PI_RELOAD_DO_START;
}

int pi_reload_prepare_failed(struct pi_reload *r)
{
	if (!reload_open(r))
		return 0;
	/* A failed re-render must not take an address change merged into it
	 * down with it: nginx still needs the new addresses, with the files it
	 * runs. Only a reload that re-rendered is retried this way, so it
	 * happens at most once. */
	if ((r->kind & PI_RELOAD_RERENDER) && (r->kind & PI_RELOAD_ADDRESSES))
		r->pending |= PI_RELOAD_ADDRESSES;
	return reload_verdict(r, PI_RELOAD_PREPARE_FAILED);
}

int pi_reload_test_exited(struct pi_reload *r, int code)
{
	if (!reload_open(r) || r->test_exited)
		return 0;
	r->test_exited = 1;
	r->test_code = code;
	return reload_test_done(r);
}

int pi_reload_pipe_closed(struct pi_reload *r)
{
	if (!reload_open(r) || r->pipe_closed)
		return 0;
	r->pipe_closed = 1;
	return reload_test_done(r);
}

int pi_reload_timeout(struct pi_reload *r)
{
	return reload_open(r) ? PI_RELOAD_DO_KILL | reload_verdict(r, PI_RELOAD_TIMED_OUT) : 0;
}

int pi_reload_close(struct pi_reload *r)
{
	r->closed = 1;
	r->pending = 0;
	if (r->confirming)
		return reload_next(r); /* its SIGHUP was sent: nothing to undo */
	return r->busy ? PI_RELOAD_DO_KILL | reload_verdict(r, PI_RELOAD_ABANDONED) : 0;
}

int pi_reload_confirmed(struct pi_reload *r, int ok)
{
	if (!r->confirming)
		return 0;
	if (!ok)
		r->why = PI_RELOAD_NOT_TAKEN;
	return reload_next(r);
}

void pi_reload_drop_pending(struct pi_reload *r, int kind)
{
	r->pending &= ~kind;
}
