#include "init/supervise.h"
#include "envsubst/templates.h"
#include "health/server.h"
#include "health/status.h"
#include "init/log.h"
#include "init/proc.h"
#include "init/upstream.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#define KILL_AFTER_TERM_MS 5000 /* stop_timeout's SIGTERM, then SIGKILL */
#define LEFTOVER_GRACE_MS 2000	/* after the child exits */
#define TEST_OUTPUT_MAX 2048

enum state { ST_START, ST_RESOLVE, ST_TEST, ST_RUN, ST_STOPPING, ST_EXITING };
enum test_purpose { TEST_START, TEST_RELOAD };
enum reload_kind { RELOAD_RERENDER = 1, RELOAD_ADDRESSES = 2 };

static const int handled_signals[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP,
				      SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define NSIGNALS (sizeof(handled_signals) / sizeof(handled_signals[0]))

struct sup {
	uv_loop_t *loop;
	const struct pi_config *cfg;
	char **envp;
	char **cmd;
	char **test_argv; /* NULL: the config test is skipped */
	struct pi_templates_opts topts;
	struct pi_templates *tpl; /* the committed set, for rollback */

	struct pi_health_view view;
	struct pi_health_server *health;
	struct pi_upstreams *ups;

	uv_signal_t sig[NSIGNALS];
	uv_timer_t stop_timer;
	uv_timer_t exit_timer;

	enum state state;
	pid_t child;
	int child_code;	  /* exit code of SPEC §7 once the child is gone */
	int stop_step;	  /* 0 none, 1 delaying, 2 stop signal sent, 3 TERM, 4 KILL */
	int killed_left;  /* leftovers got SIGKILL */
	int exit_code;

	/* The config test in flight, if any. */
	pid_t test_pid;
	enum test_purpose test_purpose;
	uv_pipe_t test_pipe;
	int test_pipe_open;
	int test_exited;
	int test_code;
	char test_out[TEST_OUTPUT_MAX];
	size_t test_len;
	struct pi_templates *test_tpl; /* a reload's new set, until judged */

	int reload_busy;
	int reload_pending; /* enum reload_kind bits */
};

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
	o->envp = envp;
}

static void begin_exit(struct sup *s, int code);
static void start_reload(struct sup *s, int kind);

/* ---- the config test ------------------------------------------------ */

static void test_judged(struct sup *s);

static void test_maybe_done(struct sup *s)
{
	if (s->test_pid == 0 && s->test_exited && !s->test_pipe_open)
		test_judged(s);
}

static void on_test_pipe_close(uv_handle_t *h)
{
	struct sup *s = h->data;
	s->test_pipe_open = 0;
	test_maybe_done(s);
}

static void on_test_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char scratch[1024];
	(void)h;
	(void)hint;
	*buf = uv_buf_init(scratch, sizeof(scratch));
}

/* Keeps the last TEST_OUTPUT_MAX bytes: nginx puts the reason last. */
static void on_test_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct sup *s = st->data;

	if (n < 0) {
		uv_close((uv_handle_t *)st, on_test_pipe_close);
		return;
	}
	size_t k = (size_t)n;
	if (k >= TEST_OUTPUT_MAX) {
		memcpy(s->test_out, buf->base + k - (TEST_OUTPUT_MAX - 1), TEST_OUTPUT_MAX - 1);
		s->test_len = TEST_OUTPUT_MAX - 1;
	} else {
		if (s->test_len + k >= TEST_OUTPUT_MAX) {
			size_t drop = s->test_len + k - (TEST_OUTPUT_MAX - 1);
			memmove(s->test_out, s->test_out + drop, s->test_len - drop);
			s->test_len -= drop;
		}
		memcpy(s->test_out + s->test_len, buf->base, k);
		s->test_len += k;
	}
	s->test_out[s->test_len] = '\0';
}

static int start_test(struct sup *s, enum test_purpose purpose)
{
	int p[2], exec_errno;

	s->test_purpose = purpose;
	s->test_len = 0;
	s->test_out[0] = '\0';
	s->test_exited = 0;
	if (!s->test_argv) {
		s->test_exited = 1;
		s->test_code = 0;
		test_judged(s);
		return 0;
	}
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = pi_proc_spawn(s->test_argv, s->envp, p[1], &exec_errno);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return (int)pid;
	}
	if (exec_errno)
		snprintf(s->test_out, sizeof(s->test_out), "cannot execute %s: %s", s->test_argv[0],
			 strerror(exec_errno));
	s->test_len = strlen(s->test_out);
	s->test_pid = pid;
	uv_pipe_init(s->loop, &s->test_pipe, 0);
	s->test_pipe.data = s;
	uv_pipe_open(&s->test_pipe, p[0]);
	s->test_pipe_open = 1;
	uv_read_start((uv_stream_t *)&s->test_pipe, on_test_alloc, on_test_read);
	return 0;
}

/* nginx's reason: the first line naming an [emerg] (nginx -t -q prints
 * the cause first and "test failed" last), else the last non-empty line. */
static const char *test_reason(struct sup *s, char *buf, size_t len)
{
	char *p = strstr(s->test_out, "[emerg]");
	char *start, *end;

	if (p) {
		start = p;
		while (start > s->test_out && start[-1] != '\n')
			start--;
		end = strchr(p, '\n');
		if (!end)
			end = s->test_out + s->test_len;
	} else {
		end = s->test_out + s->test_len;
		while (end > s->test_out && (end[-1] == '\n' || end[-1] == '\r'))
			end--;
		start = end;
		while (start > s->test_out && start[-1] != '\n')
			start--;
	}
	if (start == end)
		snprintf(buf, len, "config test exited with status %d", s->test_code);
	else
		snprintf(buf, len, "%.*s", (int)(end - start), start);
	return buf;
}

/* ---- the child ------------------------------------------------------ */

static void start_child(struct sup *s)
{
	int exec_errno;

	pid_t pid = pi_proc_spawn(s->cmd, s->envp, -1, &exec_errno);
	if (pid < 0) {
		PI_LOG(PI_ERROR, "cannot start the command", PI_STR("command", s->cmd[0]),
		       PI_STR("error", strerror((int)-pid)));
		begin_exit(s, 126);
		return;
	}
	if (exec_errno) {
		/* The child exits 127/126 and is reaped like any other. */
		PI_LOG(PI_ERROR, "cannot execute the command", PI_STR("command", s->cmd[0]),
		       PI_STR("error", strerror(exec_errno)));
	} else {
		PI_LOG(PI_INFO, "started", PI_STR("command", s->cmd[0]), PI_INT("pid", pid));
	}
	s->child = pid;
	s->view.child_pid = pid;
	s->state = ST_RUN;
}

static void signal_child(struct sup *s, int sig)
{
	if (s->child > 0 && kill(s->child, sig) < 0 && errno != ESRCH)
		PI_LOG(PI_WARN, "cannot signal the child", PI_STR("signal", strsignal(sig)),
		       PI_STR("error", strerror(errno)));
}

static void on_upstream_change(struct pi_upstreams *u, void *data)
{
	(void)u;
	start_reload(data, RELOAD_ADDRESSES);
}

static void test_judged(struct sup *s)
{
	char why[256];
	int ok = s->test_code == 0;

	if (s->test_purpose == TEST_START) {
		if (s->state != ST_TEST)
			return; /* a stop came first */
		if (!ok) {
			PI_LOG(PI_ERROR, "config test failed; nothing started",
			       PI_STR("reason", test_reason(s, why, sizeof(why))));
			if (s->tpl && pi_templates_rollback(s->tpl) < 0)
				PI_LOG(PI_ERROR, "cannot restore the previous output files");
			begin_exit(s, 5);
			return;
		}
		start_child(s);
		if (s->ups && s->state == ST_RUN)
			pi_upstreams_recheck(s->ups, s->cfg->upstreams_recheck_ms, on_upstream_change);
		return;
	}

	/* A reload. */
	s->view.reload_time = time(NULL);
	if (ok && s->state == ST_RUN) {
		signal_child(s, SIGHUP);
		if (s->test_tpl) {
			pi_templates_free(s->tpl);
			s->tpl = s->test_tpl;
			s->test_tpl = NULL;
		}
		s->view.reload_ok = 1;
		s->view.reload_error[0] = '\0';
		PI_LOG(PI_INFO, "reloaded nginx");
	} else {
		if (s->test_tpl) {
			if (pi_templates_rollback(s->test_tpl) < 0)
				PI_LOG(PI_ERROR, "cannot restore the previous output files");
			pi_templates_free(s->test_tpl);
			s->test_tpl = NULL;
		}
		if (!ok) {
			test_reason(s, why, sizeof(why));
			snprintf(s->view.reload_error, sizeof(s->view.reload_error),
				 "config test failed: %.200s", why);
			s->view.reload_ok = 0;
			PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config",
			       PI_STR("reason", s->view.reload_error));
		}
	}
	s->reload_busy = 0;
	if (s->reload_pending && s->state == ST_RUN) {
		int kind = s->reload_pending;
		s->reload_pending = 0;
		start_reload(s, kind);
	}
}

static void reload_failed(struct sup *s, const char *why)
{
	snprintf(s->view.reload_error, sizeof(s->view.reload_error), "%s", why);
	s->view.reload_ok = 0;
	s->view.reload_time = time(NULL);
	PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config", PI_STR("reason", why));
	s->reload_busy = 0;
}

static void start_reload(struct sup *s, int kind)
{
	struct pi_templates_error terr;

	if (s->state != ST_RUN)
		return;
	if (s->reload_busy) {
		s->reload_pending |= kind;
		return;
	}
	s->reload_busy = 1;
	PI_LOG(PI_INFO, "reloading",
	       PI_STR("reason", kind & RELOAD_RERENDER ? "SIGHUP" : "upstream addresses changed"));
	if (kind & RELOAD_RERENDER) {
		struct pi_templates *t = NULL;
		if (pi_templates_render(&s->topts, &t, &terr) < 0) {
			reload_failed(s, terr.msg);
			return;
		}
		if (pi_templates_missing(t)) {
			/* At start a missing folder renders nothing (SPEC §3); at a
			 * reload it is an operator's mistake: keep what runs. */
			char why[256];
			snprintf(why, sizeof(why),
				 "templates folder %.150s is gone; the rendered files stay",
				 s->topts.dir);
			pi_templates_free(t);
			reload_failed(s, why);
			return;
		}
		if (pi_templates_commit(t, &terr) < 0) {
			pi_templates_free(t);
			reload_failed(s, terr.msg);
			return;
		}
		s->test_tpl = t;
	}
	int rc = start_test(s, TEST_RELOAD);
	if (rc < 0) {
		char why[128];
		snprintf(why, sizeof(why), "cannot run the config test: %s", strerror(-rc));
		if (s->test_tpl) {
			pi_templates_rollback(s->test_tpl);
			pi_templates_free(s->test_tpl);
			s->test_tpl = NULL;
		}
		reload_failed(s, why);
	}
}

/* ---- stopping ------------------------------------------------------- */

static void stop_step(struct sup *s);

static void on_stop_timer(uv_timer_t *t)
{
	stop_step(t->data);
}

/* Moves the graceful stop one step on: delay → stop signal → SIGTERM →
 * SIGKILL. A timer or a second SIGTERM/SIGINT calls it. */
static void stop_step(struct sup *s)
{
	const struct pi_config *c = s->cfg;

	uv_timer_stop(&s->stop_timer);
	switch (s->stop_step) {
	case 0:
		s->stop_step = 1;
		if (c->nginx_stop_delay_ms > 0) {
			PI_LOG(PI_INFO, "draining before stop",
			       PI_UINT("delay_ms", c->nginx_stop_delay_ms));
			uv_timer_start(&s->stop_timer, on_stop_timer, c->nginx_stop_delay_ms, 0);
			return;
		}
		/* fall through */
	case 1:
		s->stop_step = 2;
		PI_LOG(PI_INFO, "stopping the child",
		       PI_STR("signal", pi_config_signal_name(c->nginx_stop_signal)));
		signal_child(s, c->nginx_stop_signal);
		uv_timer_start(&s->stop_timer, on_stop_timer, c->nginx_stop_timeout_ms, 0);
		return;
	case 2:
		s->stop_step = 3;
		PI_LOG(PI_WARN, "the child did not stop in time; sending SIGTERM");
		signal_child(s, SIGTERM);
		uv_timer_start(&s->stop_timer, on_stop_timer, KILL_AFTER_TERM_MS, 0);
		return;
	default:
		s->stop_step = 4;
		PI_LOG(PI_WARN, "the child did not stop; sending SIGKILL");
		signal_child(s, SIGKILL);
		if (s->child > 0)
			kill(-s->child, SIGKILL);
		return;
	}
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* No child of ours is left (or the grace ran out twice): leave the loop. */
static void finish_exit(struct sup *s)
{
	uv_timer_stop(&s->exit_timer);
	for (size_t i = 0; i < NSIGNALS; i++)
		close_handle((uv_handle_t *)&s->sig[i]);
	close_handle((uv_handle_t *)&s->stop_timer);
	close_handle((uv_handle_t *)&s->exit_timer);
	if (s->test_pipe_open)
		close_handle((uv_handle_t *)&s->test_pipe);
}

static int children_left(void)
{
	/* waitid with WNOWAIT asks without reaping. */
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

static void on_exit_timer(uv_timer_t *t)
{
	struct sup *s = t->data;

	if (!s->killed_left) {
		int n = pi_proc_signal_leftovers(SIGKILL, s->child);
		s->killed_left = 1;
		if (n > 0)
			PI_LOG(PI_WARN, "processes left after the child exited; sent SIGKILL");
		uv_timer_start(&s->exit_timer, on_exit_timer, 1000, 0);
		return;
	}
	finish_exit(s);
}

static void begin_exit(struct sup *s, int code)
{
	if (s->state == ST_EXITING)
		return;
	s->state = ST_EXITING;
	s->exit_code = code;
	s->view.child_pid = 0;
	uv_timer_stop(&s->stop_timer);
	if (s->health) {
		pi_health_server_stop(s->health);
		s->health = NULL;
	}
	if (s->ups) {
		pi_upstreams_close(s->ups);
		s->ups = NULL;
	}
	if (s->test_pid > 0)
		kill(s->test_pid, SIGKILL);
	if (pi_proc_signal_leftovers(SIGTERM, s->child) > 0 && children_left()) {
		uv_timer_start(&s->exit_timer, on_exit_timer, LEFTOVER_GRACE_MS, 0);
		return;
	}
	if (children_left()) {
		uv_timer_start(&s->exit_timer, on_exit_timer, LEFTOVER_GRACE_MS, 0);
		return;
	}
	finish_exit(s);
}

/* ---- signals -------------------------------------------------------- */

static void reap(struct sup *s)
{
	int st;
	pid_t pid;

	/* SIGCHLD coalesces: reap until nothing is left to reap. */
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == s->child) {
			int code = pi_proc_exit_code(st);
			s->child = 0;
			s->view.child_pid = 0;
			if (s->state == ST_STOPPING)
				PI_LOG(PI_INFO, "the child stopped", PI_INT("status", code));
			else
				PI_LOG(PI_ERROR, "the child exited unexpectedly",
				       PI_INT("status", code));
			begin_exit(s, code);
		} else if (pid == s->test_pid) {
			s->test_pid = 0;
			s->test_exited = 1;
			s->test_code = pi_proc_exit_code(st);
			test_maybe_done(s);
		} else {
			PI_LOG(PI_DEBUG, "reaped an orphan", PI_INT("pid", pid),
			       PI_INT("status", pi_proc_exit_code(st)));
		}
	}
	if (s->state == ST_EXITING && !children_left())
		finish_exit(s);
}

static void on_signal(uv_signal_t *h, int sig)
{
	struct sup *s = h->data;

	switch (sig) {
	case SIGCHLD:
		reap(s);
		return;
	case SIGTERM:
	case SIGINT:
		s->view.stopping = 1;
		if (s->state == ST_EXITING)
			return;
		if (s->state < ST_RUN) {
			PI_LOG(PI_INFO, "stop requested before the child started; exiting",
			       PI_STR("signal", pi_config_signal_name(sig)));
			begin_exit(s, 0);
			return;
		}
		if (s->state == ST_RUN) {
			PI_LOG(PI_INFO, "graceful stop requested",
			       PI_STR("signal", pi_config_signal_name(sig)));
			s->state = ST_STOPPING;
		}
		stop_step(s);
		return;
	case SIGHUP:
		if (s->state == ST_RUN)
			start_reload(s, RELOAD_RERENDER);
		else
			PI_LOG(PI_WARN, "SIGHUP ignored: nginx is not running");
		return;
	case SIGUSR2:
		PI_LOG(PI_WARN,
		       "SIGUSR2 not forwarded: a binary upgrade would orphan the new "
		       "nginx master in an immutable image");
		return;
	default: /* SIGQUIT, SIGUSR1, SIGWINCH */
		if (s->child > 0) {
			PI_LOG(PI_INFO, "forwarding a signal",
			       PI_STR("signal", pi_config_signal_name(sig)));
			signal_child(s, sig);
		} else {
			PI_LOG(PI_WARN, "signal dropped: no child",
			       PI_STR("signal", pi_config_signal_name(sig)));
		}
		return;
	}
}

/* ---- start ---------------------------------------------------------- */

static void on_hosts_waited(struct pi_upstreams *u, int ok, void *data)
{
	struct sup *s = data;

	if (s->state != ST_RESOLVE)
		return;
	if (!ok) {
		char list[1024];
		size_t used = 0;
		list[0] = '\0';
		for (size_t i = 0; i < s->view.n_upstreams && used < sizeof(list); i++) {
			struct pi_health_upstream *h = &s->view.upstreams[i];
			if (!h->resolved)
				used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s=%s",
							 used ? " " : "", h->var, h->host);
		}
		PI_LOG(PI_ERROR, "upstream hosts did not resolve in time; nothing started",
		       PI_UINT("wait_ms", s->cfg->upstreams_wait_ms), PI_STR("unresolved", list));
		begin_exit(s, 4);
		return;
	}
	(void)u;
	s->state = ST_TEST;
	int rc = start_test(s, TEST_START);
	if (rc < 0) {
		PI_LOG(PI_ERROR, "cannot run the config test", PI_STR("error", strerror(-rc)));
		begin_exit(s, 5);
	}
}

static int render_at_start(struct sup *s)
{
	struct pi_templates_error terr;

	if (pi_templates_render(&s->topts, &s->tpl, &terr) < 0 ||
	    pi_templates_commit(s->tpl, &terr) < 0) {
		PI_LOG(PI_ERROR, terr.msg);
		return -1;
	}
	size_t n = pi_templates_count(s->tpl);
	if (n == 0)
		PI_LOG(PI_INFO, "no templates to render", PI_STR("dir", s->topts.dir));
	for (size_t i = 0; i < n; i++)
		PI_LOG(PI_INFO, "rendered", PI_STR("template", pi_templates_source(s->tpl, i)),
		       PI_STR("output", pi_templates_output(s->tpl, i)));
	return 0;
}

static int prepare_hosts(struct sup *s)
{
	size_t n = pi_templates_nhosts(s->tpl);

	s->view.upstreams = calloc(n ? n : 1, sizeof(*s->view.upstreams));
	if (!s->view.upstreams)
		return -ENOMEM;
	s->view.n_upstreams = n;
	for (size_t i = 0; i < n; i++)
	{
		const char *var, *host;
		pi_templates_host(s->tpl, i, &var, &host);
		pi_health_upstream_name(&s->view.upstreams[i], var, host);
	}
	return pi_upstreams_new(s->loop, s->view.upstreams, n, s, &s->ups);
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int pi_supervise_run(const struct pi_config *cfg, char **cmd, char **envp)
{
	struct sup *s = calloc(1, sizeof(*s));
	char **own_cmd = NULL;
	uv_loop_t loop;
	int rc, code = 2;

	if (!s)
		return 2;
	if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		PI_LOG(PI_WARN, "cannot become a child subreaper; orphans will not be reaped",
		       PI_STR("error", strerror(errno)));
	/* A client hanging up must not kill PID 1 through SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);

	s->cfg = cfg;
	s->envp = envp;
	s->view.reload_ok = 1;
	s->view.reload_time = time(NULL);
	pi_supervise_template_opts(cfg, envp, &s->topts);
	/* pi_config_load checked that both split: only memory can fail here. */
	if (!cmd) {
		if ((rc = pi_config_split(cfg->nginx_command, &own_cmd)) < 0) {
			PI_LOG(PI_ERROR, "cannot split nginx.command",
			       PI_STR("error", strerror(-rc)));
			goto out_free;
		}
		cmd = own_cmd;
	}
	s->cmd = cmd;
	if (*cfg->nginx_test && (rc = pi_config_split(cfg->nginx_test, &s->test_argv)) < 0) {
		PI_LOG(PI_ERROR, "cannot split nginx.test", PI_STR("error", strerror(-rc)));
		goto out_free;
	}

	uv_loop_init(&loop);
	s->loop = &loop;
	for (size_t i = 0; i < NSIGNALS; i++) {
		uv_signal_init(&loop, &s->sig[i]);
		s->sig[i].data = s;
		uv_signal_start(&s->sig[i], on_signal, handled_signals[i]);
	}
	uv_timer_init(&loop, &s->stop_timer);
	uv_timer_init(&loop, &s->exit_timer);
	s->stop_timer.data = s->exit_timer.data = s;

	if (*cfg->health_listen) {
		struct pi_health_server_opts ho = {
			.listen = cfg->health_listen,
			.path = cfg->health_path,
			.probe = cfg->health_probe,
			.version = PI_VERSION,
			.view = &s->view,
		};
		char why[256];
		rc = pi_health_server_start(&loop, &ho, &s->health, why, sizeof(why));
		if (rc < 0) {
			PI_LOG(PI_ERROR, "cannot serve health",
			       PI_STR("listen", cfg->health_listen), PI_STR("error", why));
			begin_exit(s, 2);
			goto run;
		}
	}

	if (render_at_start(s) < 0) {
		begin_exit(s, 3);
		goto run;
	}
	if (prepare_hosts(s) < 0) {
		begin_exit(s, 2);
		goto run;
	}
	s->state = ST_RESOLVE;
	if (s->view.n_upstreams > 0)
		PI_LOG(PI_INFO, "waiting for upstream hosts", PI_UINT("hosts", s->view.n_upstreams),
		       PI_UINT("wait_ms", cfg->upstreams_wait_ms));
	pi_upstreams_wait(s->ups, cfg->upstreams_wait_ms, on_hosts_waited);

run:
	uv_run(&loop, UV_RUN_DEFAULT);
	code = s->exit_code;
	uv_walk(&loop, on_walk_close, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	pi_templates_free(s->tpl);
	pi_templates_free(s->test_tpl);
	free(s->view.upstreams);
out_free:
	pi_config_argv_free(own_cmd);
	pi_config_argv_free(s->test_argv);
	free(s);
	return code;
}
