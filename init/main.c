/* peerprep-init: the command line (SPEC §1). */
#include "envsubst/templates.h"
#include "health/probe.h"
#include "init/config.h"
#include "init/log.h"
#include "init/supervise.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void help(void)
{
	fputs("peerprep-init " PI_VERSION ": PID 1 of the PeerPrep frontend image.\n"
	      "Renders nginx templates safely, waits for upstream hosts, starts and\n"
	      "supervises nginx, keeps its upstream addresses fresh, serves /health.\n\n" USAGE
	      "\nconfiguration keys (INI [section] key; environment PEERPREP_INIT_<SECTION>_<KEY>):\n",
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
	int code = 0;

	pi_supervise_template_opts(cfg, envp, &o);
	if (pi_templates_render(&o, &t, &err) < 0) {
		PI_LOG(PI_ERROR, err.msg);
		return 3;
	}
	if (pi_templates_count(t) == 0)
		PI_LOG(PI_INFO, "no templates to render", PI_STR("dir", o.dir));
	if (to_stdout) {
		if (pi_templates_print(t, stdout) < 0 || fflush(stdout) != 0) {
			PI_LOG(PI_ERROR, "cannot write to standard output",
			       PI_STR("error", strerror(errno)));
			code = 3;
		}
	} else if (pi_templates_commit(t, &err) < 0) {
		PI_LOG(PI_ERROR, err.msg);
		code = 3;
	} else {
		for (size_t i = 0; i < pi_templates_count(t); i++)
			PI_LOG(PI_INFO, "rendered", PI_STR("template", pi_templates_source(t, i)),
			       PI_STR("output", pi_templates_output(t, i)));
	}
	pi_templates_free(t);
	return code;
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
	char *rest[64];
	int nrest = 1, to_stdout = 0, i = 1, code;

	if (argc > 1 && argv[1][0] != '-') {
		sub = argv[1];
		i = 2;
		if (!is_command(sub))
			return usage_error("unknown command", sub);
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
				return usage_error("a file must follow", a);
			file = argv[i];
		} else if (strcmp(sub, "run") == 0 && strcmp(a, "--") == 0) {
			if (i + 1 >= argc)
				return usage_error("a command must follow", a);
			cmd = argv + i + 1;
			break;
		} else if (strcmp(sub, "render") == 0 && strcmp(a, "--stdout") == 0) {
			to_stdout = 1;
		} else if (strcmp(sub, "run") == 0 && is_command(a)) {
			sub = a; /* `-c FILE render`, as git takes `-C DIR log` */
		} else if (strcmp(sub, "health") == 0 && nrest < 62) {
			rest[nrest++] = argv[i]; /* --url, --timeout: the probe parses them */
		} else {
			return usage_error("unexpected argument", a);
		}
	}
	rest[0] = "health";
	rest[nrest] = NULL;

	code = pi_config_load(&cfg, file, envp, &err);
	if (strcmp(sub, "health") == 0) {
		/* A health check answers 0 or 1, whatever went wrong. */
		char url[512];
		if (code < 0) {
			fprintf(stderr, "%s\n", err.msg);
			pi_config_free(&cfg);
			return 1;
		}
		if (pi_health_url(cfg.health_listen, cfg.health_path, url, sizeof(url)) < 0)
			url[0] = '\0';
		pi_config_free(&cfg);
		return pi_health_probe_main(nrest, rest, url);
	}
	if (code < 0) {
		PI_LOG(PI_ERROR, err.msg);
		pi_config_free(&cfg);
		return 2;
	}
	pi_log_setup(cfg.log_level, cfg.log_format);

	if (strcmp(sub, "render") == 0)
		code = render(&cfg, envp, to_stdout);
	else if (strcmp(sub, "check") == 0)
		code = pi_supervise_check(&cfg, envp);
	else
		code = pi_supervise_run(&cfg, cmd, envp);
	pi_config_free(&cfg);
	return code;
}
