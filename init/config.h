/* Configuration (SPEC §2): built-in defaults, then the INI file, then the
 * environment, then the command line. Every key lives in one table in
 * config.c that parsing, the environment overrides and --help all read. */
#ifndef PI_CONFIG_H
#define PI_CONFIG_H

#include <stdint.h>
#include <stdio.h>

struct pi_config {
	char *templates_dir;
	char *templates_suffix;
	char *templates_output_dir;
	char *templates_stream_suffix;
	char *templates_stream_output_dir;
	char *templates_prefix;
	char *upstreams_hosts; /* space-separated fnmatch patterns */
	uint64_t upstreams_wait_ms;
	uint64_t upstreams_recheck_ms; /* 0: off */
	char *nginx_command;
	char *nginx_test;		/* "" skips the config test */
	uint64_t nginx_test_timeout_ms; /* the config test is killed after this; 0: never */
	int nginx_stop_signal;
	uint64_t nginx_stop_delay_ms;
	uint64_t nginx_stop_timeout_ms;
	char *health_listen; /* "" turns the endpoint off */
	char *health_path;
	char *health_probe; /* "" skips the probe */
	int log_format;	    /* enum pi_log_format */
	int log_level;	    /* enum pi_log_level */
	char *file;	    /* the INI file read, or NULL */
};

/* Why loading failed: "FILE:LINE: key: reason" or "VARIABLE: reason". */
struct pi_config_error {
	char msg[512];
};

/* Fills *cfg with the defaults. Strings are heap copies owned by cfg. */
void pi_config_defaults(struct pi_config *cfg);

/* Loads defaults, then the file (explicit path, else $PEERPREP_INIT_CONFIG,
 * else /etc/peerprep-init.ini when it exists), then the environment.
 * `explicit_file` may be NULL. Returns 0 or a negative errno with err set;
 * cfg must be released with pi_config_free either way. */
int pi_config_load(struct pi_config *cfg, const char *explicit_file, char *const *envp,
		   struct pi_config_error *err);

void pi_config_free(struct pi_config *cfg);

/* Parses a duration ("1.5", "250ms", "2s", "1m") into milliseconds.
 * Returns 0 or -EINVAL. */
int pi_config_duration(const char *s, uint64_t *ms);

/* Parses "QUIT", "SIGQUIT" or a number; returns the signal or -EINVAL. */
int pi_config_signal(const char *s);

/* The name without "SIG" of the signals the init deals with, else "?". */
const char *pi_config_signal_name(int sig);

/* Prints one line per key (name, default, environment name, meaning). */
void pi_config_help(FILE *out);

/* Splits a command line as a shell splits words: blanks separate, single
 * and double quotes group, backslash escapes outside single quotes; no
 * expansion. Returns a NULL-terminated heap array (free with
 * pi_config_argv_free) in *argv, or -EINVAL for an unterminated quote and
 * -ENOENT for an empty command. */
int pi_config_split(const char *s, char ***argv);
void pi_config_argv_free(char **argv);

/* The value of name in envp ("NAME=VALUE" entries; the first match wins,
 * as getenv does), or NULL. Points into envp. */
const char *pi_config_env_get(char *const *envp, const char *name);

#endif
