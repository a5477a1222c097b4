/* peerprep-init: the command line (SPEC §1). */
#include "envsubst/templates.h"
#include "health/probe.h"
#include "init/config.h"
#include "init/entrypointd.h"
#include "init/health_log.h"
#include "init/log.h"
#include "init/signals.h"
#include "init/supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define USAGE                                                                                      \
	"usage:\n"                                                                                 \
	"  peerprep-init [-c FILE] [-- COMMAND [ARG...]]   run: the container's main process\n"    \
	"  peerprep-init render [-c FILE] [--stdout]       render templates, then exit\n"          \
	"  peerprep-init check  [-c FILE]                  render + resolve once + config test\n"  \
	"  peerprep-init health [-c FILE] [--url URL] [--timeout SECONDS]   probe /health\n"       \
	"  peerprep-init --version | --help\n"

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "peerprep-init: %s '%s'\n" USAGE, what, arg);
	return 2;
}

/* A usage error in a command line whose command is `health` (options
 * before the word included) is a failed health check: one line, exit 1,
 * never 2, which Docker reserves. */
static int usage_error_at(int argc, char **argv, const char *what, const char *arg)
{
	for (int j = 1; j < argc && strcmp(argv[j], "--") != 0; j++)
		if (strcmp(argv[j], "health") == 0 &&
		    (j == 1 || (strcmp(argv[j - 1], "-c") != 0 && strcmp(argv[j - 1], "--config") != 0))) {
			fprintf(stderr, "peerprep-init: %s '%s'\n", what, arg);
			return 1;
		}
	return usage_error(what, arg);
}

static void help(void)
{
	fputs("peerprep-init " PI_VERSION ": PID 1 of the PeerPrep frontend image.\n"
	      "Renders nginx templates safely, waits for upstream hosts, starts and\n"
	      "supervises nginx, keeps its upstream addresses fresh, serves /health.\n\n" USAGE
	      "\nconfiguration keys (INI [section] key; environment "
	      "PEERPREP_INIT_<SECTION>_<KEY>):\n",
	      stdout);
	pi_config_help(stdout);
	fputs("\nexit codes: the child's code (128+N for signal N), 2 usage or configuration,\n"
	      "3 template, 4 upstream hosts did not resolve, 5 config test failed,\n"
	      "126/127 command not executable/not found.\n",
	      stdout);
}

static int render(const struct pi_config *cfg, char **envp, int to_stdout)
{
	struct pi_templates_opts o;
	struct pi_templates_error err;
	struct pi_templates *t = NULL;
	int rc;

	pi_supervise_template_opts(cfg, envp, &o);
	if ((rc = pi_templates_render(&o, &t, &err)) == 0)
		rc = to_stdout ? pi_templates_print(t, stdout, &err) : pi_templates_commit(t, &err);
	if (rc < 0)
		PI_LOG(PI_ERROR, err.msg);
	else if (!to_stdout)
		pi_supervise_log_rendered(t, o.dir);
	else if (pi_templates_count(t) == 0)
		PI_LOG(PI_INFO, "no templates to render", PI_STR("dir", o.dir));
	pi_templates_free(t);
	return rc < 0 ? pi_supervise_template_code(rc) : 0;
}

/* A closed 0, 1 or 2 would be taken by the next descriptor opened (the
 * event loop's, a socket), and logs or a child's output would go there. */
static int open_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int got = open("/dev/null", O_RDWR);
		if (got != fd) {
			if (got >= 0)
				close(got);
			return -1;
		}
	}
	return 0;
}

/* `health [ARG...]` (argv[0] is "health"): a health check answers 0 or 1
 * with at most one line, whatever went wrong, usage errors included. file
 * is a -c given before the word health, or NULL. */
static int health_command(int argc, char **argv, const char *file, char **envp)
{
	struct pi_config cfg;
	struct pi_config_error err;
	char url[512];

	pi_signals_restore(); /* a tool, not PID 1: a signal ends it */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			help();
			return 0;
		}
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		    i + 1 < argc)
			file = argv[++i];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
	}
	if (pi_config_load(&cfg, file, envp, &err) < 0) {
		PI_LOG(PI_ERROR, err.msg);
		pi_config_free(&cfg);
		return 1;
	}
	pi_log_setup(cfg.log_level, cfg.log_format);
	if (pi_health_url(cfg.health_listen, cfg.health_path, url, sizeof(url)) < 0)
		url[0] = '\0';
	pi_config_free(&cfg);
	return pi_health_probe_main(argc, argv, url, pi_init_health_log, NULL);
}

static int is_command(const char *s)
{
	return !strcmp(s, "render") || !strcmp(s, "check") || !strcmp(s, "health");
}

int main(int argc, char **argv, char **envp)
{
	struct pi_config cfg;
	struct pi_config_error err;
	const char *file = NULL, *sub = "run";
	char **cmd = NULL;
	int to_stdout = 0, i = 1, code;

	/* Before anything else: a signal sent from now on waits for the
	 * loop's signalfd instead of killing a half-started PID 1 or being
	 * lost (SPEC §5). */
	if ((code = pi_signals_block_all()) < 0) {
		fprintf(stderr, "peerprep-init: cannot block signals: %s\n", strerror(-code));
		return 2;
	}
	if (open_std_fds() < 0)
		return 2; /* nowhere to say it */

	if (argc > 1 && argv[1][0] != '-') {
		sub = argv[1];
		i = 2;
		if (!is_command(sub))
			return usage_error("unknown command", sub);
		if (strcmp(sub, "health") == 0)
			return health_command(argc - 1, argv + 1, NULL, envp);
	}
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			help();
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("peerprep-init %s\n", PI_VERSION);
			return 0;
		} else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
			if (++i >= argc)
				return usage_error_at(argc, argv, "a file must follow", a);
			file = argv[i];
		} else if (strncmp(a, "--config=", 9) == 0) {
			file = a + 9;
		} else if (strcmp(sub, "run") == 0 && strcmp(a, "--") == 0) {
			if (i + 1 >= argc)
				return usage_error("a command must follow", a);
			cmd = argv + i + 1;
			break;
		} else if (strcmp(sub, "render") == 0 && strcmp(a, "--stdout") == 0) {
			to_stdout = 1;
		} else if (strcmp(sub, "run") == 0 && strcmp(a, "health") == 0) {
			return health_command(argc - i, argv + i, file, envp);
		} else if (strcmp(sub, "run") == 0 && is_command(a)) {
			sub = a; /* `-c FILE render`, as git takes `-C DIR log` */
		} else {
			return usage_error_at(argc, argv, "unexpected argument", a);
		}
	}
	if (strcmp(sub, "run") != 0)
		pi_signals_restore(); /* a tool, not PID 1: Ctrl-C ends it */

	code = pi_config_load(&cfg, file, envp, &err);
	if (code < 0) {
		PI_LOG(PI_ERROR, err.msg);
		pi_config_free(&cfg);
		return 2;
	}
	pi_log_setup(cfg.log_level, cfg.log_format);
	pi_entrypointd_warn_filter(envp);
	if (strcmp(sub, "render") != 0)
		pi_entrypointd_warn(envp);

	if (strcmp(sub, "render") == 0)
		code = render(&cfg, envp, to_stdout);
	else if (strcmp(sub, "check") == 0)
		code = pi_supervise_check(&cfg, envp);
	else
		code = pi_supervise_run(&cfg, cmd, envp);
	pi_config_free(&cfg);
	return code;
}
