#include "init/reload.h"

/* Ends the transaction in flight; starts the pending one if any. */
static int reload_verdict(struct pi_reload *r, enum pi_reload_why why)
{
	int act;

	r->busy = 0;
	r->why = why;
	r->why_code = r->test_code;
	act = why == PI_RELOAD_OK ? PI_RELOAD_DO_COMMIT : PI_RELOAD_DO_ROLLBACK;
	if (r->pending && !r->closed) {
		int kind = r->pending;
		r->pending = 0;
		act |= pi_reload_request(r, kind);
	}
	return act;
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
	r->kind = kind;
	r->test_exited = 0;
	r->test_code = 0;
	r->pipe_closed = 0;
	return PI_RELOAD_DO_START;
}

int pi_reload_prepare_failed(struct pi_reload *r)
{
	if (!r->busy)
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
	if (!r->busy || r->test_exited)
		return 0;
	r->test_exited = 1;
	r->test_code = code;
	return reload_test_done(r);
}

int pi_reload_pipe_closed(struct pi_reload *r)
{
	if (!r->busy || r->pipe_closed)
		return 0;
	r->pipe_closed = 1;
	return reload_test_done(r);
}

int pi_reload_timeout(struct pi_reload *r)
{
	return r->busy ? PI_RELOAD_DO_KILL | reload_verdict(r, PI_RELOAD_TIMED_OUT) : 0;
}

int pi_reload_close(struct pi_reload *r)
{
	r->closed = 1;
	r->pending = 0;
	return r->busy ? PI_RELOAD_DO_KILL | reload_verdict(r, PI_RELOAD_ABANDONED) : 0;
}
