/* The run mode (SPEC §1 run, §5): render → wait for upstream hosts →
 * start the child → serve /health → supervise until the child exits; the
 * signals and the exit path. The child lives in child.c, reloads in
 * sup_reload.c and reload.c. */
#include "init/supervise.h"
#include "init/builtins.h"
#include "init/health_log.h"
#include "init/log.h"
#include "init/proc.h"
#include "init/resolver.h"
#include "init/sup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUP_LEFTOVER_GRACE_MS 2000 /* after the child exits */
#define SUP_CLOSE_ROUNDS      8	   /* loop turns that close callbacks get at exit */
#define SUP_LOOP_FDS	      4	   /* epoll, io_uring, libuv's signal pipe */
/* Descriptors /health's connections leave to the rest of the init: a
 * socket and a file (resolv.conf, hosts) for each lookup in flight, a
 * folder per level of a template walk, and 32 for the probe of nginx, a
 * config test's pipes and /dev/null, a render's files and a reload's. */
#define SUP_HEALTH_FD_RESERVE (2 * PI_RESOLVER_MAX_THREADS + PI_TEMPLATES_DEPTH_MAX + 32)

void pi_supervise_template_opts(const struct pi_config *cfg, char *const *envp,
				struct pi_templates_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->dir = cfg->templates_dir;
	o->suffix = cfg->templates_suffix;
	o->output_dir = cfg->templates_output_dir;
	o->stream_suffix = cfg->templates_stream_suffix;
	o->stream_output_dir = cfg->templates_stream_output_dir;
	o->prefix = cfg->templates_prefix;
	o->hosts = cfg->upstreams_hosts;
	o->resolv_conf = NULL;
	/* The renderer asks for a built-in variable when the environment does
	 * not set it and a template refers to it. */
	o->envp = envp;
	o->builtin = pi_builtins_lookup;
	o->builtin_ctx = (void *)envp;
}

void pi_supervise_log_rendered(const struct pi_templates *t, const char *dir)
{
	size_t n = pi_templates_count(t);

	if (n == 0)
		PI_LOG(PI_INFO, "no templates to render", PI_STR("dir", dir));
	for (size_t i = 0; i < n; i++)
		PI_LOG(PI_INFO, "rendered", PI_STR("template", pi_templates_source(t, i)),
		       PI_STR("output", pi_templates_output(t, i)));
}

int pi_supervise_template_code(int rc)
{
	return rc == -EMFILE || rc == -ENFILE ? 2 : 3;
}

/* ---- the exit path --------------------------------------------------- */

static int sup_children_left(void)
{
	/* waitid with WNOWAIT asks without reaping. */
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* Nothing of ours is left (or the grace ran out twice): leave the loop at
 * the end of this turn, whatever is still in the threadpool. */
static void sup_finish_exit(struct sup *s)
{
	uv_timer_stop(&s->exit_timer);
	uv_stop(s->loop);
}

static void on_sup_exit_timer(uv_timer_t *t)
{
	struct sup *s = t->data;

	if (!s->killed_left) {
		int n = pi_proc_signal_leftovers(SIGKILL, s->child_pgid);
		s->killed_left = 1;
		if (n > 0)
			PI_LOG(PI_WARN, "processes left after the child exited; sent SIGKILL");
		uv_timer_start(&s->exit_timer, on_sup_exit_timer, 1000, 0);
		return;
	}
	sup_finish_exit(s);
}

void sup_begin_exit(struct sup *s, int code)
{
	if (s->state == SUP_EXITING)
		return;
	s->state = SUP_EXITING;
	s->exit_code = code;
	s->view.child_pid = 0;
	uv_timer_stop(&s->stop_timer);
	uv_timer_stop(&s->settle_timer);
	s->settle_kind = 0;
	sup_reload_close(s);
	if (s->health) {
		pi_health_server_stop(s->health);
		s->health = NULL;
	}
	if (s->ups) {
		pi_upstreams_close(s->ups);
		s->ups = NULL;
	}
	pi_proc_signal_leftovers(SIGTERM, s->child_pgid);
	if (sup_children_left())
		uv_timer_start(&s->exit_timer, on_sup_exit_timer, SUP_LEFTOVER_GRACE_MS, 0);
	else
		sup_finish_exit(s);
}

/* ---- signals --------------------------------------------------------- */

static void sup_reap(struct sup *s)
{
	int st;
	pid_t pid;

	/* SIGCHLD coalesces: reap until nothing is left to reap. */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == s->child)
			sup_child_exited(s, st);
		else if (pid == s->test_pid)
			sup_reload_test_exited(s, st);
		else
			PI_LOG(PI_DEBUG, "reaped an orphan", PI_INT("pid", (int)pid),
			       PI_INT("status", pi_proc_exit_code(st)));
	}
	if (s->state == SUP_EXITING && !sup_children_left())
		sup_finish_exit(s);
}

static void sup_stop_requested(struct sup *s, int sig)
{
	char name[16];

	s->view.stopping = 1;
	pi_signals_name(sig, name, sizeof(name));
	if (s->state == SUP_EXITING)
		return;
	if (s->state < SUP_RUN) {
		PI_LOG(PI_INFO, "stop requested before the child started; exiting",
		       PI_STR("signal", name));
		sup_begin_exit(s, 0);
		return;
	}
	if (s->state == SUP_RUN) {
		PI_LOG(PI_INFO, "graceful stop requested", PI_STR("signal", name));
		s->state = SUP_STOPPING;
		sup_reload_close(s);
	}
	sup_child_stop_step(s);
}

static void sup_hangup(struct sup *s)
{
	if (s->state == SUP_RUN)
		sup_reload_request(s, PI_RELOAD_RERENDER);
	else if (s->state >= SUP_STOPPING)
		PI_LOG(PI_INFO, "SIGHUP ignored: stopping");
	else
		PI_LOG(PI_WARN, "SIGHUP ignored: nginx is not running");
}

/* Every signal but the faults comes here (signals.c); what the init gives
 * no meaning to goes to the child unchanged, as tini does. */
static void on_sup_signal(int sig, void *data)
{
	struct sup *s = data;

	switch (sig) {
	case SIGCHLD:
		sup_reap(s);
		return;
	case SIGTERM:
	case SIGINT:
		sup_stop_requested(s, sig);
		return;
	case SIGHUP:
		sup_hangup(s);
		return;
	case SIGUSR2:
		PI_LOG(PI_WARN, "SIGUSR2 not forwarded: a binary upgrade would orphan the new "
				"nginx master in an immutable image");
		return;
	default:
		if (s->state == SUP_EXITING)
			PI_LOG(PI_DEBUG, "signal dropped: exiting", PI_INT("signal", sig));
		else
			sup_child_forward(s, sig);
		return;
	}
}

/* ---- start ----------------------------------------------------------- */

/* Whether a signal that decides whether the child starts at all (a stop
 * before it is an exit 0, a hang-up before it is ignored: README, Signals)
 * came before the reader exists: the early start then leaves the child to
 * on_sup_hosts_waited, which reads the signals first. */
static int sup_signal_waiting(void)
{
	static const int decide[] = {SIGTERM, SIGINT, SIGHUP};

	return pi_signals_pending(decide, sizeof(decide) / sizeof(decide[0]));
}

static void on_sup_upstream_change(struct pi_upstreams *u, int stale, void *data)
{
	(void)u;
	if (stale)
		sup_reload_request(data, PI_RELOAD_ADDRESSES);
	else
		sup_reload_moot(data);
}

static void sup_log_unresolved(struct sup *s)
{
	char list[3072]; /* a log line holds 4 KiB: variable names only */
	size_t n = pi_upstreams_unresolved(s->ups, list, sizeof(list));

	PI_LOG(PI_ERROR, "upstream hosts did not resolve in time; nothing started",
	       PI_UINT("wait_ms", (unsigned long long)s->cfg->upstreams_wait_ms),
	       PI_UINT("count", (unsigned long long)n), PI_STR("unresolved", list));
}

/* libuv aborts when it cannot make its process-wide signal pipe inside
 * uv_loop_init: ask first, while nothing else can take a descriptor. */
static int sup_fds_available(int n)
{
	int fds[8], got = 0, rc = 0;

	for (; got < n && got < 8; got++)
		if ((fds[got] = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0)) < 0) {
			rc = errno == EMFILE ? UV_EMFILE : -errno;
			break;
		}
	while (got-- > 0)
		close(fds[got]);
	return rc;
}

static int sup_start_health(struct sup *s)
{
	const struct pi_config *cfg = s->cfg;
	struct pi_health_server_opts ho = {
	    .listen = cfg->health_listen,
	    .path = cfg->health_path,
	    .probe = cfg->health_probe,
	    .version = PI_VERSION,
	    .view = &s->view,
	    .fd_reserve = SUP_HEALTH_FD_RESERVE,
	    .log = pi_init_health_log,
	};
	char why[256];

	if (!*cfg->health_listen)
		return 0;
	if (pi_health_server_start(s->loop, &ho, &s->health, why, sizeof(why)) < 0) {
		PI_LOG(PI_ERROR, "cannot serve health", PI_STR("listen", cfg->health_listen),
		       PI_STR("error", why));
		return -1;
	}
	/* With no descriptor left once the listener is up, libuv answers
	 * EMFILE by accepting and closing every connection: /health would
	 * never answer while the init looked well. One descriptor for a
	 * connection, one for the probe of nginx. */
	if (sup_fds_available(1 + (*cfg->health_probe != '\0')) < 0) {
		PI_LOG(PI_ERROR, "cannot serve health", PI_STR("listen", cfg->health_listen),
		       PI_STR("error", "too many open files: no descriptor left to accept a "
				       "connection (RLIMIT_NOFILE)"));
		pi_health_server_stop(s->health);
		s->health = NULL;
		return -1;
	}
	return 0;
}

/* The child has run SUP_SERVED_MS: a failed start can no longer roll the
 * start's files back, so the links kept for that go (they would stay for
 * the container's life), and the reloads asked for meanwhile start. */
static void on_sup_settled(uv_timer_t *t)
{
	struct sup *s = t->data;
	int kind = s->settle_kind;

	s->settle_kind = 0;
	if (s->tpl)
		pi_templates_settle(s->tpl);
	if (kind)
		sup_reload_request(s, kind);
}

/* The child runs: the end of its first second, the address sets nginx
 * started with, the re-checks, and /health when it is not up yet. */
static void sup_after_child_start(struct sup *s)
{
	if (s->state != SUP_RUN)
		return;
	/* The first second is this timer's: while it runs, an exit is a
	 * failed start and a reload waits (counted from now, not from the
	 * loop's last turn). */
	uv_update_time(s->loop);
	uint64_t ran_ms = uv_hrtime() / 1000000 - s->child_start_ms;
	uv_timer_start(&s->settle_timer, on_sup_settled,
		       ran_ms < SUP_SERVED_MS ? SUP_SERVED_MS - ran_ms : 0, 0);
	pi_upstreams_applied(s->ups, 1); /* nginx starts with these sets */
	if (pi_upstreams_recheck(s->ups, s->cfg->upstreams_recheck_ms, on_sup_upstream_change) < 0)
		PI_LOG(PI_WARN, "cannot re-check upstream hosts; addresses will not be followed");
	if (!s->health && sup_start_health(s) < 0)
		sup_begin_exit(s, 2);
}

/* At start nginx's own start-up is the config test (SPEC §1): no separate
 * nginx.test here; child.c judges an early exit. */
static void on_sup_hosts_waited(struct pi_upstreams *u, int ok, void *data)
{
	struct sup *s = data;

	(void)u;
	if (s->state != SUP_RESOLVE)
		return;
	if (!ok) {
		sup_log_unresolved(s);
		sup_begin_exit(s, 4);
		return;
	}
	/* The wait can end inside sup_start, before any loop turn read the
	 * signals: what is pending is read now, before the child exists, as
	 * the loop would have read it. */
	pi_signals_read(&s->sigs);
	if (s->state != SUP_RESOLVE)
		return;
	sup_child_start(s);
	sup_after_child_start(s);
}

/* Returns 0, or the exit code after logging (pi_supervise_template_code). */
static int sup_render_at_start(struct sup *s)
{
	struct pi_templates_error terr;
	int rc = pi_templates_render(&s->topts, &s->tpl, &terr);

	if (rc == 0)
		rc = pi_templates_commit(s->tpl, &terr);
	if (rc < 0) {
		PI_LOG(PI_ERROR, terr.msg);
		return pi_supervise_template_code(rc);
	}
	pi_supervise_log_rendered(s->tpl, s->topts.dir);
	return 0;
}

/* The upstream module owns the view's upstream entries (copies of every
 * name): a reload that frees the templates leaves them intact. */
static int sup_prepare_hosts(struct sup *s)
{
	int rc = pi_upstreams_new(s->loop, &s->view, s, &s->ups);

	return rc < 0 ? rc : pi_upstreams_sync(s->ups, s->tpl, 0);
}

/* The steps of the start once the loop runs; each failure ends in
 * sup_begin_exit. `early` is sup_run_early's exit code (0: went well);
 * the child may already run then (no host to wait for). Otherwise /health
 * answers during the wait for the hosts. */
static void sup_start(struct sup *s, int early)
{
	int rc;

	if (early != 0) {
		sup_begin_exit(s, early);
		return;
	}
	if ((rc = sup_prepare_hosts(s)) < 0) {
		PI_LOG(PI_ERROR, "cannot prepare the upstream hosts",
		       PI_STR("error", strerror(-rc)));
		sup_begin_exit(s, 2);
		return;
	}
	if (s->child > 0) {
		s->state = SUP_RUN;
		sup_after_child_start(s);
		return;
	}
	s->state = SUP_RESOLVE;
	if (sup_start_health(s) < 0) {
		sup_begin_exit(s, 2);
		return;
	}
	PI_LOG(PI_INFO, "waiting for upstream hosts", PI_UINT("hosts", s->view.n_upstreams),
	       PI_UINT("wait_ms", (unsigned long long)s->cfg->upstreams_wait_ms));
	if ((rc = pi_upstreams_wait(s->ups, s->cfg->upstreams_wait_ms, on_sup_hosts_waited)) < 0) {
		PI_LOG(PI_ERROR, "cannot resolve the upstream hosts",
		       PI_STR("error", strerror(-rc)));
		sup_begin_exit(s, 2);
	}
}

/* Before the loop exists: the render and, when no template names an
 * upstream host, the child. nginx then waits for nothing but the render;
 * the loop, the signal reader and /health are set up while it starts
 * (signals stay blocked, so none is lost: the signal reader finds what is
 * pending). Returns 0 or, after logging, the exit code of the render or
 * of a fork that failed. */
static int sup_run_early(struct sup *s)
{
	int code = sup_render_at_start(s);

	if (code != 0 || pi_templates_nhosts(s->tpl) > 0 || sup_signal_waiting())
		return code;
	/* No thread and no loop exist yet: vfork is safe (proc.h). */
	if ((code = sup_child_spawn(s, PI_SPAWN_VFORK)) == 0)
		(void)pi_signals_wait(SUP_YIELD_MS); /* nginx's start first (sup.h) */
	return code;
}

/* ---- the loop -------------------------------------------------------- */

static void on_sup_walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The loop's handles: the signal reader and the timers. Returns 0, or
 * -1 after logging (the loop is then closed by the caller). */
static int sup_loop_setup(struct sup *s)
{
	uv_timer_t *timers[] = {&s->stop_timer, &s->exit_timer, &s->test_timer, &s->settle_timer,
				&s->confirm_timer};
	int rc;

	for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++) {
		uv_timer_init(s->loop, timers[i]); /* cannot fail on unix */
		timers[i]->data = s;
	}
	if ((rc = pi_signals_start(s->loop, &s->sigs, on_sup_signal, s)) < 0) {
		PI_LOG(PI_ERROR, "cannot read signals", PI_STR("error", strerror(-rc)));
		return -1;
	}
	return 0;
}

/* Closes what is left without waiting for anything: a lookup still in the
 * threadpool must not delay PID 1's exit. Returns 1 when the loop closed,
 * 0 when work is still in flight. */
static int sup_loop_close(uv_loop_t *loop)
{
	uv_walk(loop, on_sup_walk_close, NULL);
	for (int i = 0; i < SUP_CLOSE_ROUNDS && uv_run(loop, UV_RUN_NOWAIT); i++)
		;
	return uv_loop_close(loop) == 0;
}

/* Runs the loop to the end and returns the exit code. When a handle cannot
 * close yet it exits the process here: returning would leave it a loop on
 * a dead stack. (Lookups run on detached threads of their own, which
 * nothing joins.) */
static int sup_loop_run(struct sup *s)
{
	int code;

	uv_run(s->loop, UV_RUN_DEFAULT);
	code = s->exit_code;
	pi_signals_close(&s->sigs);
	if (!sup_loop_close(s->loop)) {
		PI_LOG(PI_DEBUG, "exiting with lookups in flight");
		/* Freeing the sets also drops the hidden links kept for a
		 * rollback, which would otherwise stay in the output folders. */
		pi_templates_free(s->tpl);
		pi_templates_free(s->test_tpl);
		fflush(stdout);
		_exit(code);
	}
	return code;
}

int pi_supervise_loop_init(uv_loop_t *loop)
{
	int rc = sup_fds_available(SUP_LOOP_FDS);

	return rc < 0 ? rc : uv_loop_init(loop);
}

static int sup_split_commands(struct sup *s, char **cmd, char ***own_cmd)
{
	const struct pi_config *cfg = s->cfg;
	int rc;

	/* pi_config_load checked that both split: only memory can fail here. */
	s->cmd_is_nginx = !cmd;
	if (!cmd) {
		if ((rc = pi_config_split(cfg->nginx_command, own_cmd)) < 0) {
			PI_LOG(PI_ERROR, "cannot split nginx.command",
			       PI_STR("error", strerror(-rc)));
			return -1;
		}
		cmd = *own_cmd;
	}
	s->cmd = cmd;
	if (*cfg->nginx_test && (rc = pi_config_split(cfg->nginx_test, &s->test_argv)) < 0) {
		PI_LOG(PI_ERROR, "cannot split nginx.test", PI_STR("error", strerror(-rc)));
		return -1;
	}
	return 0;
}

int pi_supervise_run(const struct pi_config *cfg, char **cmd, char **envp)
{
	struct sup *s = calloc(1, sizeof(*s));
	char **own_cmd = NULL;
	uv_loop_t loop;
	int rc, early = 0, code = 2;

	if (!s) {
		PI_LOG(PI_ERROR, "out of memory");
		return 2;
	}
	if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		PI_LOG(PI_WARN, "cannot become a child subreaper; orphans will not be reaped",
		       PI_STR("error", strerror(errno)));
	s->cfg = cfg;
	s->envp = envp;
	s->sigs.fd = -1;
	s->tty_fd = -1;
	s->view.reload_ok = 1;
	s->view.reload_time = time(NULL);
	pi_supervise_template_opts(cfg, envp, &s->topts);
	if (sup_split_commands(s, cmd, &own_cmd) < 0)
		goto out_free;
	early = sup_run_early(s);
	/* The render has closed what it opened: what is free now is what the
	 * loop gets (a low RLIMIT_NOFILE is one clear error, not libuv's
	 * abort), asked after the early fork, off nginx's way. */
	if ((rc = pi_supervise_loop_init(&loop)) < 0) {
		PI_LOG(PI_ERROR, "cannot start the event loop", PI_STR("error", uv_strerror(rc)));
		goto out_kill;
	}
	s->loop = &loop;
	if (sup_loop_setup(s) < 0) {
		sup_loop_close(&loop);
		goto out_kill;
	}
	sup_start(s, early);
	code = sup_loop_run(s);
	/* The loop ends only through sup_begin_exit, which closed the
	 * upstreams (a handle of a loop now closed). */
	pi_templates_free(s->tpl);
	pi_templates_free(s->test_tpl);
	goto out_free;
out_kill:		/* a child started early has nothing to supervise it */
	if (early != 0) /* the render's or the fork's failure came first */
		code = early;
	if (s->child > 0) {
		kill(-s->child_pgid, SIGKILL);
		waitpid(s->child, NULL, 0);
	}
	pi_templates_free(s->tpl);
out_free:
	pi_config_argv_free(own_cmd);
	pi_config_argv_free(s->test_argv);
	free(s);
	return code;
}
