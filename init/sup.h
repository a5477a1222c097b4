/* The supervisor's shared state: internal to supervise.c (setup, signals,
 * exit), child.c (the child and its stop) and sup_reload.c (the reload
 * transaction's steps). Not a public contract; see supervise.h for that. */
#ifndef PI_SUP_H
#define PI_SUP_H

#include "envsubst/templates.h"
#include "health/server.h"
#include "health/status.h"
#include "init/config.h"
#include "init/reload.h"
#include "init/signals.h"
#include "init/upstream.h"

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define SUP_TEST_OUTPUT_MAX 2048

/* At start nginx's own start-up is the config test: it parses everything
 * and exits 1 with [emerg] within milliseconds, before it accepts a
 * connection (the hosts it resolves have just been resolved by the init).
 * A child that exits non-zero sooner than this after its start has never
 * served. Reloads wait until the child has run this long: nginx installs
 * its signal handlers only once its config is parsed, and a SIGHUP before
 * that ends it; so does the stop signal (QUIT's default action is a core
 * dump). settle_timer measures it (supervise.c). */
#define SUP_SERVED_MS 1000

/* With the child started before the loop exists (no upstream host to wait
 * for), the init's own set-up (event loop, signal reader, /health) waits
 * this long, or until a signal is pending, whichever comes first: nginx's
 * start-up (parsing, forking workers) is what its first answer waits for,
 * and on one CPU, or a fraction of one, the set-up took turns with it
 * (0.3 ms of a 7 ms start). A signal (a stop, nginx's early exit) ends
 * the wait at once. */
#define SUP_YIELD_MS 20

/* nginx's worker and helper processes looked at to confirm a reload. */
#define SUP_WORKERS_MAX 1024
/* How often a reload's confirmation looks for nginx's new workers: at
 * first, and at most (doubling in between). */
#define SUP_CONFIRM_POLL_MS	20
#define SUP_CONFIRM_POLL_MAX_MS 500

enum sup_state { SUP_START, SUP_RESOLVE, SUP_RUN, SUP_STOPPING, SUP_EXITING };

/* One config test's output pipe. Heap-allocated per test, so a test that is
 * killed can still be closing while the next one starts; freed in its
 * close callback. */
struct sup_test_pipe {
	uv_pipe_t pipe;
	struct sup *s;
	int current; /* 0 once abandoned: its end says nothing any more */
};

struct sup {
	uv_loop_t *loop;
	const struct pi_config *cfg;
	char **envp;
	char **cmd;
	int cmd_is_nginx; /* cmd is nginx.command, not a -- COMMAND */
	char **test_argv; /* NULL: the config test is skipped */
	struct pi_templates_opts topts;
	struct pi_templates *tpl; /* the committed set, for rollback */

	struct pi_health_view view;
	struct pi_health_server *health;
	struct pi_upstreams *ups;

	struct pi_signals sigs;
	uv_timer_t stop_timer;
	uv_timer_t exit_timer;
	uv_timer_t test_timer;
	uv_timer_t settle_timer; /* the end of the child's first second */
	int settle_kind;	 /* the PI_RELOAD_* kinds asked for before it */
	int rejected_kind;	 /* of the last reload, when it was rejected */
	/* After a reload's SIGHUP, until nginx shows a new worker (it took
	 * the config) or confirm_due_ms passes (it kept the old one). */
	uv_timer_t confirm_timer;
	pid_t workers[SUP_WORKERS_MAX]; /* nginx's children before the SIGHUP */
	size_t nworkers;
	uint64_t confirm_due_ms; /* uv_now */

	enum sup_state state;
	pid_t child;		 /* 0 once reaped */
	pid_t child_pgid;	 /* stays after the reap, for the leftovers */
	int tty_fd;		 /* the terminal the child has, or -1 */
	uint64_t child_start_ms; /* uv_hrtime() in ms */
	int child_exec_failed;	 /* exec failed: its 127/126 is no config test */
	int stop_step;		 /* 0 none, 1 delaying, 2 stop signal sent, 3 TERM, 4 KILL */
	int killed_left;	 /* leftovers got SIGKILL */
	int exit_code;

	/* The reload transaction and its config test. */
	struct pi_reload reload;
	struct pi_templates *test_tpl; /* a reload's new set, until judged */
	struct sup_test_pipe *test_pipe;
	pid_t test_pid;	 /* 0 once reaped */
	pid_t test_pgid; /* stays after the reap: a grandchild may hold the pipe */
	char test_out[SUP_TEST_OUTPUT_MAX];
	size_t test_len;
};

/* child.c */
/* Forks and execs s->cmd and records the child; uses no loop (the start
 * calls it before the loop exists when nothing is waited for, with
 * PI_SPAWN_VFORK: see pi_proc_spawn). Returns 0
 * (an exec failure included: the child exits 127/126) or, after logging,
 * the exit code for a fork that failed. */
int sup_child_spawn(struct sup *s, int flags);
/* sup_child_spawn, then state SUP_RUN, or the exit on failure. */
void sup_child_start(struct sup *s);
void sup_child_signal(struct sup *s, int sig);
void sup_child_forward(struct sup *s, int sig);
void sup_child_stop_step(struct sup *s);
void sup_child_exited(struct sup *s, int wstatus);

/* sup_reload.c */
void sup_reload_request(struct sup *s, int kind);
void sup_reload_test_exited(struct sup *s, int wstatus);
void sup_reload_close(struct sup *s);
/* The addresses are back to the ones nginx runs with: a rejected reload
 * of addresses alone is no longer owed (/health passes again). */
void sup_reload_moot(struct sup *s);

/* supervise.c */
void sup_begin_exit(struct sup *s, int code);

#endif
