/* The check command (SPEC §1): the pre-flight of a CI pipeline. It prints
 * one line per template, per upstream host and the config test's verdict
 * on standard output and returns the first failure's exit code. */
#include "envsubst/templates.h"
#include "init/config.h"
#include "init/log.h"
#include "init/proc.h"
#include "init/supervise.h"
#include "init/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
	int err = pid < 0 ? (int)-pid : 0;
	rc = -1;
	if (pid > 0)
		while ((rc = (int)waitpid(pid, &st, 0)) < 0 && errno == EINTR)
			;
	if (rc < 0 && !err)
		err = errno; /* saved before anything else can change it */
	if (pid < 0 || rc < 0 || exec_errno) {
		printf("config test: FAIL cannot run %s: %s\n", argv[0],
		       strerror(exec_errno ? exec_errno : err));
		pi_config_argv_free(argv);
		return 5;
	}
	pi_config_argv_free(argv);
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
	rc = check_config(cfg, envp);
	if (rc != 0 && pi_templates_rollback(t) < 0)
		printf("template FAIL cannot restore the previous output files\n");
	if (!first)
		first = rc;
	pi_templates_free(t);
	fflush(stdout);
	return first;
}
