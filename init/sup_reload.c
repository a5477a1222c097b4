/* The reload transaction's steps (SPEC §5 SIGHUP, §4): the state machine
 * in reload.c decides, this file acts — re-render and commit, run the
 * config test under its deadline, then commit (SIGHUP to the child) or
 * roll back, and log which. */
#include "init/log.h"
#include "init/proc.h"
#include "init/sup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void sup_reload_apply(struct sup *s, int act);

/* How long nginx may take to load a reload: its parse is the config
 * test's, so the same bound (30 s when the test has none). */
static uint64_t sup_confirm_ms(const struct sup *s)
{
	return s->cfg->nginx_test_timeout_ms ? s->cfg->nginx_test_timeout_ms : 30000;
}

/* ---- the config test's output ---------------------------------------- */

static void on_sup_test_pipe_close(uv_handle_t *h)
{
	struct sup_test_pipe *tp = h->data;
	struct sup *s = tp->s;
	int current = tp->current;

	free(tp);
	if (current) {
		s->test_pipe = NULL;
		sup_reload_apply(s, pi_reload_pipe_closed(&s->reload));
	}
}

static void on_sup_test_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	static char scratch[1024];
	(void)h;
	(void)hint;
	*buf = uv_buf_init(scratch, sizeof(scratch));
}

/* Keeps the last SUP_TEST_OUTPUT_MAX bytes: nginx puts the reason last. */
static void sup_test_keep(struct sup *s, const char *p, size_t k)
{
	const size_t room = SUP_TEST_OUTPUT_MAX - 1;

	if (k >= room) {
		memcpy(s->test_out, p + k - room, room);
		s->test_len = room;
	} else {
		if (s->test_len + k > room) {
			size_t drop = s->test_len + k - room;
			memmove(s->test_out, s->test_out + drop, s->test_len - drop);
			s->test_len -= drop;
		}
		memcpy(s->test_out + s->test_len, p, k);
		s->test_len += k;
	}
	s->test_out[s->test_len] = '\0';
}

static void on_sup_test_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct sup_test_pipe *tp = st->data;

	if (n < 0) {
		uv_close((uv_handle_t *)st, on_sup_test_pipe_close);
		return;
	}
	if (tp->current)
		sup_test_keep(tp->s, buf->base, (size_t)n);
}

/* The test's pipe says nothing more about this reload: close it (a
 * grandchild may hold its other end open for ever). */
static void sup_test_pipe_drop(struct sup *s)
{
	struct sup_test_pipe *tp = s->test_pipe;

	if (!tp)
		return;
	s->test_pipe = NULL;
	tp->current = 0;
	if (!uv_is_closing((uv_handle_t *)&tp->pipe))
		uv_close((uv_handle_t *)&tp->pipe, on_sup_test_pipe_close);
}

/* nginx's reason: the first line naming an [emerg] (nginx -t -q prints
 * the cause first and "test failed" last), else the last non-empty line. */
static const char *sup_test_reason(struct sup *s, char *buf, size_t len)
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
		snprintf(buf, len, "config test exited with status %d", s->reload.why_code);
	else
		snprintf(buf, len, "%.*s", (int)(end - start), start);
	return buf;
}

/* ---- running the config test ----------------------------------------- */

static void on_sup_test_timer(uv_timer_t *t)
{
	struct sup *s = t->data;

	sup_reload_apply(s, pi_reload_timeout(&s->reload));
}

/* Opens the read end on the loop. Returns 0 or a negative errno; on
 * failure the pipe is closing and fd is closed. */
static int sup_test_pipe_open(struct sup_test_pipe *tp, int fd)
{
	int rc = uv_pipe_open(&tp->pipe, fd);

	if (rc < 0)
		close(fd);
	else
		rc = uv_read_start((uv_stream_t *)&tp->pipe, on_sup_test_alloc, on_sup_test_read);
	if (rc < 0)
		uv_close((uv_handle_t *)&tp->pipe, on_sup_test_pipe_close);
	return rc;
}

/* Spawns nginx.test with its output into a pipe. Returns 0 or a negative
 * errno (nothing left running). */
static int sup_test_spawn(struct sup *s)
{
	struct sup_test_pipe *tp;
	int p[2], exec_errno, rc;

	s->test_len = 0;
	s->test_out[0] = '\0';
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	if (!(tp = calloc(1, sizeof(*tp)))) {
		close(p[0]);
		close(p[1]);
		return -ENOMEM;
	}
	tp->s = s;
	tp->pipe.data = tp;
	if ((rc = uv_pipe_init(s->loop, &tp->pipe, 0)) < 0) {
		free(tp);
		close(p[0]);
		close(p[1]);
		return rc;
	}
	tp->pipe.data = tp;
	pid_t pid = pi_proc_spawn(s->test_argv, s->envp, p[1], -1, &exec_errno,
				  PI_SPAWN_NO_STOPS);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		uv_close((uv_handle_t *)&tp->pipe, on_sup_test_pipe_close);
		return (int)pid;
	}
	if ((rc = sup_test_pipe_open(tp, p[0])) < 0) {
		kill(-pid, SIGKILL); /* reaped as an orphan */
		return rc;
	}
	if (exec_errno)
		snprintf(s->test_out, sizeof(s->test_out), "cannot execute %s: %s", s->test_argv[0],
			 strerror(exec_errno));
	s->test_len = strlen(s->test_out);
	s->test_pid = pid;
	s->test_pgid = pid;
	tp->current = 1;
	s->test_pipe = tp;
	if (s->cfg->nginx_test_timeout_ms > 0)
		uv_timer_start(&s->test_timer, on_sup_test_timer, s->cfg->nginx_test_timeout_ms, 0);
	return 0;
}

/* The KILL action: the test's whole process group, and its pipe. The test
 * is reaped later; its exit no longer counts. */
static void sup_test_kill(struct sup *s)
{
	if (s->test_pgid > 0)
		kill(-s->test_pgid, SIGKILL);
	s->test_pgid = 0;
	sup_test_pipe_drop(s);
}

void sup_reload_test_exited(struct sup *s, int wstatus)
{
	s->test_pid = 0;
	sup_reload_apply(s, pi_reload_test_exited(&s->reload, pi_proc_exit_code(wstatus)));
}

/* ---- preparing and judging ------------------------------------------- */

static void sup_reload_prepare_failed(struct sup *s, const char *why)
{
	snprintf(s->view.reload_error, sizeof(s->view.reload_error), "%s", why);
	sup_reload_apply(s, pi_reload_prepare_failed(&s->reload));
}

/* Re-renders and commits the new files. Returns 0, or -1 after
 * reporting the failure. */
static int sup_reload_render(struct sup *s)
{
	struct pi_templates_error terr;
	struct pi_templates *t = NULL;
	char why[256];

	if (pi_templates_render(&s->topts, &t, &terr) < 0) {
		sup_reload_prepare_failed(s, terr.msg);
		return -1;
	}
	if (pi_templates_missing(t) && !pi_templates_missing(s->tpl)) {
		/* At start a missing folder renders nothing (SPEC §3); one that
		 * has vanished since is an operator's mistake: keep what runs.
		 * One that was never there still renders nothing, and the
		 * reload goes on (nginx is reloaded all the same). */
		snprintf(why, sizeof(why),
			 "templates folder %.150s is gone; the rendered files stay", s->topts.dir);
		pi_templates_free(t);
		sup_reload_prepare_failed(s, why);
		return -1;
	}
	/* Outputs of templates that are gone leave in the same commit. */
	pi_templates_supersede(t, s->tpl);
	if (pi_templates_commit(t, &terr) < 0) {
		pi_templates_free(t);
		sup_reload_prepare_failed(s, terr.msg);
		return -1;
	}
	s->test_tpl = t;
	return 0;
}

static void sup_reload_start(struct sup *s)
{
	int kind = s->reload.kind;
	char why[128];

	PI_LOG(
	    PI_INFO, "reloading",
	    PI_STR("reason", kind & PI_RELOAD_RERENDER ? "SIGHUP" : "upstream addresses changed"));
	if ((kind & PI_RELOAD_RERENDER) && sup_reload_render(s) < 0)
		return;
	if (!s->test_argv) {
		/* No config test: it passes at once. */
		sup_reload_apply(s, pi_reload_test_exited(&s->reload, 0));
		sup_reload_apply(s, pi_reload_pipe_closed(&s->reload));
		return;
	}
	int rc = sup_test_spawn(s);
	if (rc < 0) {
		snprintf(why, sizeof(why), "cannot run the config test: %s", strerror(-rc));
		sup_reload_prepare_failed(s, why);
	}
}

/* nginx runs the new config: its address sets are the current ones. */
static void sup_reload_taken(struct sup *s)
{
	if (s->ups)
		pi_upstreams_applied(s->ups, 1);
	/* nginx runs the files the committed templates rendered: their host
	 * variables are the ones watched now (not before: a set nginx
	 * rejected leaves it on the old hosts, and so the watch). */
	if (s->ups && s->tpl && pi_upstreams_sync(s->ups, s->tpl, 1) < 0)
		PI_LOG(PI_ERROR, "cannot update the upstream hosts: out of memory");
	s->view.reload_ok = 1;
	s->view.reload_error[0] = '\0';
	s->rejected_kind = 0;
	PI_LOG(PI_INFO, "reloaded nginx");
}

static int sup_was_worker(const struct sup *s, pid_t pid)
{
	for (size_t i = 0; i < s->nworkers; i++)
		if (s->workers[i] == pid)
			return 1;
	return 0;
}

/* The confirmation ends: nginx took the reload (ok) or kept its running
 * config (its error log says why: a name that stopped resolving between
 * the config test and nginx's own parse, say). Then the reload asked for
 * meanwhile starts (the state machine kept it pending). */
static void sup_confirm_end(struct sup *s, int ok)
{
	uv_timer_stop(&s->confirm_timer);
	if (ok) {
		sup_reload_taken(s);
	} else {
		PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config",
		       PI_STR("step", "nginx's own reload"),
		       PI_STR("reason", "no new worker process after SIGHUP; nginx's error log "
					"has the cause"),
		       PI_UINT("waited_ms", (unsigned long long)sup_confirm_ms(s)));
		snprintf(s->view.reload_error, sizeof(s->view.reload_error),
			 "nginx did not take the reload; the log has the reason");
		s->view.reload_ok = 0;
		s->rejected_kind = s->reload.kind;
		if (s->ups)
			pi_upstreams_applied(s->ups, 0);
	}
	/* Rechecks during the wait compared with the sets from before it:
	 * addresses asked for then are owed only if some set is still not
	 * the one nginx now runs with. */
	if (!pi_upstreams_stale(s->ups))
		pi_reload_drop_pending(&s->reload, PI_RELOAD_ADDRESSES);
	sup_reload_apply(s, pi_reload_confirmed(&s->reload, ok));
}

static void on_sup_confirm(uv_timer_t *t)
{
	struct sup *s = t->data;
	pid_t now[SUP_WORKERS_MAX];
	size_t n;

	if (s->child <= 0) {
		/* Not reached today: the child's end closes the machine in the
		 * same call. Closing here keeps a waiting start from holding
		 * it busy for ever if that changes. */
		sup_reload_close(s);
		return;
	}
	n = pi_proc_children(s->child, now, SUP_WORKERS_MAX);
	for (size_t i = 0; i < n && i < SUP_WORKERS_MAX; i++)
		if (!sup_was_worker(s, now[i])) {
			sup_confirm_end(s, 1);
			return;
		}
	if (uv_now(s->loop) >= s->confirm_due_ms) {
		sup_confirm_end(s, 0);
		return;
	}
	/* nginx's workers come within milliseconds; a long wait (a slow
	 * parse, or none coming) reads /proc less and less often. */
	uint64_t every = uv_timer_get_repeat(t);
	if (every < SUP_CONFIRM_POLL_MAX_MS)
		uv_timer_set_repeat(t, every * 2 < SUP_CONFIRM_POLL_MAX_MS ? every * 2
								  : SUP_CONFIRM_POLL_MAX_MS);
}

/* SIGHUP to the child. nginx answers a reload it cannot load (its own
 * parse failed where the config test's passed) by keeping its workers,
 * and one it loads by starting new ones: the reload counts as done when
 * a child of nginx's appears that was not there before the SIGHUP. A
 * child with no children of its own (not nginx, or master_process off)
 * took it with the signal. */
static void sup_reload_commit(struct sup *s)
{
	size_t n = 0;

	if (s->cmd_is_nginx && s->child > 0)
		n = pi_proc_children(s->child, s->workers, SUP_WORKERS_MAX);
	s->view.reload_time = time(NULL);
	pi_upstreams_loading(s->ups);
	sup_child_signal(s, SIGHUP);
	if (s->test_tpl) { /* the files on disk: what a later rollback keeps */
		pi_templates_settle(s->test_tpl);
		pi_templates_free(s->tpl);
		s->tpl = s->test_tpl;
		s->test_tpl = NULL;
	}
	/* The watched hosts follow in sup_reload_taken; its sync can end a
	 * recheck round (a host it removes held it) and so ask for a reload,
	 * which then finds this one taken or waits for its confirmation. */
	if (n == 0 || n > SUP_WORKERS_MAX) {
		sup_confirm_end(s, 1);
	} else {
		s->nworkers = n;
		s->confirm_due_ms = uv_now(s->loop) + sup_confirm_ms(s);
		uv_timer_start(&s->confirm_timer, on_sup_confirm, SUP_CONFIRM_POLL_MS,
			       SUP_CONFIRM_POLL_MS);
	}
}

/* What /health says is short and never quotes the test's output: nginx
 * echoes substituted values there. The log has the reason. */
static void sup_reload_reject(struct sup *s)
{
	char why[256];

	switch (s->reload.why) {
	case PI_RELOAD_TEST_FAILED:
		PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config",
		       PI_STR("step", "config test failed"),
		       PI_STR("reason", sup_test_reason(s, why, sizeof(why))));
		snprintf(s->view.reload_error, sizeof(s->view.reload_error),
			 "config test failed (status %d); the log has the reason",
			 s->reload.why_code);
		break;
	case PI_RELOAD_TIMED_OUT:
		snprintf(s->view.reload_error, sizeof(s->view.reload_error),
			 "config test did not finish within %llu ms; killed",
			 (unsigned long long)s->cfg->nginx_test_timeout_ms);
		PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config",
		       PI_STR("reason", s->view.reload_error));
		break;
	default: /* PI_RELOAD_PREPARE_FAILED: the step left its reason */
		PI_LOG(PI_ERROR, "reload rejected; nginx keeps its running config",
		       PI_STR("reason", s->view.reload_error));
		break;
	}
	s->view.reload_ok = 0;
	s->view.reload_time = time(NULL);
	s->rejected_kind = s->reload.kind;
	if (s->ups) /* the address sets stay pending: a later recheck retries */
		pi_upstreams_applied(s->ups, 0);
}

static void sup_reload_rollback(struct sup *s)
{
	struct pi_templates_error err;
	int restored = 0, failed = 0;

	if (s->test_tpl) {
		failed = pi_templates_rollback(s->test_tpl, &err) < 0;
		restored = !failed;
		pi_templates_free(s->test_tpl);
		s->test_tpl = NULL;
	}
	if (failed)
		PI_LOG(PI_ERROR, "cannot restore the previous output files",
		       PI_STR("error", err.msg));
	if (s->reload.why == PI_RELOAD_ABANDONED)
		PI_LOG(PI_WARN, "reload abandoned before its config test ended",
		       PI_STR("reason", s->state == SUP_STOPPING ? "stopping" : "the child exited"),
		       PI_STR("files", failed	  ? "not restored"
				       : restored ? "restored"
						  : "unchanged"));
	else
		sup_reload_reject(s);
}

static void sup_reload_apply(struct sup *s, int act)
{
	if (act & PI_RELOAD_DO_KILL)
		sup_test_kill(s);
	if (act & (PI_RELOAD_DO_COMMIT | PI_RELOAD_DO_ROLLBACK)) {
		uv_timer_stop(&s->test_timer);
		sup_test_pipe_drop(s);
		s->test_pgid = 0; /* a later group by that id is not ours to kill */
	}
	if (act & PI_RELOAD_DO_COMMIT)
		sup_reload_commit(s);
	if (act & PI_RELOAD_DO_ROLLBACK)
		sup_reload_rollback(s);
	if (act & PI_RELOAD_DO_START)
		sup_reload_start(s);
}

void sup_reload_request(struct sup *s, int kind)
{
	if (s->state != SUP_RUN)
		return;
	if (uv_is_active((uv_handle_t *)&s->settle_timer)) {
		/* nginx may not handle SIGHUP yet (sup.h): the reload starts
		 * once the child has run SUP_SERVED_MS (on_sup_settled),
		 * requests merged. */
		if (!s->settle_kind)
			PI_LOG(PI_INFO, "reload waits until the child has run 1 s");
		s->settle_kind |= kind;
		return;
	}
	int act = pi_reload_request(&s->reload, kind);
	if (!act)
		PI_LOG(PI_DEBUG, "reload pending: one is in flight");
	sup_reload_apply(s, act);
}

void sup_reload_moot(struct sup *s)
{
	if (s->view.reload_ok || s->rejected_kind != PI_RELOAD_ADDRESSES || s->reload.busy ||
	    s->settle_kind)
		return;
	s->rejected_kind = 0;
	s->view.reload_ok = 1;
	s->view.reload_error[0] = '\0';
	PI_LOG(PI_INFO, "upstream addresses are back to the ones nginx runs with; the rejected "
			"reload is no longer needed");
}

void sup_reload_close(struct sup *s)
{
	/* Stopping: nginx's workers are ending, no new one will confirm. */
	uv_timer_stop(&s->confirm_timer);
	sup_reload_apply(s, pi_reload_close(&s->reload));
}
