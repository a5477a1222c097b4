/* A reload as a transaction (SPEC §5 SIGHUP, §4 address changes): the pure
 * state machine, with no process, file or loop in it, so that every way a
 * reload can end is tested without processes (tests/unit/test_reload.c).
 * The supervisor feeds it events and carries out what each call returns.
 *
 * One reload is in flight at a time. It prepares (re-renders and commits
 * the new files when its kind has PI_RELOAD_RERENDER), runs the config
 * test, and ends in exactly one verdict: commit (nginx gets SIGHUP, the new
 * files stay) or rollback (the old files come back, nginx is not
 * signalled). A commit stays in flight until the caller says whether
 * nginx took it (pi_reload_confirmed): its new workers are its proof, and
 * a reload started sooner would take them for its own. Requests that
 * arrive meanwhile are merged into one pending reload that starts after
 * the verdict, or after the confirmation of a commit. */
#ifndef PI_RELOAD_H
#define PI_RELOAD_H

enum pi_reload_kind { PI_RELOAD_RERENDER = 1, PI_RELOAD_ADDRESSES = 2 };

/* Why a transaction is rolled back (or, NOT_TAKEN, came to nothing). */
enum pi_reload_why {
	PI_RELOAD_OK = 0,
	PI_RELOAD_PREPARE_FAILED, /* render, commit or spawn of the test failed */
	PI_RELOAD_TEST_FAILED,	  /* the test exited non-zero */
	PI_RELOAD_TIMED_OUT,	  /* the test ran past its deadline */
	PI_RELOAD_ABANDONED,	  /* a stop was asked for, or the child exited */
	PI_RELOAD_NOT_TAKEN,	  /* committed, and nginx kept its running config */
};

/* What the caller must do, in this order, after a call (bits). */
enum pi_reload_action {
	PI_RELOAD_DO_KILL = 1,	   /* kill the test's process group, close its pipe */
	PI_RELOAD_DO_COMMIT = 2,   /* keep the new files, SIGHUP to the child */
	PI_RELOAD_DO_ROLLBACK = 4, /* restore the old files; r->why says why */
	PI_RELOAD_DO_START = 8,	   /* prepare and start the test for r->kind */
};

struct pi_reload {
	int busy;    /* a transaction is in flight */
	int kind;    /* its enum pi_reload_kind bits */
	int pending; /* kinds asked for while busy */
	int closed;  /* no reload will ever start again (stopping) */
	int test_exited;
	int test_code; /* the test's exit code once exited */
	int pipe_closed;
	int confirming; /* committed; in flight until pi_reload_confirmed */
	enum pi_reload_why why; /* of the last verdict */
	int why_code;		/* the test's exit code at the last verdict */
};

/* Every call returns enum pi_reload_action bits; 0 means nothing to do.
 * An event that does not belong to the transaction in flight (none is, or
 * it already has its verdict) is ignored. */

/* A reload of kind is asked for. Returns START, or 0 when it was merged
 * into the pending one or the machine is closed. */
int pi_reload_request(struct pi_reload *r, int kind);

/* The preparation or the test's spawn failed: ROLLBACK, then maybe START
 * (the pending reload). An address change merged into a failed re-render
 * becomes pending again on its own, so it still reaches nginx. */
int pi_reload_prepare_failed(struct pi_reload *r);

/* The test process exited with code; its output pipe reached end of file. A
 * verdict needs both (nginx's reason is the last thing it writes). */
int pi_reload_test_exited(struct pi_reload *r, int code);
int pi_reload_pipe_closed(struct pi_reload *r);

/* The test's deadline passed: KILL | ROLLBACK, then maybe START. */
int pi_reload_timeout(struct pi_reload *r);

/* Stopping, or the child is gone: no reload starts again; one in flight
 * ends at once with KILL | ROLLBACK (a committed one with nothing: its
 * SIGHUP was sent). */
int pi_reload_close(struct pi_reload *r);

/* After a commit: whether nginx took it (ok) or kept its running config.
 * Ends the transaction; returns START when one is pending, else 0. */
int pi_reload_confirmed(struct pi_reload *r, int ok);

/* Drops kind from the pending reload (asked for while a commit waited for
 * its confirmation, and settled by it). */
void pi_reload_drop_pending(struct pi_reload *r, int kind);

#endif
