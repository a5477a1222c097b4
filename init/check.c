/* The check command (SPEC §1): the pre-flight of a CI pipeline. It prints
 * one line per template, per upstream host and the config test's verdict
 * on standard output and returns the first failure's exit code. */
#include "envsubst/templates.h"
#include "init/config.h"
#include "init/log.h"
#include "init/proc.h"
#include "init/signals.h"
#include "init/supervise.h"
#include "init/upstream.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <uv.h>

static void on_check_round(struct pi_upstreams *u, int ok, void *data)
{
	(void)u;
	*(int *)data = ok ? 1 : -1;
}

static void on_check_walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* Resolves every host once; prints a line each. Returns 0 or 4. */
static int check_hosts(struct pi_templates *t)
{
	struct pi_health_view view = {0};
	struct pi_upstreams *u = NULL;
	uv_loop_t loop;
	int done = 0, code = 0;

	int rc = pi_supervise_loop_init(&loop);
	if (rc < 0) {
		printf("host FAIL cannot start the event loop: %s\n", uv_strerror(rc));
		return 2;
	}
	if ((rc = pi_upstreams_new(&loop, &view, &done, &u)) < 0 ||
	    (rc = pi_upstreams_sync(u, t, 0)) < 0 ||
	    (rc = pi_upstreams_round(u, on_check_round)) < 0) {
		printf("host FAIL cannot resolve: %s\n", strerror(-rc));
		code = 2;
		goto out;
	}
	while (!done && uv_run(&loop, UV_RUN_ONCE))
		;
	for (size_t i = 0; i < view.n_upstreams; i++) {
		const struct pi_health_upstream *h = &view.upstreams[i];
		const struct pi_addrset *set = pi_upstreams_current(u, i);
		printf("host %s %s: ", h->var, h->host);
		if (!h->resolved) {
			printf("FAIL %s\n", h->error);
			code = 4;
			continue;
		}
		for (size_t j = 0; j < set->n; j++)
			printf("%s%s", j ? " " : "", set->a[j]);
		printf("\n");
	}
out:
	if (u)
		pi_upstreams_close(u);
	uv_walk(&loop, on_check_walk_close, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return code;
}

/* The signals that stop check: SIGTERM, SIGINT and SIGHUP, but not one
 * the launcher left ignored (nohup, a background job without job
 * control): blocked, the kernel would queue it all the same. */
static void check_stop_signals(sigset_t *set)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
	struct sigaction sa;

	sigemptyset(set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigaction(sigs[i], NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
			sigaddset(set, sigs[i]);
}

/* Waits for the config test pid: at most timeout_ms (0: no limit), and
 * only until one of the stop signals (blocked by the caller, as SIGCHLD
 * is) asks us to stop; then its process group is killed. Returns 0 with
 * *st set, -ETIMEDOUT, the stop signal's number, or another negative
 * errno when it cannot be waited for. */
static int check_wait(pid_t pid, uint64_t timeout_ms, int *st)
{
	uint64_t end = uv_hrtime() + timeout_ms * 1000000u; /* at most a week */
	sigset_t set;
	int stop = 0;
	pid_t r;

	check_stop_signals(&set);
	sigaddset(&set, SIGCHLD);
	while ((r = waitpid(pid, st, WNOHANG)) == 0) {
		struct timespec left, *until = NULL;

		if (timeout_ms) {
			uint64_t now = uv_hrtime();
			if (now >= end) {
				stop = -ETIMEDOUT;
				break;
			}
			left.tv_sec = (time_t)((end - now) / 1000000000u);
			left.tv_nsec = (long)((end - now) % 1000000000u);
			until = &left;
		}
		int sig = sigtimedwait(&set, NULL, until);
		if (sig > 0 && sig != SIGCHLD) {
			stop = sig;
			break;
		}
	}
	if (r < 0)
		return -errno;
	if (stop == 0)
		return 0;
	kill(-pid, SIGKILL);
	while (waitpid(pid, st, 0) < 0 && errno == EINTR)
		;
	return stop;
}

/* Runs the config test to completion; its output goes to our stderr. */
static int check_config(const struct pi_config *cfg, char **envp)
{
	char **argv = NULL;
	int exec_errno, st;

	if (!*cfg->nginx_test) {
		printf("config test: skipped (nginx.test is empty)\n");
		return 0;
	}
	int rc = pi_config_split(cfg->nginx_test, &argv);
	if (rc < 0) { /* pi_config_load checked it splits: only memory fails */
		printf("config test: FAIL cannot split nginx.test: %s\n", strerror(-rc));
		return 2;
	}
	fflush(stdout);
	pid_t pid = pi_proc_spawn(argv, envp, -1, -1, &exec_errno, PI_SPAWN_NO_STOPS);
	rc = pid < 0 ? (int)pid : check_wait(pid, cfg->nginx_test_timeout_ms, &st);
	if (pid < 0 || exec_errno || (rc < 0 && rc != -ETIMEDOUT)) {
		printf("config test: FAIL cannot run %s: %s\n", argv[0],
		       strerror(exec_errno ? exec_errno : pid < 0 ? (int)-pid : -rc));
		pi_config_argv_free(argv);
		return 5;
	}
	pi_config_argv_free(argv);
	if (rc == -ETIMEDOUT) {
		printf("config test: FAIL did not finish within %llu ms; killed\n",
		       (unsigned long long)cfg->nginx_test_timeout_ms);
		return 5;
	}
	if (rc > 0) {
		char name[16];

		printf("config test: FAIL stopped by SIG%s; killed\n",
		       pi_signals_name(rc, name, sizeof(name)));
		return 128 + rc;
	}
	if (pi_proc_exit_code(st) != 0) {
		printf("config test: FAIL (exit status %d)\n", pi_proc_exit_code(st));
		return 5;
	}
	printf("config test: ok\n");
	return 0;
}

int pi_supervise_check(const struct pi_config *cfg, char **envp)
{
	struct pi_templates_opts o;
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	uint64_t mask;
	int first = 0, rc;

	pi_supervise_template_opts(cfg, envp, &o);
	if ((rc = pi_templates_render(&o, &t, &err)) == 0)
		rc = pi_templates_commit(t, &err);
	if (rc < 0) {
		printf("template FAIL %s\n", err.msg);
		printf("config test: skipped (templates failed)\n");
		pi_templates_free(t);
		return pi_supervise_template_code(rc);
	}
	if (pi_templates_count(t) == 0)
		printf("template: none in %s\n", o.dir);
	for (size_t i = 0; i < pi_templates_count(t); i++)
		printf("template %s -> %s: ok\n", pi_templates_source(t, i),
		       pi_templates_output(t, i));
	fflush(stdout);
	rc = check_hosts(t);
	first = rc;
	/* Blocked from before the config test's fork until its files are put
	 * back and everything is said: a stop signal then ends the wait
	 * (check_wait), never the process half-way. One still pending at the
	 * end takes its course after that. The test starts with nothing
	 * blocked (pi_proc_spawn). */
	int blocked = (rc = pi_signals_thread_block(&mask)) == 0;
	if (!blocked) {
		printf("config test: FAIL cannot block signals: %s\n", strerror(-rc));
		rc = 5;
	} else {
		rc = check_config(cfg, envp);
	}
	if (rc != 0 && pi_templates_rollback(t, &err) < 0)
		printf("template FAIL %s\n", err.msg);
	if (!first || rc > 128) /* asked to stop: that is the answer */
		first = rc;
	pi_templates_free(t);
	fflush(stdout);
	if (blocked)
		pi_signals_thread_restore(mask);
	return first;
}
